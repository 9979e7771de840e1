"""The store's records on PostgreSQL (psycopg 3), behind the interface of ``pipulate.db.Database``.

The modules write one SQL text for both backends. What differs is settled here or in the
schema, not by rewriting statements: the paramstyle (``?`` and ``?N`` become psycopg's
``%s``, the one place that adapts), the tables (``schema.sql``: one type per column, an
``owner`` in the keys of each user's tables) and two small hooks the modules ask for
(``key``: a conflict target with the owner; ``text_values``: whether a column may hold
text or bytes). Statements that were SQLite-only are written portably in the modules
(``ON CONFLICT``, ``IS DISTINCT FROM``).

One connection per process (made again after a fork or a lost server), serialised by a
lock like the SQLite store's; autocommit for reads, one transaction per ``write()``. A
transaction locks the rows it writes (``INSERT ... ON CONFLICT DO UPDATE`` on the job or
notebook row comes first in every write), so two writers of one job take turns and both
land. Every wait is bounded: connecting (``connect_timeout``), each statement and each
lock wait (``statement_timeout``, ``lock_timeout``: the busy timeout setting), a silent
network (TCP keepalives). A server that is down gives ``StoreUnavailableError`` with one
line; the next call connects again.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Iterator

import psycopg
from psycopg.rows import dict_row

from ..errors import StoreUnavailableError
from ..signing import load_or_create_key

CONNECT_TIMEOUT_S = 10
# A connection that hears nothing for this long is declared dead instead of waiting forever.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


@functools.lru_cache(maxsize=1024)
def adapt_sql(sql: str) -> tuple[str, tuple[int, ...] | None]:
    """``sql`` with ``?`` / ``?N`` placeholders as psycopg's ``%s`` (and ``%`` doubled),
    plus, for numbered ones, which parameter each ``%s`` takes (0-based).

    Quoted text and identifiers are copied as they are.
    """
    out: list[str] = []
    order: list[int] = []
    numbered = False
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            end = sql.find(c, i + 1)
            while end != -1 and sql[end + 1:end + 2] == c:  # a doubled quote inside
                end = sql.find(c, end + 2)
            end = n - 1 if end == -1 else end
            out.append(sql[i:end + 1].replace("%", "%%"))
            i = end + 1
            continue
        if c == "?":
            j = i + 1
            while j < n and sql[j].isdigit():
                j += 1
            if j > i + 1:
                numbered = True
                order.append(int(sql[i + 1:j]) - 1)
            else:
                order.append(len(order))
            out.append("%s")
            i = j
            continue
        out.append("%%" if c == "%" else c)
        i += 1
    return "".join(out), tuple(order) if numbered else None


def _params(order: tuple[int, ...] | None, params):
    params = tuple(params)
    return params if order is None else tuple(params[k] for k in order)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Transaction:
    """What ``write()`` yields: ``execute`` / ``executemany`` with the modules' paramstyle;
    results have ``fetchone``, ``fetchall`` and iterate (psycopg cursors)."""

    def __init__(self, conn: psycopg.Connection):
        self._conn = conn
        self.statements = 0
        self.rows = 0  # rows each statement wrote or returned, as the server counts them

    def execute(self, sql: str, params=()):
        text, order = adapt_sql(sql)
        cur = self._conn.execute(text, _params(order, params))
        self.statements += 1
        self.rows += max(cur.rowcount, 0)
        return cur

    def executemany(self, sql: str, seq):
        text, order = adapt_sql(sql)
        rows = [_params(order, p) for p in seq]
        cur = self._conn.cursor()
        if rows:
            cur.executemany(text, rows)
            self.statements += len(rows)
            self.rows += max(cur.rowcount, 0)
        return cur


class PostgresDatabase:
    """The team backend's records. ``url``: a libpq URL (``postgresql://user:pw@host/db``);
    ``user``: the role to connect as when the URL names none."""

    # The modules' schema is created by an administrator (``schema.sql``), not by users.
    schema_managed = True
    # steps.value has one type here: values are stored as bytes (text as UTF-8).
    text_values = False

    def __init__(self, url: str, *, user: str | None = None, timeout_ms: int = 60_000):
        self.url = url
        self.user = user
        self.timeout_ms = int(timeout_ms)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection | None = None
        self._pid: int | None = None
        # What this process's writes cost: statements run, rows written or returned by them.
        self.write_statements = 0
        self.write_rows = 0

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.where()!r})"

    def where(self) -> str:
        """The server and database, without the password (for messages)."""
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.url)
        except psycopg.ProgrammingError:
            return "(an unreadable PIPULATE_DATABASE_URL)"
        host = info.get("host") or "localhost"
        port = f":{info['port']}" if info.get("port") else ""
        return f"postgresql://{info.get('user') or self.user or ''}@{host}{port}/{info.get('dbname', '')}"

    # --- the interface of pipulate.db.Database -------------------------------------

    def add_schema(self, sql) -> None:
        """Nothing to do: the tables are the administrator's (``pipulate team init``)."""

    @staticmethod
    def key(columns: str) -> str:
        """A conflict target of a user's own table: its key includes the owner."""
        return f"owner, {columns}"

    def query(self, sql: str, params=()) -> list[dict]:
        return self._read(sql, params, dict_row)

    def rows(self, sql: str, params=()) -> list[tuple]:
        return self._read(sql, params, None)

    def _read(self, sql: str, params, row_factory) -> list:
        text, order = adapt_sql(sql)
        args = _params(order, params)

        def run(conn):
            with conn.cursor(row_factory=row_factory) if row_factory else conn.cursor() as cur:
                cur.execute(text, args)
                return cur.fetchall() if cur.description else []

        with self._errors():
            return self._once_more_if_dead(run)  # a read is safe to run twice

    @contextlib.contextmanager
    def write(self) -> Iterator[_Transaction]:
        """One transaction, committed (durably: the server's commit) when the block ends."""
        with self._errors():
            conn = self._begin()
            tx = _Transaction(conn)
            try:
                yield tx
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                raise
            finally:
                self.write_statements += tx.statements
                self.write_rows += tx.rows
            conn.execute("COMMIT")

    def _begin(self) -> psycopg.Connection:
        def begin(conn):
            conn.execute("BEGIN")
            return conn

        return self._once_more_if_dead(begin)  # nothing was sent before BEGIN

    def referenced_blobs(self) -> set[str]:
        """Every blob hash any user's rows name (through a function that sees past row security)."""
        return {r[0] for r in self.rows("SELECT * FROM pipulate_referenced_blobs()")}

    def columns(self, table: str) -> list[str]:
        """The columns a copy of ``table`` writes: not the owner (the connected role's, by
        default) nor numbers the database makes itself (identity columns)."""
        return [r[0] for r in self.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? AND column_name <> 'owner' AND is_identity = 'NO' ORDER BY ordinal_position",
            (table,))]

    def signing_key(self, home) -> bytes:
        """The connected user's key, kept in the database (row-level security: theirs alone) so
        that their pickles stay readable on any machine they log in from. The first time, the
        key of ``home`` (made if new) becomes theirs: what that home signed stays readable."""
        rows = self.rows("SELECT key FROM signing_keys")
        if not rows:
            with self.write() as tx:  # two first processes at once: the first insert wins
                tx.execute("INSERT INTO signing_keys (key) VALUES (?) ON CONFLICT DO NOTHING",
                           (load_or_create_key(home),))
            rows = self.rows("SELECT key FROM signing_keys")
        return bytes(rows[0][0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # --- connections -------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Under the lock; psycopg's connection failures become one line for the user."""
        with self._lock:
            try:
                yield
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._drop_if_broken()
                raise StoreUnavailableError(
                    f"the team database {self.where()} is unavailable: {_one_line(exc)}") from None

    def _once_more_if_dead(self, action):
        """``action(connection)``; if the connection kept from before is found dead (the
        server restarted since its last use), once more on a new one."""
        reused = self._conn is not None and self._pid == os.getpid()
        conn = self._connected()
        try:
            return action(conn)
        except psycopg.OperationalError:
            if not (reused and self._drop_if_broken()):
                raise
        return action(self._connected())

    def _connected(self) -> psycopg.Connection:
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and not conn.closed and not conn.broken:
            return conn
        extra = {}
        if self.user and not psycopg.conninfo.conninfo_to_dict(self.url).get("user"):
            extra["user"] = self.user
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="pipulate", **KEEPALIVE, **extra)
        ms = str(self.timeout_ms)
        conn.execute("SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false), "
                     "set_config('idle_in_transaction_session_timeout', %s, false)", (ms, ms, ms))
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _drop_if_broken(self) -> bool:
        """Forget the connection if it is dead; True if it was."""
        conn = self._conn
        if conn is None or self._pid != os.getpid():
            self._conn = None
            return True
        if conn.closed or conn.broken:
            with contextlib.suppress(Exception):
                conn.close()
            self._conn = None
            return True
        return False
