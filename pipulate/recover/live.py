"""Running kernels: the last place code lives after its files are gone.

A kernel whose ``history.sqlite`` was deleted still holds the file open, and
``/proc/<pid>/fd/N`` reads the bytes back (psutil's ``open_files`` skips deleted
files, so the links are read here). Cells run after the deletion exist only in
the kernel's memory; a kernel client's ``history`` request returns them. Both are
saved as history databases under ``<PIPULATE_HOME>/recovered/``, where every
``pipulate recover`` command reads them.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from .history import recovered_dir

DELETED = " (deleted)"
DB_SUFFIXES = (".sqlite", ".sqlite-wal", ".sqlite-journal", ".db")


@dataclass
class KernelProcess:
    pid: int
    cmdline: list[str]
    started: float
    connection_file: str | None = None
    notebook: str | None = None          # JPY_SESSION_NAME, set by jupyter_server
    open_history: list[str] = field(default_factory=list)     # history files open, present
    deleted_history: list[str] = field(default_factory=list)  # open, but deleted
    copied: list[Path] = field(default_factory=list)
    memory_cells: int | None = None
    memory_copy: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "kernel" if any("ipykernel" in a for a in self.cmdline) else "IPython"


def _is_ipython(cmdline: list[str]) -> bool:
    joined = " ".join(cmdline)
    if "ipykernel" in joined:
        return True
    names = [os.path.basename(a) for a in cmdline[:3]]
    return any(n in ("ipython", "ipython3") for n in names) or " -m IPython" in f" {joined}"


def _connection_file(cmdline: list[str]) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg in ("-f", "--f", "--KernelApp.connection_file") and i + 1 < len(cmdline):
            return cmdline[i + 1]
        for prefix in ("--f=", "-f=", "--KernelApp.connection_file="):
            if arg.startswith(prefix):
                return arg[len(prefix):]
    return None


def find_processes() -> list[KernelProcess]:
    """IPython and ipykernel processes of this user (not this one)."""
    import psutil

    me = os.getpid()
    uid = os.getuid() if hasattr(os, "getuid") else None
    user = None if uid is not None else psutil.Process(me).username()
    found = []
    attrs = ["pid", "cmdline", "create_time"] + (["uids"] if uid is not None else ["username"])
    for p in psutil.process_iter(attrs):
        try:
            info = p.info
            if info["pid"] == me or not info["cmdline"]:
                continue
            mine = (info["uids"] is not None and info["uids"].real == uid) if uid is not None \
                else info.get("username") == user
            if not mine or not _is_ipython(info["cmdline"]):
                continue
            kp = KernelProcess(info["pid"], info["cmdline"], info["create_time"],
                               _connection_file(info["cmdline"]))
            if kp.connection_file and not os.path.isabs(kp.connection_file):
                try:
                    kp.connection_file = os.path.join(p.cwd(), kp.connection_file)
                except (psutil.Error, OSError):
                    pass
            try:
                kp.notebook = p.environ().get("JPY_SESSION_NAME")
            except (psutil.Error, OSError):
                pass
            found.append(kp)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def open_databases(pid: int) -> list[tuple[str, str]]:
    """(target, /proc fd path) of every SQLite-looking file ``pid`` holds open, one per file."""
    fd_dir = Path(f"/proc/{pid}/fd")
    out, seen = [], set()
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return out
    for fd in fds:
        link = fd_dir / fd
        try:
            target = os.readlink(link)
            st = os.stat(link)
        except OSError:
            continue
        name = target[: -len(DELETED)] if target.endswith(DELETED) else target
        if not name.endswith(DB_SUFFIXES) or "history" not in os.path.basename(name):
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        out.append((target, str(link)))
    return out


def _stamp(t: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(t))


def copy_deleted(kp: KernelProcess, dest: Path) -> None:
    """Copy out every deleted history file ``kp`` holds open (the main file with its -wal)."""
    for target, link in open_databases(kp.pid):
        if not target.endswith(DELETED):
            kp.open_history.append(target)
            continue
        original = target[: -len(DELETED)]
        kp.deleted_history.append(original)
        base = os.path.basename(original)
        stem = base.split(".sqlite")[0]
        side = base[len(stem) + len(".sqlite"):] if ".sqlite" in base else ""
        out = dest / f"deleted-{stem}-pid{kp.pid}-{_stamp(kp.started)}.sqlite{side}"
        tmp = out.with_name(out.name + ".tmp")
        try:
            with open(link, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, out)
            if not side:
                kp.copied.append(out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            kp.problems.append(f"could not copy {original}: {exc}")


def fetch_memory_history(connection_file: str, timeout: float = 5.0) -> list[tuple[int, str, str | None]]:
    """(line, code, output) of the current session, from the kernel's memory."""
    from jupyter_client import BlockingKernelClient

    kc = BlockingKernelClient(connection_file=connection_file)
    kc.load_connection_file()
    kc.start_channels()
    try:
        msg_id = kc.history(raw=True, output=True, hist_access_type="range", session=0, start=1,
                            stop=None)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the kernel did not answer (busy running a cell, or gone)")
            reply = kc.get_shell_msg(timeout=remaining)
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                break
        content = reply["content"]
        if content.get("status") != "ok":
            raise RuntimeError(f"the kernel refused the history request: {content.get('evalue', content)}")
        out = []
        for _session, line, entry in content.get("history", []):
            code, output = (entry if isinstance(entry, (list, tuple)) else (entry, None))
            out.append((int(line), code or "", output))
        return out
    finally:
        kc.stop_channels()


def save_memory_history(kp: KernelProcess, cells, dest: Path) -> Path:
    """Write in-memory cells as a one-session IPython history database."""
    out = dest / f"live-pid{kp.pid}-{_stamp(kp.started)}.sqlite"
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        with conn:
            conn.execute("CREATE TABLE sessions (session integer primary key autoincrement, "
                         "start timestamp, end timestamp, num_cmds integer, remark text)")
            conn.execute("CREATE TABLE history (session integer, line integer, source text, "
                         "source_raw text, PRIMARY KEY (session, line))")
            conn.execute("CREATE TABLE output_history (session integer, line integer, output text, "
                         "PRIMARY KEY (session, line))")
            remark = f"in memory of live {kp.kind} pid {kp.pid}"
            if kp.notebook:
                remark += f", notebook {kp.notebook}"
            start = dt.datetime.fromtimestamp(kp.started).isoformat(" ")
            conn.execute("INSERT INTO sessions VALUES (1, ?, NULL, NULL, ?)", (start, remark))
            conn.executemany("INSERT OR REPLACE INTO history VALUES (1, ?, ?, ?)",
                             [(line, code, code) for line, code, _ in cells])
            conn.executemany("INSERT OR REPLACE INTO output_history VALUES (1, ?, ?)",
                             [(line, str(o)) for line, _, o in cells if o is not None])
    finally:
        conn.close()
    os.replace(tmp, out)
    return out


def scan(home=None, fetch_memory: bool = True, progress=None) -> tuple[list[KernelProcess], list[str]]:
    """Find live kernels, copy out deleted history, fetch in-memory history.

    Returns the processes and notes for the user. A kernel is asked for its
    history only through the connection file its own command line names, so a
    stale file in the runtime folder never costs a timeout.
    """
    dest = recovered_dir(home)
    dest.mkdir(parents=True, exist_ok=True)
    processes = find_processes()
    notes = []
    if not Path("/proc").is_dir():
        notes.append("this system has no /proc: deleted files held open by kernels cannot be read "
                     "here (Linux only); in-memory history is still fetched")
    by_file = {}
    for kp in processes:
        if progress:
            progress(f"looking at process {kp.pid}")
        copy_deleted(kp, dest)
        if kp.connection_file:
            by_file[os.path.realpath(kp.connection_file)] = kp
    if fetch_memory:
        for real, kp in by_file.items():
            if kp.kind != "kernel":
                continue
            if progress:
                progress(f"asking kernel {kp.pid} for its history")
            try:
                cells = fetch_memory_history(kp.connection_file)
            except Exception as exc:
                kp.problems.append(f"could not fetch its in-memory history: {exc}")
                continue
            kp.memory_cells = len(cells)
            if cells:
                kp.memory_copy = save_memory_history(kp, cells, dest)
    return processes, notes


def running_sessions(sessions, processes, window: float = 30.0) -> dict[int, KernelProcess]:
    """{id(session): process} for unfinished sessions a live process most likely started.

    IPython stores no pid: a session belongs to a process created at most ``window``
    seconds before it started (a kernel opens its session as it boots) that holds
    the session's database open (when that can be seen). Closest starts pair first.
    """
    pairs = []
    for kp in processes or []:
        visible = os.access(f"/proc/{kp.pid}/fd", os.R_OK)
        targets = [t for t, _ in open_databases(kp.pid)]
        held = {os.path.realpath(t) for t in targets if not t.endswith(DELETED)}
        holds_deleted = any(t.endswith(DELETED) for t in targets)
        for s in sessions:
            if s.end is not None or s.start is None or s.remark:  # remark: one of our own snapshots
                continue
            # Where open files can be seen, a kernel writing history holds its database
            # open: this one, or a deleted one (and then the session comes from a copy).
            if visible and os.path.realpath(s.db.path) not in held and not holds_deleted:
                continue
            gap = s.start.timestamp() - kp.started
            if -2 <= gap <= window:
                pairs.append((abs(gap), kp.pid, id(s), kp))
    out: dict[int, KernelProcess] = {}
    used = set()
    for _gap, pid, sid, kp in sorted(pairs, key=lambda p: p[:3]):
        if sid not in out and pid not in used:
            out[sid] = kp
            used.add(pid)
    return out
