"""IPython's history databases, read safely.

Every IPython kernel writes the code it runs to ``<IPYTHONDIR>/profile_*/history.sqlite``
(tables ``sessions``, ``history``, ``output_history``), one session per kernel start.
IPython's own ``HistoryAccessor`` renames the live file to ``history-corrupt...`` on any
error, even "database is locked", so it is never used here: each database is copied
(with its ``-wal``/``-journal``) into a private temporary folder and only the copy is
opened. The original file is never written.

Times: ``start`` is stored as naive local time, ``end`` as UTC (IPython 9) or naive
local time (older IPython); both become aware datetimes here.
"""
from __future__ import annotations

import bisect
import datetime as dt
import os
import re
import shutil
import sqlite3
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PipulateError

SIDE_FILES = ("-wal", "-journal")
_EXCLUDE_SUFFIXES = ("-wal", "-journal", "-shm")


class RecoveryError(PipulateError):
    """A recovery command cannot do what was asked; the message says why."""


def ipython_dir() -> Path:
    return Path(os.environ.get("IPYTHONDIR") or Path.home() / ".ipython").expanduser()


def recovered_dir(home=None) -> Path:
    """Where copies taken from live processes are kept: ``<PIPULATE_HOME>/recovered``."""
    from ..home import resolve_home

    return resolve_home(home) / "recovered"


def default_databases(home=None) -> list[Path]:
    """The history databases to read when none are named, most important first.

    ``profile_default/history.sqlite``; then the other profiles; then the
    ``history-corrupt*`` and ``history.sqlite.old*`` files IPython or users left
    beside them; then copies ``pipulate recover live`` took from running kernels.
    """
    root = ipython_dir()
    found: list[Path] = [root / "profile_default" / "history.sqlite"]
    if root.is_dir():
        for profile in sorted(root.glob("profile_*")):
            for path in sorted(profile.glob("history*.sqlite*"), key=_db_order):
                if path.name.endswith(_EXCLUDE_SUFFIXES) or not path.is_file():
                    continue
                if path not in found:
                    found.append(path)
    rec = recovered_dir(home)
    if rec.is_dir():
        found += sorted(p for p in rec.glob("*.sqlite") if p.is_file())
    return found


def _db_order(path: Path):
    return (path.name != "history.sqlite", path.name)


def parse_time(value) -> dt.datetime | None:
    """A stored time as an aware datetime (naive values are local time)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        t = value
    else:
        try:
            t = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
    return t.astimezone()  # naive -> interpreted as local; aware -> converted to local


def fmt_time(t: dt.datetime | None, missing: str = "") -> str:
    from ..display import local_time

    return local_time(t, missing)


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*(?:ago)?\s*$", re.I)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, end_of_day: bool = False) -> dt.datetime:
    """``--since``/``--until``: ISO date or time (local), ``today``, ``yesterday``, or ``90m``/``2h``/``3d`` ago.

    ``end_of_day``: a bare date means the end of that day (``--until 2024-05-01``
    includes the whole of May 1st).
    """
    now = dt.datetime.now().astimezone()
    lowered = text.strip().lower()
    if lowered in ("now",):
        return now
    if lowered in ("today", "yesterday"):
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - dt.timedelta(days=1) if lowered == "yesterday" else midnight
    m = _RELATIVE.match(lowered)
    if m:
        return now - dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])
    try:
        when = dt.datetime.fromisoformat(text.strip()).astimezone()
        if end_of_day and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            when += dt.timedelta(days=1, microseconds=-1)
        return when
    except ValueError:
        raise RecoveryError(
            f"cannot read the time {text!r}: use e.g. 2024-05-01, '2024-05-01 14:30', "
            "today, yesterday, 90m, 2h or 3d") from None


@dataclass
class Cell:
    session: "Session"
    line: int
    source: str          # what ran, after IPython's transformations
    source_raw: str      # what was typed (magics as typed)
    output: str | None = None

    @property
    def code(self) -> str:
        return self.source_raw if self.source_raw is not None else (self.source or "")


@dataclass
class Session:
    db: "HistoryDB"
    number: int
    start: dt.datetime | None
    end: dt.datetime | None
    num_cmds: int | None
    remark: str
    cell_count: int = 0
    first_line: str = ""
    _cells: list[Cell] | None = field(default=None, repr=False)

    @property
    def ref(self) -> str:
        """How the user names it: ``12`` in the first database, ``2:12`` in database 2."""
        return str(self.number) if self.db.label == "1" else f"{self.db.label}:{self.number}"

    @property
    def ended(self) -> bool:
        return self.end is not None

    def cells(self) -> list[Cell]:
        if self._cells is None:
            self._cells = self.db.cells(self)
        return self._cells


class HistoryDB:
    """One history database, opened through a private copy. ``problem`` says what went wrong."""

    def __init__(self, path: Path, label: str, tmpdir: Path):
        self.path = Path(path)
        self.label = label
        self.problem: str | None = None
        self.conn: sqlite3.Connection | None = None
        self.damaged_note: str | None = None
        self._sessions: list[Session] | None = None
        self._open(tmpdir)

    def __repr__(self) -> str:
        return f"HistoryDB({str(self.path)!r}, label={self.label!r})"

    @property
    def ok(self) -> bool:
        return self.conn is not None

    def _open(self, tmpdir: Path) -> None:
        if not self.path.exists():
            self.problem = "no such file"
            return
        if not self.path.is_file():
            self.problem = "not a file"
            return
        copy = tmpdir / f"{self.label}-{self.path.name}"
        try:
            self._copy(copy)
        except PermissionError:
            self.problem = "cannot be read (permission denied)"
            return
        except OSError as exc:
            self.problem = f"cannot be copied ({exc.strerror or exc})"
            return
        try:
            # The copy is ours: letting SQLite roll back a hot journal or replay a
            # WAL into it is what makes a mid-write copy consistent.
            conn = sqlite3.connect(copy, timeout=1)
            conn.execute("PRAGMA query_only = 1")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            self.problem = f"is damaged or not a database ({exc})"
            return
        if not {"sessions", "history"} <= tables:
            conn.close()
            self.problem = "is not an IPython history database (no sessions/history tables)"
            return
        self.has_output = "output_history" in tables
        self.conn = conn

    def _copy(self, copy: Path, attempts: int = 3) -> None:
        """Copy the file and its -wal/-journal; again if a writer changed them meanwhile."""
        files = [(self.path, copy)] + [(Path(str(self.path) + sfx), Path(str(copy) + sfx))
                                       for sfx in SIDE_FILES]
        for _ in range(attempts):
            before = [_signature(src) for src, _ in files]
            for src, dst in files:
                dst.unlink(missing_ok=True)
                if src.is_file():
                    try:
                        shutil.copyfile(src, dst)
                    except FileNotFoundError:  # a journal that went away as we looked
                        continue
            if [_signature(src) for src, _ in files] == before:
                return
            time.sleep(0.05)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _rows(self, sql: str, params=()) -> list[tuple]:
        """Rows up to the first damaged page (a partly damaged file still gives what it can)."""
        out = []
        try:
            for row in self.conn.execute(sql, params):
                out.append(row)
        except sqlite3.DatabaseError as exc:
            self.damaged_note = f"damaged: read {len(out)} rows, then {exc}"
        return out

    def sessions(self) -> list[Session]:
        if self._sessions is not None:
            return self._sessions
        if not self.ok:
            return []
        counts = {s: (n, first) for s, n, first in self._rows(
            "SELECT session, count(*), (SELECT coalesce(source_raw, source) FROM history h2 "
            " WHERE h2.session = h.session ORDER BY line LIMIT 1) FROM history h GROUP BY session")}
        sessions = []
        seen = set()
        for number, start, end, num_cmds, remark in self._rows(
                "SELECT session, start, end, num_cmds, remark FROM sessions ORDER BY session"):
            seen.add(number)
            n, first = counts.get(number, (0, ""))
            sessions.append(Session(self, number, parse_time(start), parse_time(end), num_cmds,
                                    remark or "", n, _first_line(first)))
        # Lines whose session row is missing (a damaged sessions table) are still code.
        for number in sorted(set(counts) - seen):
            n, first = counts[number]
            sessions.append(Session(self, number, None, None, None, "", n, _first_line(first)))
        self._sessions = sessions
        return sessions

    def cells(self, session: Session) -> list[Cell]:
        outputs = {}
        if self.has_output:
            outputs = dict(self._rows(
                "SELECT line, output FROM output_history WHERE session = ?", (session.number,)))
        return [Cell(session, line, source or "", raw if raw is not None else (source or ""),
                     outputs.get(line))
                for line, source, raw in self._rows(
                    "SELECT line, source, source_raw FROM history WHERE session = ? ORDER BY line",
                    (session.number,))]

    def search(self, text: str) -> list[Cell]:
        by_number = {s.number: s for s in self.sessions()}
        hits = []
        for number, line, source, raw in self._rows(
                "SELECT session, line, source, source_raw FROM history "
                "WHERE instr(lower(coalesce(source_raw, source)), lower(?)) > 0 "
                "ORDER BY session, line", (text,)):
            session = by_number.get(number)
            if session is not None:
                hits.append(Cell(session, line, source or "", raw if raw is not None else source or ""))
        return hits


def _signature(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _drop_superseded(sessions: list[Session]) -> list[Session]:
    """Hide a session whose cells are a prefix of another copy of the same kernel's session.

    A kernel whose history file was deleted leaves two copies: the deleted file (cells
    up to the deletion) and its memory (every cell). Only the fuller one is shown.
    """
    unfinished = sorted((s for s in sessions if s.end is None and s.start is not None and s.cell_count),
                        key=lambda s: s.start)
    if len({s.db.label for s in unfinished}) < 2:
        return sessions
    times = [s.start.timestamp() for s in unfinished]
    drop = set()
    for i, a in enumerate(unfinished):
        # only sessions that started within two minutes of this one can be copies of it
        lo = bisect.bisect_left(times, times[i] - 120)
        hi = bisect.bisect_right(times, times[i] + 120)
        for b in unfinished[lo:hi]:
            if a is b or a.db is b.db or b.cell_count < a.cell_count or id(b) in drop:
                continue
            if b.cell_count == a.cell_count and a.db.label < b.db.label:
                continue  # two identical copies: keep the one from the earlier database
            if [c.code for c in a.cells()] == [c.code for c in b.cells()[: a.cell_count]]:
                drop.add(id(a))
                break
    return [s for s in sessions if id(s) not in drop]


def _first_line(code: str | None) -> str:
    for line in (code or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


class History:
    """Every history database to read, opened through copies; use as a context manager."""

    def __init__(self, paths: list[Path] | None = None, home=None):
        explicit = paths is not None and len(paths) > 0
        self.explicit = explicit
        self.paths = [Path(p).expanduser() for p in paths] if explicit else default_databases(home)
        self._tmp = Path(tempfile.mkdtemp(prefix="pipulate-recover-"))
        # the copies go when this object does, or at exit, whichever comes first
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        self.dbs = [HistoryDB(p, str(i + 1), self._tmp) for i, p in enumerate(self.paths)]
        if explicit:
            missing = [db for db in self.dbs if db.problem == "no such file"]
            if missing:
                self.close()
                raise RecoveryError(f"no history database at {missing[0].path}")

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for db in self.dbs:
            db.close()
        self._cleanup()

    @property
    def usable(self) -> list[HistoryDB]:
        return [db for db in self.dbs if db.ok]

    def problems(self) -> list[str]:
        """Plain sentences about databases that could not be read (missing defaults stay quiet)."""
        out = []
        for db in self.dbs:
            if db.problem and not (db.problem == "no such file" and not self.explicit and db.label != "1"):
                if db.problem == "no such file":
                    out.append(f"no IPython history at {db.path} (no kernel has run with this "
                               "IPYTHONDIR, or it was deleted: try `pipulate recover live`)")
                else:
                    out.append(f"history database {db.path} {db.problem}; the original was not changed")
            elif db.damaged_note:
                out.append(f"history database {db.path} is {db.damaged_note}; "
                           "showing what could be read, the original was not changed")
        return out

    def require_any(self) -> None:
        if not self.usable:
            raise RecoveryError("no readable history database:\n  " + "\n  ".join(self.problems()))

    def sessions(self, since=None, until=None, include_empty=True) -> list[Session]:
        """All sessions of all databases, oldest first; exact duplicates across copies once."""
        out, seen = [], set()
        for db in self.usable:
            for s in db.sessions():
                key = (s.start, s.number, s.cell_count, s.first_line)
                if db.label != "1" and key in seen:
                    continue
                seen.add(key)
                if not include_empty and s.cell_count == 0:
                    continue
                if since and (s.start is None or s.start < since):
                    continue
                if until and (s.start is None or s.start > until):
                    continue
                out.append(s)
        out = _drop_superseded(out)
        out.sort(key=lambda s: (s.start or dt.datetime.min.replace(tzinfo=dt.timezone.utc), s.db.label, s.number))
        return out

    def session(self, ref: str) -> Session:
        """``last``, ``N`` (first readable database) or ``D:N`` (database D)."""
        self.require_any()
        ref = str(ref).strip()
        if ref.lower() == "last":
            candidates = [s for s in self.sessions() if s.cell_count > 0]
            if not candidates:
                raise RecoveryError("there is no session with code in " + ", ".join(
                    str(db.path) for db in self.usable))
            return candidates[-1]
        m = re.fullmatch(r"(?:(\d+):)?(\d+)", ref)
        if not m:
            raise RecoveryError(f"{ref!r} is not a session: use a number from "
                                "`pipulate recover sessions` (e.g. 12 or 2:12) or `last`")
        label, number = m.group(1), int(m.group(2))
        if label is None:
            db = next((d for d in self.dbs if d.label == "1" and d.ok), None) or self.usable[0]
        else:
            db = next((d for d in self.dbs if d.label == label), None)
            if db is None or not db.ok:
                raise RecoveryError(f"there is no readable history database {label} "
                                    f"(see `pipulate recover sessions`)")
        found = next((s for s in db.sessions() if s.number == number), None)
        if found is None:
            numbers = [s.number for s in db.sessions()]
            span = f"sessions {min(numbers)}-{max(numbers)}" if numbers else "no sessions"
            raise RecoveryError(f"there is no session {ref} in {db.path} (it has {span})")
        return found

    def search(self, text: str, progress=None) -> list[Cell]:
        if not text:
            raise RecoveryError("give some text to search for")
        hits, seen = [], set()
        for i, db in enumerate(self.usable):
            if progress:
                progress(f"searching {db.path} ({i + 1}/{len(self.usable)})")
            for cell in db.search(text):
                key = (cell.session.start, cell.session.number, cell.line, cell.code)
                if key in seen:
                    continue
                seen.add(key)
                hits.append(cell)
        return hits
