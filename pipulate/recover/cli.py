"""``pipulate recover ...``: find lost notebook code and turn it back into a notebook.

Heavy imports stay inside the functions so ``pipulate --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
import time

SESSION_HELP = "a session number from `pipulate recover sessions` (12, or 2:12 for database 2), or `last`"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Bring back notebook code that was lost: from IPython's history database, Jupyter "
        "checkpoints, running kernels and the workstation's saved notebook versions. "
        "Nothing here modifies the files it reads.")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="recover_command", metavar="WHAT")

    dbs = argparse.ArgumentParser(add_help=False)
    dbs.add_argument("--db", action="append", metavar="PATH",
                     help="read this history database (repeatable) instead of the defaults: "
                          "$IPYTHONDIR (or ~/.ipython)/profile_*/history*.sqlite, with corrupt and "
                          "old copies beside it, and those `recover live` saved")

    p = sub.add_parser("sessions", parents=[dbs], help="list history sessions, oldest first",
                       description="History sessions (one per kernel start): start, end, cells, first line.")
    p.add_argument("--since", metavar="T", help="started at or after T (2024-05-01, '2024-05-01 14:30', "
                                                "today, yesterday, 90m, 2h, 3d)")
    p.add_argument("--until", metavar="T", help="started at or before T")
    p.add_argument("--all", action="store_true", help="include sessions that ran no code")
    p.set_defaults(func=cmd_sessions)

    p = sub.add_parser("show", parents=[dbs], help="print the code of one session")
    p.add_argument("session", metavar="S", help=SESSION_HELP)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("search", parents=[dbs], help="find code containing TEXT in every session")
    p.add_argument("text", metavar="TEXT")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("export", parents=[dbs], help="write a session as a notebook or percent script",
                       description="One cell per execution, magics as typed, outputs where the "
                                   "database has them.")
    p.add_argument("session", metavar="S", help=SESSION_HELP)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="FILE.ipynb (nbformat 4.5) or FILE.py (jupytext percent script)")
    p.add_argument("--dedupe", action="store_true", help="drop re-runs of identical cells, keeping the last")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("checkpoints", help="Jupyter checkpoints that differ from their notebook",
                       description="Checkpoint copies (.ipynb_checkpoints) under DIR that differ from "
                                   "their notebook or whose notebook is gone, newest first.")
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="folder to scan (default: here)")
    p.add_argument("--restore", metavar="N", help="restore checkpoint N of the listing (or a checkpoint path)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the restored notebook here instead of over the notebook "
                        "(which is otherwise backed up first)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=cmd_checkpoints)

    p = sub.add_parser("live", help="rescue history from running kernels",
                       description="Find this user's running IPython kernels, copy out any history "
                                   "database they hold open that was deleted, and fetch the code they "
                                   "hold in memory. Copies go to <PIPULATE_HOME>/recovered/, which the "
                                   "other commands read.")
    p.add_argument("--no-fetch", action="store_true", help="do not contact kernels for in-memory history")
    p.set_defaults(func=cmd_live)

    p = sub.add_parser("versions", help="saved versions of a notebook; restore one",
                       description="Every version of a notebook saved through the workstation's "
                                   "Jupyter server, newest first. Without NOTEBOOK: the notebooks "
                                   "that have saved versions (deleted ones too).")
    p.add_argument("notebook", nargs="?", metavar="NOTEBOOK")
    p.add_argument("--restore", metavar="ID", type=int, help="restore version ID")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the restored version here instead of over the notebook "
                        "(which is otherwise backed up first)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("match", parents=[dbs], help="the sessions most likely to belong to a notebook",
                       description="Rank history sessions by how well they fit NOTEBOOK: shared cells "
                                   "and lines, times, and live kernels naming it.")
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("--top", type=int, default=5, metavar="N", help="show the best N (default 5)")
    p.set_defaults(func=cmd_match)


# --- helpers ---------------------------------------------------------------------


class Progress:
    """One overwritten status line on a terminal's stderr for long scans; silent otherwise."""

    def __init__(self):
        self.enabled = sys.stderr.isatty()
        self.shown = False
        self._last = 0.0

    def __call__(self, text: str) -> None:
        if not self.enabled or time.monotonic() - self._last < 0.2:
            return
        self._last = time.monotonic()
        sys.stderr.write("\r\033[K" + text[:120])
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _history(args):
    from .history import History

    return History(args.db)


def _warn(history) -> None:
    if not history.usable:
        return  # require_any() raises with the same sentences
    for problem in history.problems():
        print(f"note: {problem}", file=sys.stderr)


def _print_databases(history) -> None:
    usable = history.usable
    if len(usable) > 1:
        print("history databases:")
        for db in usable:
            print(f"  [{db.label}] {db.path}")
        print()


def _describe(session) -> str:
    return f"session {session.ref} of {session.db.path}"


# --- commands ----------------------------------------------------------------------


def cmd_sessions(args) -> int:
    from .history import fmt_time, parse_when

    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until, end_of_day=True) if args.until else None
    with _history(args) as history:
        _warn(history)
        history.require_any()
        all_sessions = history.sessions(since, until, include_empty=True)
        shown = all_sessions if args.all else [s for s in all_sessions if s.cell_count > 0]
        _print_databases(history)
        if not shown:
            print("no sessions" + (" in that time" if since or until else "") + ".")
            return 0
        running = {}
        try:
            from .live import find_processes, running_sessions

            running = running_sessions(shown, find_processes())
        except Exception:  # knowing which kernels still run is a bonus, never a failure
            pass
        print(f"{'SESSION':>8}  {'START':19}  {'END':19}  {'CELLS':>5}  FIRST LINE")
        for s in shown:
            end = fmt_time(s.end, "did not end")
            first = s.first_line
            kp = running.get(id(s))
            if kp is not None:
                end = f"running, pid {kp.pid}"
                if kp.notebook:
                    first = f"[{kp.notebook}] {first}"
            if s.remark:  # e.g. "in memory of live kernel pid 12, notebook work/a.ipynb"
                first = f"[{s.remark}] {first}"
            first = first if len(first) <= 90 else first[:87] + "..."
            print(f"{s.ref:>8}  {fmt_time(s.start, '?'):19}  {end:19}  {s.cell_count:>5}  {first}")
        hidden = len(all_sessions) - len(shown)
        if hidden:
            print(f"({hidden} sessions that ran no code are hidden; --all shows them)")
        print("times are local. `pipulate recover show S` prints one; "
              "`pipulate recover export S -o FILE.ipynb` makes it a notebook.")
    return 0


def cmd_show(args) -> int:
    from .history import fmt_time

    with _history(args) as history:
        _warn(history)
        s = history.session(args.session)
        end = f"ended {fmt_time(s.end)}" if s.end else "did not end (killed, or still running)"
        print(f"# {_describe(s)}")
        print(f"# started {fmt_time(s.start, '?')}, {end}, {s.cell_count} cells"
              + (f"; {s.remark}" if s.remark else ""))
        for cell in s.cells():
            print(f"\n# --- [{cell.line}] ---")
            print(cell.code)
            if cell.output is not None:
                print(f"# Out[{cell.line}]: {cell.output}")
    return 0


def cmd_search(args) -> int:
    from .history import fmt_time

    progress = Progress()
    with _history(args) as history:
        _warn(history)
        history.require_any()
        try:
            hits = history.search(args.text, progress)
        finally:
            progress.done()
        if not hits:
            print(f"no code containing {args.text!r} in {len(history.usable)} history database(s).")
            return 1
        needle = args.text.lower()
        for cell in hits:
            lines = [ln for ln in cell.code.splitlines() if needle in ln.lower()] or [cell.code.strip()]
            print(f"{cell.session.ref}/{cell.line}  {fmt_time(cell.session.start, '?')}  {lines[0].strip()}")
            for more in lines[1:3]:
                print(f"{'':>{len(cell.session.ref) + len(str(cell.line)) + 22}}{more.strip()}")
        sessions = {c.session.ref for c in hits}
        print(f"{len(hits)} cells in {len(sessions)} sessions (SESSION/LINE); "
              "`pipulate recover show SESSION` prints a whole session.")
    return 0


def cmd_export(args) -> int:
    from .export import check_output_path, to_notebook, write_notebook

    check_output_path(args.output, args.force)  # fail before reading anything
    with _history(args) as history:
        _warn(history)
        s = history.session(args.session)
        cells = s.cells()
        if not any(c.code.strip() for c in cells):
            from .history import RecoveryError

            raise RecoveryError(f"{_describe(s)} ran no code; nothing to export")
        nb = to_notebook(cells, f"{_describe(s)}", dedupe=args.dedupe)
        out = write_notebook(nb, args.output, args.force)
    outputs = sum(1 for c in nb.cells if c.outputs)
    print(f"wrote {out}: {len(nb.cells)} cells from {_describe(s)}"
          + (f", {outputs} with outputs" if outputs else ""))
    return 0


def cmd_checkpoints(args) -> int:
    from . import checkpoints
    from .export import restore_bytes

    progress = Progress()
    try:
        found = checkpoints.scan(args.dir, progress)
    finally:
        progress.done()
    if args.restore:
        cp = checkpoints.pick(found, args.restore)
        written, backup = restore_bytes(cp.path.read_bytes(), cp.notebook, args.output, args.force)
        if backup:
            print(f"backed up the current {cp.notebook} to {backup}")
        print(f"restored {cp.path} to {written}")
        return 0
    if not found:
        print(f"no checkpoint under {args.dir} differs from its notebook.")
        return 0
    print(f"{'N':>3}  {'SAVED':19}  {'STATUS':13}  NOTEBOOK  (checkpoint content)")
    for i, cp in enumerate(found, 1):
        print(f"{i:>3}  {cp.saved:19}  {cp.status:13}  {cp.notebook}  ({cp.detail})")
    print("`pipulate recover checkpoints DIR --restore N [-o FILE]` restores one "
          "(without -o the current notebook is backed up first).")
    return 0


def cmd_live(args) -> int:
    from ..display import local_time
    from . import live

    progress = Progress()
    try:
        processes, notes = live.scan(fetch_memory=not args.no_fetch, progress=progress)
    finally:
        progress.done()
    for note in notes:
        print(f"note: {note}")
    if not processes:
        print("no running IPython kernels or IPython shells of this user were found.")
        return 0
    rescued = 0
    for kp in processes:
        title = f"{kp.kind} pid {kp.pid}, started {local_time(kp.started)}"
        if kp.notebook:
            title += f", notebook {kp.notebook}"
        print(title)
        for path in kp.open_history:
            print(f"  history database in use: {path} (still on disk)")
        for path in kp.deleted_history:
            print(f"  history database was DELETED but is still open: {path}")
        for path in kp.copied:
            print(f"  -> copied it to {path}")
            rescued += 1
        if kp.memory_cells is not None:
            print(f"  {kp.memory_cells} cells of this session are in the kernel's memory"
                  + (f" -> saved to {kp.memory_copy}" if kp.memory_copy else ""))
            rescued += bool(kp.memory_copy)
        if not (kp.open_history or kp.deleted_history or kp.memory_cells is not None):
            print("  holds no history database open and was not asked for its history")
        for problem in kp.problems:
            print(f"  problem: {problem}")
    if rescued:
        print("\n`pipulate recover sessions` now lists what was saved; "
              "`pipulate recover export S -o FILE.ipynb` makes a notebook of it.")
    else:
        print("\nnothing needed rescuing: no deleted history was open and no kernel could be asked.")
    return 0


def cmd_versions(args) -> int:
    import json
    from pathlib import Path

    from .export import restore_bytes
    from .history import RecoveryError, fmt_time, parse_time
    from .versions import NotebookVersions, notebook_key

    store = NotebookVersions()
    try:
        if args.restore is not None:
            version = store.get(args.restore)
            if args.notebook and notebook_key(args.notebook) != version.notebook:
                raise RecoveryError(f"version {args.restore} belongs to {version.notebook}, "
                                    f"not {notebook_key(args.notebook)}")
            data = store.data(version)
            written, backup = restore_bytes(data, Path(version.notebook), args.output, args.force)
            if backup:
                print(f"backed up the current {version.notebook} to {backup}")
            print(f"restored version {version.id} (saved {fmt_time(version.saved)}) to {written}")
            return 0
        if not args.notebook:
            notebooks = store.notebooks()
            if not notebooks:
                print("no saved notebook versions yet: the workstation's Jupyter server keeps one "
                      "each time a notebook is saved.")
                return 0
            print(f"{'VERSIONS':>8}  {'LAST SAVED':19}  NOTEBOOK")
            for path, count, last in notebooks:
                gone = "" if Path(path).exists() else "  (file is gone)"
                print(f"{count:>8}  {fmt_time(parse_time(last)):19}  {path}{gone}")
            return 0
        versions = store.list(args.notebook)
        if not versions:
            raise RecoveryError(f"no saved versions of {notebook_key(args.notebook)}; "
                                "`pipulate recover versions` lists the notebooks that have some")
        print(f"{'ID':>6}  {'SAVED':19}  {'BYTES':>9}  CELLS")
        for v in versions:
            try:
                cells = json.loads(store.data(v)).get("cells", [])
                kinds = {}
                for c in cells:
                    kinds[c.get("cell_type", "?")] = kinds.get(c.get("cell_type", "?"), 0) + 1
                summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "empty"
            except Exception as exc:
                summary = f"unreadable ({exc})"
            print(f"{v.id:>6}  {fmt_time(v.saved):19}  {v.size:>9}  {summary}")
        print("`pipulate recover versions NOTEBOOK --restore ID [-o FILE]` restores one "
              "(without -o the current notebook is backed up first).")
        return 0
    finally:
        store.close()


def cmd_match(args) -> int:
    from . import live, match
    from .history import fmt_time

    processes = []
    try:
        processes = live.find_processes()
    except Exception:
        pass
    with _history(args) as history:
        _warn(history)
        found, where = match.rank(args.notebook, history, processes, top=args.top)
        print(f"matched against the code of {', '.join(where)}")
        if not found:
            print("no session ran any of this notebook's code.")
            return 1
        print(f"{'SCORE':>5}  {'SESSION':>8}  {'START':19}  {'CELLS':>5}  WHY")
        for m in found:
            s = m.session
            print(f"{m.score:>5.0f}  {s.ref:>8}  {fmt_time(s.start, '?'):19}  {s.cell_count:>5}  {m.reasons()}")
        best = found[0].session
        print(f"`pipulate recover export {best.ref} -o FILE.ipynb` makes the best one a notebook.")
    return 0
