"""Every saved version of every notebook, kept by a Jupyter post-save hook.

The workstation's Jupyter server sets
``c.FileContentsManager.post_save_hook = "pipulate.recover.versions.post_save_hook"``.
Each save stores the notebook's bytes (markdown and outputs included) in the
content-addressed blob store, so identical saves cost nothing, and one row
(notebook path, saved_at, blob, size) in the shared database. At most
``Settings.notebook_versions_keep`` versions are kept per notebook
(``PIPULATE_NOTEBOOK_VERSIONS_KEEP``); older rows are dropped and their blobs collected.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..blobs import open_blobs
from ..db import fits_an_integer_column, open_database
from ..home import resolve_home
from ..settings import Settings
from .history import RecoveryError, parse_time

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS notebook_versions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    notebook TEXT NOT NULL,
    saved_at TEXT NOT NULL,
    blob     TEXT NOT NULL,
    size     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notebook_versions_by_notebook ON notebook_versions(notebook, id);
CREATE INDEX IF NOT EXISTS notebook_versions_by_blob ON notebook_versions(blob);
"""

# Collecting blobs walks the whole blob folder: at most this often per process.
COLLECT_EVERY_SECONDS = 600.0


@dataclass
class Version:
    id: int
    notebook: str
    saved_at: str
    blob: str
    size: int

    @property
    def saved(self):
        return parse_time(self.saved_at)


def notebook_key(path: str | os.PathLike) -> str:
    """How a notebook is named in the table: its absolute path (the file may be gone)."""
    return str(Path(path).expanduser().resolve())


class NotebookVersions:
    """The versions table and the blob store of one workstation home."""

    def __init__(self, home=None, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.home = resolve_home(home if home is not None else self.settings.home)
        self.db = open_database(self.home, self.settings)
        self.db.add_schema(SCHEMA)
        self.blobs = open_blobs(self.home, self.settings)
        self._last_collect = 0.0

    def close(self) -> None:
        self.db.close()

    def record(self, path: str | os.PathLike, data: bytes | None = None) -> Version | None:
        """Keep ``data`` (default: the file's bytes) as the newest version of ``path``.

        Returns the new version, or None when it equals the newest one already kept.
        """
        key = notebook_key(path)
        if data is None:
            data = Path(key).read_bytes()
        digest = self.blobs.put(data)  # on disk before the row that names it commits
        stamp = _now()
        keep = max(1, int(self.settings.notebook_versions_keep))
        with self.db.write() as conn:
            last = conn.execute("SELECT blob FROM notebook_versions WHERE notebook = ? "
                                "ORDER BY id DESC LIMIT 1", (key,)).fetchone()
            if last is not None and last[0] == digest:
                return None
            (vid,) = conn.execute(
                "INSERT INTO notebook_versions (notebook, saved_at, blob, size) VALUES (?, ?, ?, ?) "
                "RETURNING id", (key, stamp, digest, len(data))).fetchone()
            pruned = conn.execute(
                "DELETE FROM notebook_versions WHERE notebook = ? AND id NOT IN "
                "(SELECT id FROM notebook_versions WHERE notebook = ? ORDER BY id DESC LIMIT ?) "
                "RETURNING id", (key, key, keep)).fetchall()
        if pruned and time.monotonic() - self._last_collect > COLLECT_EVERY_SECONDS:
            self._last_collect = time.monotonic()
            self.blobs.collect(self.db.referenced_blobs())
        return Version(vid, key, stamp, digest, len(data))

    def list(self, path: str | os.PathLike) -> list[Version]:
        """Versions of one notebook, newest first."""
        return [Version(*r) for r in self.db.rows(
            "SELECT id, notebook, saved_at, blob, size FROM notebook_versions WHERE notebook = ? "
            "ORDER BY id DESC", (notebook_key(path),))]

    def notebooks(self) -> list[tuple[str, int, str]]:
        """(notebook, number of versions, last saved_at), most recently saved first."""
        return [tuple(r) for r in self.db.rows(
            "SELECT notebook, count(*), max(saved_at) FROM notebook_versions GROUP BY notebook "
            "ORDER BY max(id) DESC")]

    def get(self, version_id: int) -> Version:
        version_id = int(version_id)
        rows = self.db.rows("SELECT id, notebook, saved_at, blob, size FROM notebook_versions "
                            "WHERE id = ?", (version_id,)) if fits_an_integer_column(version_id) else []
        if not rows:
            raise RecoveryError(f"there is no saved version {version_id} "
                                "(see `pipulate recover versions NOTEBOOK`)")
        return Version(*rows[0])

    def data(self, version: Version) -> bytes:
        return self.blobs.get(version.blob)


def _now() -> str:
    from ..store import now

    return now()


_instances: dict[str, NotebookVersions] = {}
_instances_lock = threading.Lock()


def _for_current_home() -> NotebookVersions:
    settings = Settings.from_env()
    home = str(resolve_home(settings.home))
    with _instances_lock:
        inst = _instances.get(home)
        if inst is None or inst.settings != settings:
            inst = _instances[home] = NotebookVersions(home, settings)
        return inst


def post_save_hook(model=None, os_path=None, contents_manager=None, **kwargs) -> None:
    """jupyter_server's post-save hook: keep this save of a notebook. Never raises."""
    logger = getattr(contents_manager, "log", None) or log
    try:
        if not os_path or (model or {}).get("type", "notebook") != "notebook":
            return
        version = _for_current_home().record(os_path)
        if version is not None:
            logger.debug("pipulate: kept version %s of %s", version.id, os_path)
    except Exception as exc:  # a failed copy must never fail the user's save
        logger.warning("pipulate: could not keep a version of %s: %r", os_path, exc)
