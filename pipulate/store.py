"""Pipeline state: named jobs of named steps, one SQLite row per step.

Setting a step writes that step's row (and touches its job's times) in one
short transaction, whatever the size of the job. Values small enough live in
the row (JSON as readable text); larger ones live in the blob store beside the
database and the row names their hash.
"""
from __future__ import annotations

import datetime as dt
import os
from typing import Any

from . import codecs
from .blobs import content_hash, open_blobs
from .db import open_database
from .errors import IntegrityError, StoreUnavailableError
from .home import resolve_home
from .settings import Settings
from .signing import Signer

MAX_NAME_LENGTH = 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job      TEXT PRIMARY KEY,
    app      TEXT,
    created  TEXT NOT NULL,
    updated  TEXT NOT NULL,
    next_ord INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS steps (
    job     TEXT NOT NULL REFERENCES jobs(job) ON DELETE CASCADE,
    step    TEXT NOT NULL,
    ord     INTEGER NOT NULL,
    format  TEXT NOT NULL,
    value,
    blob    TEXT,
    checksum TEXT,
    size    INTEGER NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (job, step)
);
CREATE INDEX IF NOT EXISTS steps_by_order ON steps(job, ord);
CREATE INDEX IF NOT EXISTS steps_by_blob ON steps(blob) WHERE blob IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs(created);
"""


def now() -> str:
    """A UTC timestamp, ISO 8601 with microseconds: sorts as text."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def check_name(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{kind} must be at most {MAX_NAME_LENGTH} characters, got {len(value)}")
    if "\x00" in value:
        raise ValueError(f"{kind} must not contain NUL characters")
    return value


class Pipulate:
    """The state engine. ``pip`` is one of these on the default home.

    Args:
        home: the data folder (default: see ``pipulate.home``).
        settings: the engine's settings (default: ``Settings.from_env()``); its
            ``inline_limit``, ``busy_timeout_ms`` and ``compress`` apply here.
    """

    def __init__(self, home: str | os.PathLike | None = None, *, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.home = resolve_home(home if home is not None else self.settings.home)
        self.inline_limit = self.settings.inline_limit
        self.db = open_database(self.home, self.settings)
        self.db.add_schema(SCHEMA)
        self.blobs = open_blobs(self.home, self.settings)
        self._signer: Signer | None = None

    def __repr__(self) -> str:
        return f"Pipulate(home={str(self.home)!r})"

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = Signer(self.db.signing_key(self.home))
        return self._signer

    # --- writing ---------------------------------------------------------------

    def set(self, job: str, step: str, value: Any, *, app: str | None = None) -> None:
        """Store ``value`` as ``step`` of ``job``; durable when this returns."""
        check_name("job", job)
        check_name("step", step)
        self.set_many(job, {step: value}, app=app)

    def set_many(self, job: str, values: dict[str, Any], *, app: str | None = None) -> None:
        """Store several steps of ``job`` in one transaction (one commit, one fsync);
        durable when this returns. ``pip.map`` lands results that finish together this way."""
        check_name("job", job)
        if not isinstance(values, dict):
            raise ValueError(f"values must be a dict of step -> value, got {type(values).__name__}")
        rows = [self._encode_step(job, step, value) for step, value in values.items()]
        stamp = now()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO jobs (job, app, created, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (job) DO UPDATE SET updated = excluded.updated, "
                "app = coalesce(excluded.app, jobs.app)",
                (job, app, stamp, stamp))
            for step, fmt, stored, blob, checksum, size in rows:
                row = conn.execute("SELECT ord FROM steps WHERE job = ? AND step = ?", (job, step)).fetchone()
                if row is None:
                    (ord_,) = conn.execute(
                        "UPDATE jobs SET next_ord = next_ord + 1 WHERE job = ? RETURNING next_ord - 1",
                        (job,)).fetchone()
                    conn.execute(
                        "INSERT INTO steps (job, step, ord, format, value, blob, checksum, size, created, updated) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (job, step, ord_, fmt, stored, blob, checksum, size, stamp, stamp))
                else:
                    conn.execute(
                        "UPDATE steps SET format = ?, value = ?, blob = ?, checksum = ?, size = ?, updated = ? "
                        "WHERE job = ? AND step = ?",
                        (fmt, stored, blob, checksum, size, stamp, job, step))

    def _encode_step(self, job: str, step: str, value: Any) -> tuple:
        check_name("step", step)
        encoded = codecs.encode(value, self.signer)
        blob = None
        text = encoded.is_text and self.db.text_values
        stored: Any = encoded.data.decode("utf-8") if text else encoded.data
        checksum = content_hash(encoded.data)  # blobs check their own; rows need one
        if len(encoded.data) > self.inline_limit:
            # The blob is on disk (fsynced) before the row that names it commits.
            try:
                blob, stored = self.blobs.put(encoded.data), None
            except OSError as exc:
                raise StoreUnavailableError(
                    f"job {job!r} step {step!r}: cannot write its value to {self.blobs.root}: {exc}") from exc
        return step, encoded.format, stored, blob, checksum, len(encoded.data)

    def clear(self, job: str, from_step: str | None = None) -> list[str]:
        """Drop ``from_step`` and every later step (all steps if None); returns their names.

        The job itself stays, so a workflow can start over under the same key.
        """
        check_name("job", job)
        if from_step is not None:
            check_name("step", from_step)
        with self.db.write() as conn:
            if from_step is None:
                start = 0
            else:
                row = conn.execute("SELECT ord FROM steps WHERE job = ? AND step = ?",
                                   (job, from_step)).fetchone()
                if row is None:
                    raise ValueError(f"job {job!r} has no step {from_step!r}")
                start = row[0]
            dropped = conn.execute(
                "DELETE FROM steps WHERE job = ? AND ord >= ? RETURNING step, ord, blob",
                (job, start)).fetchall()
            conn.execute("UPDATE jobs SET updated = ? WHERE job = ?", (now(), job))
        if any(blob for _, _, blob in dropped):
            self.collect_garbage()
        return [step for step, _, _ in sorted(dropped, key=lambda r: r[1])]

    def delete(self, job: str) -> bool:
        """Forget ``job`` and all its steps; False if there was no such job."""
        check_name("job", job)
        with self.db.write() as conn:
            had_blobs = conn.execute(
                "SELECT 1 FROM steps WHERE job = ? AND blob IS NOT NULL LIMIT 1", (job,)).fetchone()
            conn.execute("DELETE FROM steps WHERE job = ?", (job,))
            existed = conn.execute("DELETE FROM jobs WHERE job = ? RETURNING job", (job,)).fetchone()
        if had_blobs:
            self.collect_garbage()
        return existed is not None

    def collect_garbage(self, grace_seconds: float = 3600.0) -> int:
        """Delete blob files no table references any more (older than the grace period)."""
        return self.blobs.collect(self.db.referenced_blobs(), grace_seconds)

    # --- reading -------------------------------------------------------------------

    def get(self, job: str, step: str, default: Any = None) -> Any:
        """The value of ``step`` in ``job``, or ``default`` when it was never set."""
        check_name("job", job)
        check_name("step", step)
        rows = self.db.rows(
            "SELECT format, value, blob, checksum FROM steps WHERE job = ? AND step = ?", (job, step))
        if not rows:
            return default
        return self._decode(job, step, *rows[0])

    def read(self, job: str) -> dict[str, Any]:
        """Every step of ``job`` as ``{step: value}``, in the order steps were first set."""
        check_name("job", job)
        rows = self.db.rows(
            "SELECT step, format, value, blob, checksum FROM steps WHERE job = ? ORDER BY ord", (job,))
        return {row[0]: self._decode(job, *row) for row in rows}

    def step_names(self, job: str, prefix: str = "") -> list[str]:
        """The names of ``job``'s steps that start with ``prefix``, in step order; no value is read."""
        check_name("job", job)
        rows = self.db.rows("SELECT step FROM steps WHERE job = ? AND substr(step, 1, ?) = ? ORDER BY ord",
                            (job, len(prefix), prefix))
        return [r[0] for r in rows]

    def jobs(self) -> list[str]:
        """Job names, newest (most recently created) first."""
        return [r[0] for r in self.db.rows("SELECT job FROM jobs ORDER BY created DESC, rowid DESC")]

    def info(self, job: str) -> dict | None:
        """A job's app, times and step metadata (no values), or None if unknown."""
        check_name("job", job)
        found = self.db.query("SELECT job, app, created, updated FROM jobs WHERE job = ?", (job,))
        if not found:
            return None
        info = found[0]
        info["steps"] = self.db.query(
            "SELECT step, ord, format, size, blob IS NOT NULL AS in_blob, created, updated "
            "FROM steps WHERE job = ? ORDER BY ord", (job,))
        return info

    def _decode(self, job: str, step: str, fmt: str, value: Any, blob: str | None,
                checksum: str | None) -> Any:
        what = f"job {job!r} step {step!r}"
        try:
            if blob is not None:
                data = self.blobs.get_view(blob)
            elif isinstance(value, str):
                data = value.encode("utf-8")
            else:
                data = value
            if data is None:
                raise IntegrityError("the stored value is missing")
            if checksum is not None and content_hash(data) != checksum:
                raise IntegrityError("the stored value is damaged (it does not match its checksum)")
            return codecs.decode(fmt, data, self.signer, what)
        except IntegrityError as exc:
            if str(exc).startswith(what):
                raise
            raise type(exc)(f"{what}: {exc}") from None
        except Exception as exc:
            raise IntegrityError(f"{what}: the stored value cannot be decoded ({exc!r})") from exc

    # --- the list pattern (modules of their own; imported when first used) -----------------

    def map(self, job: str, items, func, workers: int = 8, executor=None, **options):
        """Run ``func(item) -> dict`` on each item, each result a step; see ``pipulate.mapping``."""
        from .mapping import run_map

        return run_map(self, job, items, func, workers=workers, executor=executor, **options)

    def scrape(self, url: str, refresh: bool = False, **options) -> dict:
        """Render ``url`` in headless Chromium; fields and file paths, cached; see ``pipulate.scrape``."""
        from .scrape import scrape

        return scrape(url, refresh=refresh, home=self.home, **options)

    def to_excel(self, job_or_frame, path, **options):
        """A styled workbook of a job's results or a DataFrame; see ``pipulate.excel``."""
        from .excel import to_excel

        return to_excel(job_or_frame, path, store=self, **options)

    def close(self) -> None:
        self.db.close()
