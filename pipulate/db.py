"""The workstation's SQLite database: opened one way by every process.

WAL lets readers run beside a writer; ``synchronous=FULL`` makes a commit
durable when it returns; writers take the lock up front (``BEGIN IMMEDIATE``)
and wait up to ``busy_timeout`` for it, so two processes never see
"database is locked" in the middle of a transaction.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import apsw

from .errors import StoreUnavailableError
from .signing import load_or_create_key


def fits_an_integer_column(n: int) -> bool:
    """Whether SQLite can take ``n`` as an INTEGER (64 bits): a bigger one raises
    OverflowError, so a number typed by a user is checked first (an id that big exists nowhere)."""
    return -(1 << 63) <= n < (1 << 63)


def _import_fastlite():
    """fastlite's ``database``, imported without dragging pandas and numpy in.

    apswutils (under fastlite) imports pandas and numpy eagerly for conveniences
    this store never uses, which adds seconds to every process and kernel start.
    They are hidden for the length of that import when nobody has loaded them yet.
    """
    hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # makes `import name` raise ImportError
    try:
        from fastlite import database
    finally:
        for name in hidden:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
    return database


database = _import_fastlite()


def _not_a_busy_wait(record: logging.LogRecord) -> bool:
    # apswutils sends SQLite's own log to stderr. A connection's first statements run
    # under apsw's 100 ms busy timeout, so a process opening the store while another
    # writes logs "database is locked" even though _open retries and succeeds; past
    # the real timeout the caller gets StoreUnavailableError. Nothing is hidden.
    return (getattr(record, "sqlite_code", 0) & 0xFF) != apsw.SQLITE_BUSY


logging.getLogger("apsw").addFilter(_not_a_busy_wait)

DB_FILE = "pipulate.db"
DEFAULT_BUSY_TIMEOUT_MS = 60_000

# Every (table, column) in the database that names blobs, for every part of the
# workstation, listed here in one place whether or not this process imported
# that part: garbage collection must see all references before deleting a blob.
BLOB_REFERENCES: list[tuple[str, str]] = [
    ("steps", "blob"),
    ("notebook_versions", "blob"),  # pipulate.recover.versions
    ("kernel_variables", "blob"),  # kernel-state versions (pipulate.kernel_state)
    # their DataFrames' columns (kernel_state.frames), their pickles' out-of-band buffers (.buffers)
    ("kernel_frame_columns", "blob"),
]


def open_database(home, settings):
    """The store's records: PostgreSQL when ``settings.database_url`` is set (the team
    backend, ``pipulate.team.postgres``), else the embedded SQLite ``pipulate.db`` in ``home``."""
    if settings.database_url:
        from .team.postgres import PostgresDatabase

        return PostgresDatabase(settings.database_url, user=settings.resolved_user(),
                                timeout_ms=settings.busy_timeout_ms)
    return Database(Path(home) / DB_FILE, settings.busy_timeout_ms)


class Database:
    """One connection per process (re-opened after fork), serialised by a lock."""

    # The modules create their own tables (``add_schema``) on this backend.
    schema_managed = False
    # A column holds text or bytes as given (SQLite's dynamic types): JSON stays readable.
    text_values = True

    def __init__(self, path: Path, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._lock = threading.RLock()
        self._pid = None
        self._db = None
        self._schemas: list[str] = []

    def add_schema(self, sql) -> None:
        """DDL to run (idempotently) on every connection this object opens.

        ``sql`` is SQL text, or a function of the connection (a one-time upgrade of
        old tables, say), run in its own ``BEGIN IMMEDIATE`` transaction so that two
        processes opening the store at once take turns.
        """
        with self._lock:
            self._schemas.append(sql)
            if self._db is not None:
                if isinstance(sql, str):
                    self._db.conn.execute(sql)
                else:
                    with _translate_errors(self.path):
                        _run_locked(self._db.conn, sql)

    @property
    def fl(self):
        """The fastlite database, opened on first use in this process."""
        if self._db is None or self._pid != os.getpid():
            self._open()
        return self._db

    def _open(self) -> None:
        # Connecting switches to WAL under apsw's short default busy timeout, so a
        # connect that races another process's write is retried, not reported.
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                db = database(self.path)
                break
            except apsw.BusyError as exc:
                if time.monotonic() > deadline:
                    raise StoreUnavailableError(
                        f"the store {self.path} stayed locked by another process for too long: {exc}") from exc
                time.sleep(0.01)
            except apsw.Error as exc:
                with _translate_errors(self.path):
                    raise
                raise StoreUnavailableError(f"cannot open the store {self.path}: {exc}") from exc
        conn = db.conn
        conn.setbusytimeout(self.busy_timeout_ms)
        conn.execute("PRAGMA synchronous=FULL")
        for sql in self._schemas:
            with _translate_errors(self.path):
                _run_locked(conn, sql)
        self._db, self._pid = db, os.getpid()

    @staticmethod
    def key(columns: str) -> str:
        """A conflict target of a user's own table (the team backend adds the owner)."""
        return columns

    def query(self, sql: str, params=()) -> list[dict]:
        with self._lock, _translate_errors(self.path):
            return list(self.fl.query(sql, params))

    def rows(self, sql: str, params=()) -> list[tuple]:
        with self._lock, _translate_errors(self.path):
            return list(self.fl.conn.execute(sql, params))

    @contextlib.contextmanager
    def write(self) -> Iterator[apsw.Connection]:
        """A short write transaction, holding the write lock from its start."""
        with self._lock, _translate_errors(self.path):
            conn = self.fl.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def columns(self, table: str) -> list[str]:
        """The columns a copy of ``table`` writes (all of them here); [] if there is no such table."""
        return [r[1] for r in self.rows(f"PRAGMA table_info({table})")]

    def signing_key(self, home: Path) -> bytes:
        """The key this store's pickles are signed with: the file in the home (made if new)."""
        return load_or_create_key(home)

    def referenced_blobs(self) -> set[str]:
        """Every blob hash any table of the workstation names."""
        existing = {r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type='table'")}
        parts = [f"SELECT {col} FROM {table} WHERE {col} IS NOT NULL"
                 for table, col in BLOB_REFERENCES if table in existing]
        return {r[0] for r in self.rows(" UNION ".join(parts))} if parts else set()

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.conn.close()
            self._db = None


def _run_locked(conn: apsw.Connection, sql) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if isinstance(sql, str):
            conn.execute(sql)
        else:
            sql(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextlib.contextmanager
def _translate_errors(path: Path):
    """Turn SQLite's failures into errors that say what the user can do."""
    try:
        yield
    except apsw.BusyError as exc:
        raise StoreUnavailableError(
            f"the store {path} stayed locked by another process for too long: {exc}") from exc
    except apsw.ReadOnlyError as exc:
        raise StoreUnavailableError(f"the store {path} is read-only: {exc}") from exc
    except apsw.FullError as exc:
        raise StoreUnavailableError(f"the disk holding {path} is full: {exc}") from exc
    except apsw.CantOpenError as exc:
        raise StoreUnavailableError(f"cannot open the store {path}: {exc}") from exc
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        from .errors import IntegrityError

        raise IntegrityError(f"the store {path} is damaged: {exc}") from exc
