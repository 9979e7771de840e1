"""KernelStateStore: the saved versions of every notebook's variables.

This is the API the web app, the CLI and the extension share. It reads and
writes the same ``data/pipulate.db`` and ``data/blobs`` as ``pip``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import xxhash

from .. import blobs as blob_files
from .. import codecs
from ..blobs import open_blobs
from ..db import fits_an_integer_column
from ..settings import Settings
from ..store import Pipulate, now
from .ids import validate_notebook_id
from .frames import FRAME
from .schema import ensure_schema

GC_INTERVAL_SECONDS = 300.0


@dataclass
class Entry:
    """One variable of a version: where its value is and what it is."""

    name: str
    type: str
    format: str  # json, json+t, npy, arrow, arrow-series, pickle, module
    size: int  # bytes of the encoded value (before compression)
    content_hash: str  # xxh3_128 of the value's content, used to see what changed
    blob: str | None = None
    value: object = None  # inline JSON text, or a module's name
    alias_of: str | None = None  # the variable holding the very same object
    # A DataFrame's column blobs, in order (frames.FRAME); a pickle's out-of-band buffers (``buffers``).
    parts: list[str] | None = None


@dataclass
class Manifest:
    notebook: str
    version: int
    saved_at: str
    entries: list[Entry]
    skipped: list[dict] = field(default_factory=list)

    def by_name(self) -> dict[str, Entry]:
        return {e.name: e for e in self.entries}


def comes_back(rows, skipped: list[dict]) -> list[dict]:
    """How each variable of a version comes back at a restore: ``stored`` (in its format),
    ``rebuilt`` (by running its cells again: ``%state rebuild``) or ``lost`` (and why)."""
    out = [{"name": name, "how": "stored", "detail": fmt} for name, _, _, fmt in rows]
    for item in skipped:
        if not isinstance(item, dict) or "name" not in item:
            continue
        if "rebuild" in item:
            cells = ", ".join(c.get("label", "?") for c in item["rebuild"].get("cells", []))
            out.append({"name": item["name"], "how": "rebuilt", "detail": f"cells {cells}: {item.get('reason', '')}"})
        else:
            why = item.get("reason", "")
            if "rebuild_refused" in item:
                why += f"; not rebuilt: {item['rebuild_refused']}"
            out.append({"name": item["name"], "how": "lost", "detail": why})
    return sorted(out, key=lambda v: v["name"])


def _loads_skipped(text) -> list:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):  # a damaged row: the skipped list is unknown, not a 500
        return []
    return value if isinstance(value, list) else []


def blobs_of(entries: list[Entry], min_size: int = 0) -> list[str]:
    """The blobs (a frame's columns included) of the stored entries of ``min_size`` bytes or
    more, once each, in the entries' order (the order a restore reads them in)."""
    return list(dict.fromkeys(b for e in entries if e.alias_of is None and e.size >= min_size
                              for b in [e.blob, *(e.parts or [])] if b is not None))


def manifest_checksum(entries: list[Entry]) -> str:
    """A version's fingerprint: changes when any variable's name or content does."""
    h = xxhash.xxh3_128()
    for e in sorted(entries, key=lambda e: e.name):
        h.update(f"{e.name}\0{e.format}\0{e.content_hash}\0{e.alias_of or ''}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


# The columns of a kernel_variables row that make an entry, in order.
_ENTRY_COLUMNS = "name, type, format, size, content_hash, blob, value, alias_of"
# The rows of one version: those whose range of versions holds it.
_AT_VERSION = "notebook = ?1 AND version <= ?2 AND (until IS NULL OR until > ?2)"


def _row_key(e: Entry) -> tuple:
    """What a kernel_variables row (with its frame columns) stores of an entry: a new
    row is written when this changes. An alias's columns are its primary's."""
    parts = tuple(e.parts) if e.parts and e.alias_of is None else None
    return (e.type, e.format, e.size, e.content_hash, e.blob, e.value, e.alias_of, parts)


@dataclass
class _Live:
    """The open rows of a notebook as this store committed them: {name: (version, key)}."""

    version: int
    created: str  # kernel_notebooks.created: a notebook cleared and made again is another
    rows: dict[str, tuple[int, tuple]]


def _skipped_list(stored) -> list[dict]:
    """A version's list of skipped variables; a damaged one is reported, not fatal to the restore."""
    try:
        skipped = json.loads(stored)
        if isinstance(skipped, list) and all(isinstance(s, dict) and {"name", "reason"} <= set(s)
                                             for s in skipped):
            return skipped
    except (TypeError, ValueError):
        pass
    return [{"name": "(list of skipped variables)",
             "reason": "damaged in pipulate.db; the variables themselves were checked one by one"}]


class KernelStateStore:
    """Saved kernel state of every notebook of one workstation.

    Args:
        home: the data folder; resolved like ``Pipulate`` (``pipulate.home``).
        settings: ``keep_versions``, ``compress``, ``max_variable_bytes``,
            ``inline_limit`` come from here (default: ``Settings.from_env()``).
    """

    def __init__(self, home=None, *, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.engine = Pipulate(home if home is not None else self.settings.home, settings=self.settings)
        self.home = self.engine.home
        self.db = self.engine.db
        self.db.add_schema(ensure_schema)
        self.blobs = open_blobs(self.home, self.settings)
        self._last_gc = 0.0
        # Per notebook, the open rows of the last version this store committed: the next
        # commit compares against them instead of reading them back, while that version
        # is still the notebook's latest.
        self._live: dict[str, _Live] = {}

    def __repr__(self) -> str:
        return f"KernelStateStore(home={str(self.home)!r})"

    @property
    def signer(self):
        return self.engine.signer

    def close(self) -> None:
        self.engine.close()

    # --- writing -------------------------------------------------------------

    def commit_version(self, notebook: str, name: str, entries: list[Entry],
                       skipped: list[dict]) -> Manifest:
        """Record a version whose blobs are already on disk, in one transaction.

        ``entries`` is the whole new version; only the variables that are new or
        changed since the latest version get a row, and the rows of those changed or
        deleted are closed (``schema``).
        """
        validate_notebook_id(notebook)
        stamp = now()
        size = sum(e.size for e in entries if e.alias_of is None)
        checksum = manifest_checksum(entries)
        keep = max(1, int(self.settings.keep_versions))
        wanted = {e.name: (_row_key(e), e) for e in entries}
        if len(wanted) != len(entries):
            raise ValueError(f"notebook {notebook!r}: two entries of one version have the same name")
        with self.db.write() as conn:
            # The version is the notebook's next (a new notebook starts at 1).
            version, selected, created = conn.execute(
                "INSERT INTO kernel_notebooks (id, name, created, updated, next_version) VALUES (?, ?, ?, ?, 2) "
                f"ON CONFLICT ({self.db.key('id')}) DO UPDATE SET updated = excluded.updated, name = excluded.name, "
                "next_version = kernel_notebooks.next_version + 1 RETURNING next_version - 1, restore_version, created",
                (notebook, name, stamp, stamp)).fetchone()
            # What the latest version holds: as this store committed it, unless another
            # process (or store) committed since.
            live = self._live.pop(notebook, None)
            if live is None or live.version != version - 1 or live.created != created:
                live = _Live(version - 1, created, self._open_rows(conn, notebook))
            rows = live.rows
            conn.execute(
                "INSERT INTO kernel_versions (notebook, version, saved_at, variable_count, size_bytes, "
                "checksum, skipped) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (notebook, version, stamp, len(entries), size, checksum, json.dumps(skipped)))
            closed = [(version, notebook, since, n) for n, (since, key) in rows.items()
                      if n not in wanted or wanted[n][0] != key]
            if closed:
                conn.executemany("UPDATE kernel_variables SET until = ? WHERE notebook = ? AND version = ? "
                                 "AND name = ?", closed)
                for _, _, _, n in closed:
                    del rows[n]
            new = [e for n, (key, e) in wanted.items() if n not in rows]
            if new:
                conn.executemany(
                    "INSERT INTO kernel_variables (notebook, version, name, type, format, size, "
                    "content_hash, blob, value, alias_of, until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    [(notebook, version, e.name, e.type, e.format, e.size, e.content_hash, e.blob,
                      e.value, e.alias_of) for e in new])
                columns = [(notebook, version, e.name, i, blob) for e in new
                           if e.parts and e.alias_of is None for i, blob in enumerate(e.parts)]
                if columns:
                    conn.executemany(
                        "INSERT INTO kernel_frame_columns (notebook, version, name, position, blob) "
                        "VALUES (?, ?, ?, ?, ?)", columns)
                for e in new:
                    rows[e.name] = (version, wanted[e.name][0])
            dropped = self._apply_retention(conn, notebook, keep, selected)
        live.version = version
        self._live[notebook] = live
        if dropped:
            self.maybe_collect_garbage()
        return Manifest(notebook, version, stamp, entries, skipped)

    @staticmethod
    def _open_rows(conn, notebook: str) -> dict[str, tuple[int, tuple]]:
        """The notebook's open rows (its latest version), read from the database."""
        parts: dict[str, list[str]] = {}
        for n, blob in conn.execute(
                "SELECT c.name, c.blob FROM kernel_variables v JOIN kernel_frame_columns c "
                "ON c.notebook = v.notebook AND c.version = v.version AND c.name = v.name "
                "WHERE v.notebook = ? AND v.until IS NULL ORDER BY c.name, c.position", (notebook,)):
            parts.setdefault(n, []).append(blob)
        rows = {}
        for version, *fields in conn.execute(
                f"SELECT version, {_ENTRY_COLUMNS} FROM kernel_variables WHERE notebook = ? AND until IS NULL",
                (notebook,)):
            e = Entry(*fields, parts=parts.get(fields[0]))
            rows[e.name] = (version, _row_key(e))
        return rows

    def _apply_retention(self, conn, notebook: str, keep: int, selected: int | None) -> int:
        """Drop versions older than the newest ``keep`` (a version selected for restore stays),
        and the rows no version left needs."""
        dropped = [v for (v,) in conn.execute(
            "DELETE FROM kernel_versions WHERE notebook = ?1 AND version < (SELECT version FROM kernel_versions "
            "WHERE notebook = ?1 ORDER BY version DESC LIMIT 1 OFFSET ?2) AND version IS DISTINCT FROM ?3 RETURNING version",
            (notebook, keep - 1, selected))]
        if not dropped:
            return 0
        # A row was needed by some version before; it is needed no more if every version
        # of its range is gone. Only rows whose range meets the dropped versions can be
        # such (open rows hold the latest version, which is always kept).
        gone = conn.execute(
            "DELETE FROM kernel_variables WHERE notebook = ?1 AND until IS NOT NULL AND until > ?2 "
            "AND version <= ?3 AND NOT EXISTS (SELECT 1 FROM kernel_versions k WHERE k.notebook = ?1 "
            "AND k.version >= kernel_variables.version AND k.version < kernel_variables.until) "
            "RETURNING version, name, format", (notebook, min(dropped), max(dropped))).fetchall()
        # A frame's columns, and a pickle's out-of-band buffers (``buffers``), go with their row.
        frames = [(notebook, v, n) for v, n, fmt in gone if fmt in (FRAME, codecs.PICKLE)]
        if frames:
            conn.executemany("DELETE FROM kernel_frame_columns WHERE notebook = ? AND version = ? AND name = ?",
                             frames)
        return len(dropped)

    def maybe_collect_garbage(self, force: bool = False) -> int:
        """Collect unreferenced blobs, at most every few minutes per process unless forced."""
        if not force and time.monotonic() - self._last_gc < GC_INTERVAL_SECONDS:
            return 0
        self._last_gc = time.monotonic()
        return self.engine.collect_garbage()

    def clear(self, notebook: str) -> bool:
        """Forget all saved state of ``notebook``; False if it had none."""
        validate_notebook_id(notebook)
        self._live.pop(notebook, None)
        with self.db.write() as conn:
            # The versions first: rows no version needs may go (schema's trigger).
            conn.execute("DELETE FROM kernel_versions WHERE notebook = ?", (notebook,))
            conn.execute("DELETE FROM kernel_variables WHERE notebook = ?", (notebook,))
            conn.execute("DELETE FROM kernel_frame_columns WHERE notebook = ?", (notebook,))
            existed = conn.execute(
                "DELETE FROM kernel_notebooks WHERE id = ? RETURNING id", (notebook,)).fetchone()
        if existed:
            self.maybe_collect_garbage(force=True)
        return existed is not None

    def select_restore(self, notebook: str, version: int | None = None) -> dict:
        """Choose the version the notebook's kernel loads next time it starts.

        ``None`` selects the latest. The choice is used once, by the next kernel
        that loads the extension fresh, and is kept by retention until then.
        KeyError for an unknown notebook or version.
        """
        validate_notebook_id(notebook)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise ValueError(f"a version must be a whole number, got {version!r}")
        with self.db.write() as conn:
            row = conn.execute("SELECT name FROM kernel_notebooks WHERE id = ?", (notebook,)).fetchone()
            if row is None:
                raise KeyError(f"notebook {notebook!r} has no saved state")
            if version is None:
                found = conn.execute("SELECT max(version) FROM kernel_versions WHERE notebook = ?",
                                     (notebook,)).fetchone()
                if found is None or found[0] is None:
                    raise KeyError(f"notebook {notebook!r} has no saved versions")
                chosen, stored = found[0], None
            else:
                found = conn.execute("SELECT 1 FROM kernel_versions WHERE notebook = ? AND version = ?",
                                     (notebook, version)).fetchone() if fits_an_integer_column(version) else None
                if found is None:
                    raise KeyError(f"notebook {notebook!r} has no version {version}")
                chosen, stored = version, version
            conn.execute("UPDATE kernel_notebooks SET restore_version = ? WHERE id = ?", (stored, notebook))
            saved_at, count = conn.execute(
                "SELECT saved_at, variable_count FROM kernel_versions WHERE notebook = ? AND version = ?",
                (notebook, chosen)).fetchone()
        return {"notebook": notebook, "version": chosen, "saved_at": saved_at,
                "variable_count": count, "applies": "next kernel start"}

    def take_restore_selection(self, notebook: str) -> int | None:
        """The version selected by ``select_restore`` (and forget the choice), or None."""
        with self.db.write() as conn:
            row = conn.execute("SELECT restore_version FROM kernel_notebooks WHERE id = ?",
                               (notebook,)).fetchone()
            if row is None or row[0] is None:
                return None
            conn.execute("UPDATE kernel_notebooks SET restore_version = NULL WHERE id = ?", (notebook,))
            return row[0]

    # --- reading -------------------------------------------------------------

    def latest_version(self, notebook: str) -> int | None:
        rows = self.db.rows("SELECT max(version) FROM kernel_versions WHERE notebook = ?", (notebook,))
        return rows[0][0] if rows else None

    def latest_checksum(self, notebook: str) -> tuple[int, str, str] | None:
        """The latest version, its checksum and its skipped list as stored (JSON), in one
        query; None if the notebook has no saved version."""
        rows = self.db.rows("SELECT version, checksum, skipped FROM kernel_versions WHERE notebook = ? "
                            "ORDER BY version DESC LIMIT 1", (notebook,))
        return rows[0] if rows else None

    def prefetch_latest(self, notebook: str) -> int:
        """Start reading the latest version's big blobs into the page cache (a kernel that
        exits warms what the next one will restore: big blobs left the cache when written)."""
        dropped_from = blob_files.DROP_CACHE_BYTES
        if dropped_from is None:
            return 0
        try:
            entries = self.manifest(notebook).entries
        except KeyError:
            return 0
        return self.blobs.prefetch(blobs_of(entries, dropped_from))

    def manifest(self, notebook: str, version: int | None = None) -> Manifest:
        """The manifest of ``version`` (latest if None); KeyError if there is none."""
        validate_notebook_id(notebook)
        if version is None:
            version = self.latest_version(notebook)
            if version is None:
                raise KeyError(f"notebook {notebook!r} has no saved state")
        rows = self.db.rows(
            "SELECT saved_at, skipped FROM kernel_versions WHERE notebook = ? AND version = ?",
            (notebook, version)) if fits_an_integer_column(version) else []
        if not rows:
            known = self.db.rows("SELECT 1 FROM kernel_notebooks WHERE id = ?", (notebook,))
            if not known:
                raise KeyError(f"notebook {notebook!r} has no saved state")
            raise KeyError(f"notebook {notebook!r} has no version {version}")
        saved_at, skipped = rows[0]
        entries = [Entry(*r) for r in self.db.rows(
            f"SELECT {_ENTRY_COLUMNS} FROM kernel_variables WHERE {_AT_VERSION} ORDER BY name",
            (notebook, version))]
        parts: dict[str, list[str]] = {}
        for name, blob in self._columns_at(notebook, version):
            parts.setdefault(name, []).append(blob)
        by_name = {e.name: e for e in entries}
        for e in entries:
            owner = by_name.get(e.alias_of, e) if e.alias_of else e
            if owner.name in parts:
                e.parts = parts[owner.name]
            elif owner.format == FRAME:
                e.parts = []  # its column list is missing: the restore reports the variable as damaged
        return Manifest(notebook, version, saved_at, entries, _skipped_list(skipped))

    def _columns_at(self, notebook: str, version: int) -> list[tuple[str, str]]:
        """(name, blob) of the frame columns of ``version``, by name and position."""
        return self.db.rows(
            "SELECT c.name, c.blob FROM kernel_variables v JOIN kernel_frame_columns c "
            "ON c.notebook = v.notebook AND c.version = v.version AND c.name = v.name "
            "WHERE v.notebook = ?1 AND v.version <= ?2 AND (v.until IS NULL OR v.until > ?2) "
            "ORDER BY c.name, c.position", (notebook, version))

    def versions(self, notebook: str) -> list[dict]:
        """Every kept version, newest first: version, saved_at, variable_count, size_bytes."""
        validate_notebook_id(notebook)
        return self.db.query(
            "SELECT version, saved_at, variable_count, size_bytes FROM kernel_versions "
            "WHERE notebook = ? ORDER BY version DESC", (notebook,))

    def notebooks(self) -> list[dict]:
        """Every notebook with saved state: id, name, saved_at, variable_count, versions."""
        return self.db.query(
            "SELECT n.id AS id, n.name AS name, v.saved_at AS saved_at, "
            "v.variable_count AS variable_count, "
            "(SELECT count(*) FROM kernel_versions c WHERE c.notebook = n.id) AS versions "
            "FROM kernel_notebooks n JOIN kernel_versions v ON v.notebook = n.id AND v.version = "
            "(SELECT max(version) FROM kernel_versions m WHERE m.notebook = n.id) "
            "ORDER BY v.saved_at DESC")

    def name_of(self, notebook: str) -> str | None:
        rows = self.db.rows("SELECT name FROM kernel_notebooks WHERE id = ?", (notebook,))
        return rows[0][0] if rows else None

    def summary(self, notebook: str) -> dict:
        """The fields of ``GET /api/notebooks/{id}/state``."""
        validate_notebook_id(notebook)
        versions = self.versions(notebook)
        if not versions:
            return {"has_saved_state": False, "saved_at": None, "variable_count": 0,
                    "variable_names": [], "file_size_bytes": 0, "checksum": None, "versions": [],
                    "comes_back": []}
        latest = versions[0]["version"]
        rows = self.db.rows(
            f"SELECT name, blob, value, format FROM kernel_variables WHERE {_AT_VERSION} ORDER BY name",
            (notebook, latest))
        (checksum, skipped), = self.db.rows(
            "SELECT checksum, skipped FROM kernel_versions WHERE notebook = ? AND version = ?", (notebook, latest))
        blobs = {row[1] for row in rows if row[1]} | {blob for _, blob in self._columns_at(notebook, latest)}
        inline = sum(len(v) if isinstance(v, (str, bytes)) else 0 for _, _, v, _ in rows)
        return {
            "has_saved_state": True,
            "saved_at": versions[0]["saved_at"],
            "variable_count": len(rows),
            "variable_names": [row[0] for row in rows],
            "file_size_bytes": inline + sum(self.blobs.size_on_disk(b) for b in blobs),
            "checksum": checksum,
            "versions": versions,
            "comes_back": comes_back(rows, _loads_skipped(skipped)),
        }

    def variables(self, notebook: str, version: int | None = None) -> dict:
        """What a version holds: {version, saved_at, variables: [{name,type,size,format}], skipped}."""
        m = self.manifest(notebook, version)
        return {
            "version": m.version,
            "saved_at": m.saved_at,
            "variables": [{"name": e.name, "type": e.type, "size": e.size, "format": e.format,
                           **({"alias_of": e.alias_of} if e.alias_of else {})} for e in m.entries],
            "skipped": m.skipped,
        }

    def diff(self, notebook: str, a: int, b: int) -> dict:
        """Variables added, modified and deleted going from version ``a`` to ``b``."""
        old, new = self.manifest(notebook, a).by_name(), self.manifest(notebook, b).by_name()
        return {
            "from": a, "to": b,
            "added": sorted(set(new) - set(old)),
            "deleted": sorted(set(old) - set(new)),
            "modified": sorted(n for n in set(old) & set(new)
                               if (old[n].content_hash, old[n].format, old[n].alias_of)
                               != (new[n].content_hash, new[n].format, new[n].alias_of)),
        }
