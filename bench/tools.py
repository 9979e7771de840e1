"""One benchmark worker: one tool, one workload, one phase, in a fresh process.

    python bench/tools.py --tool pipulate --workload pandas --phase save --dir D [--rows N]
    python bench/tools.py --tool pipulate --workload pandas --phase restore --dir D
    python bench/tools.py --tool pipulate --workload pandas --phase restore-cold --dir D

Cells run in an in-process IPython ``InteractiveShell`` (the same ``run_cell``,
events and hooks a kernel uses). Each tool saves the way its users run it:

- ``pipulate``: ``%load_ext pipulate`` (its post_run_cell hook; restore = loading
  the extension in a fresh shell, which restores by itself);
- ``pickle``: after each cell, ``pickle.dump`` of every user variable to one file
  (the Digital Article design), unpicklable ones left out;
- ``dill``: after each cell, ``dill.dump_module`` of the namespace (when a value
  cannot be pickled, the dump is retried without the values ``dill.dumps``
  refuses - a courtesy dill itself does not offer);
- ``store``: IPython's ``%store NAME`` for each variable the cell assigned or
  changed (restore = ``%store -r``);
- ``kishu``: ``KishuForJupyter`` attached to the shell as ``init_kishu`` does,
  headless (Kishu's test mode: no JupyterLab front end to save the notebook);
  restore = ``checkout`` of the last commit in a fresh shell;
- ``none``: no tool (the cells' own run time).

A tool may save in a background thread: after the cells it is asked to
``flush`` (wait until every queued save is committed; pipulate:
``current(ip).flush()`` when the extension has it, a no-op for tools that save
inside their hook). What is recorded, so that work done off the hooks is counted:

- per cell: ``total`` (wall time of ``run_cell``: the cell, its hooks and
  whatever a background save slows it by), ``hook`` (time inside the tool's
  hooks, measured by callbacks registered before and after the tool's own;
  IPython calls them in order), ``flush`` (the flush after that cell, when one
  was made);
- ``window``: the wall time from the start of the measured cells to the end of
  the last one (no pause between cells: the garbage collector is run once
  before, not between cells, so a background saver gets no untimed time),
  the final flush, and the process's ``wchar`` (``/proc/self/io``: every byte
  any thread passed to ``write()``) over the cells and the final flush.

Flushes: ``big`` flushes after every cell (the set-up cell's save is the
"first save", each small cell's save is timed until durable); ``pandas`` and
``catalog`` only after the last cell. The process always flushes before it
exits, so a restore (a fresh process) sees every save. The result is one JSON
line after ``BENCHJSON:``.
"""
from __future__ import annotations

import argparse
import ast
import gc
import json
import os
import pickle
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

NOTEBOOK = "bench.ipynb"
SKIP_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open", "_kishu"}


def wchar() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def user_names(ip) -> list[str]:
    hidden = ip.user_ns_hidden
    return [n for n, v in list(ip.user_ns.items())
            if isinstance(n, str) and not n.startswith("_") and n not in SKIP_NAMES
            and not (n in hidden and hidden[n] is v)]


def user_vars(ip, modules: bool = False) -> dict:
    out = {}
    for n in user_names(ip):
        v = ip.user_ns[n]
        if issubclass(type(v), types.ModuleType) and not modules:
            continue
        out[n] = v
    return out


def make_shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # no history.sqlite, no history-saving thread: no writes of IPython's
    return InteractiveShell.instance(config=config)


# --- tools ---------------------------------------------------------------------------


class Tool:
    name = "none"

    def __init__(self, d: Path):
        self.dir = d

    def attach(self, ip) -> None:
        pass

    def restore(self, ip, info: dict) -> None:
        pass

    def info(self) -> dict:
        return {}

    def flush(self, ip) -> bool:
        """Wait until every save is committed; False if the tool saves inside its hooks (nothing to wait for)."""
        return False


class Pipulate(Tool):
    name = "pipulate"

    def attach(self, ip):
        ip.run_line_magic("load_ext", "pipulate")

    def flush(self, ip):
        from pipulate.kernel_state.extension import current

        flush = getattr(current(ip), "flush", None)  # saves in the background once the extension has it
        if flush is None:
            return False
        flush()
        return True

    def restore(self, ip, info):
        ip.run_line_magic("load_ext", "pipulate")  # a fresh shell: restores on load


class PickleWhole(Tool):
    name = "pickle"

    def attach(self, ip):
        self.ip = ip
        self.bad: dict[str, int] = {}  # name -> id of a value that cannot be pickled
        self.path = self.dir / "namespace.pkl"
        ip.events.register("post_run_cell", self.post_run_cell)

    def post_run_cell(self, result):
        if not result.success:
            return
        values = {n: v for n, v in user_vars(self.ip).items() if self.bad.get(n) != id(v)}
        try:
            data = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            for n, v in list(values.items()):
                try:
                    pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:
                    self.bad[n] = id(v)
                    del values[n]
            data = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
        with open(self.path, "wb") as f:
            f.write(data)

    def restore(self, ip, info):
        with open(self.dir / "namespace.pkl", "rb") as f:
            ip.user_ns.update(pickle.load(f))


class DillModule(Tool):
    name = "dill"

    def attach(self, ip):
        import dill

        self.dill = dill
        self.ip = ip
        self.path = self.dir / "session.dill"
        ip.events.register("post_run_cell", self.post_run_cell)

    def post_run_cell(self, result):
        if not result.success:
            return
        try:
            self.dill.dump_module(str(self.path), module=self.ip.user_module, refimported=True)
        except Exception:
            module = types.ModuleType("__main__")
            for n, v in user_vars(self.ip, modules=True).items():
                try:
                    self.dill.dumps(v)
                except Exception:
                    continue
                setattr(module, n, v)
            self.dill.dump_module(str(self.path), module=module, refimported=True)

    def restore(self, ip, info):
        import dill

        dill.load_module(str(self.dir / "session.dill"), module=ip.user_module)


def assigned_names(source: str) -> set[str]:
    """Names a cell binds or visibly changes (x = ..., x[...] = ..., x.attr = ..., x.method(...))."""
    names: set[str] = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return names

    def root(node):
        while isinstance(node, (ast.Subscript, ast.Attribute, ast.Starred)):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func,
                                                                                             ast.Attribute):
            targets = [node.value.func.value]
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, (ast.Name, ast.Subscript, ast.Attribute)):
                    r = root(sub)
                    if r:
                        names.add(r)
    return names


class IPythonStore(Tool):
    name = "store"

    def attach(self, ip):
        ip.extension_manager.load_extension("storemagic")
        self.ip = ip
        self.before: dict[str, int] = {}
        ip.events.register("pre_run_cell", self.pre_run_cell)
        ip.events.register("post_run_cell", self.post_run_cell)

    def pre_run_cell(self, info):
        self.before = {n: id(v) for n, v in user_vars(self.ip).items()}

    def post_run_cell(self, result):
        if not result.success:
            return
        now = user_vars(self.ip)
        changed = {n for n, v in now.items() if self.before.get(n) != id(v)}
        changed |= assigned_names(result.info.raw_cell or "") & set(now)
        for n in sorted(changed):
            try:
                self.ip.run_line_magic("store", n)
            except Exception:
                pass  # %store prints its own error for values it cannot pickle

    def restore(self, ip, info):
        ip.extension_manager.load_extension("storemagic")
        ip.run_line_magic("store", "-r")


class Kishu(Tool):
    name = "kishu"

    def _make(self, ip):
        import nbformat
        from kishu.jupyterint import KishuForJupyter
        from kishu.notebook_id import NotebookId

        nb = self.dir / NOTEBOOK
        if not nb.exists():
            nbformat.write(nbformat.v4.new_notebook(), nb)
        return KishuForJupyter(NotebookId(key="bench", path=nb, kernel_id="bench-kernel"), ip=ip)

    def attach(self, ip):
        self.kishu = self._make(ip)
        self.kishu.install_kishu_hooks()

    def info(self):
        return {"commit": self.kishu._kishu_branch.get_head().commit_id}

    def restore(self, ip, info):
        kishu = self._make(ip)
        kishu.install_kishu_hooks()
        kishu.checkout(info["commit"], skip_notebook=True)


TOOLS = {t.name: t for t in (Tool, Pipulate, PickleWhole, DillModule, IPythonStore, Kishu)}


# The workloads of --size-mib bytes, a set-up cell and then --cells small ones.
SIZED = ("big", "containers")


def cells_for(args) -> list[str]:
    if args.workload == "big":
        return workloads.big_cells(args.size_mib, args.cells)
    if args.workload == "containers":
        return workloads.container_cells(args.size_mib, args.cells)
    if args.workload == "pandas":
        return workloads.pandas_cells(args.rows)
    return workloads.catalog_cells()


def set_env(d: Path) -> None:
    os.environ["IPYTHONDIR"] = str(d / "ipython")
    os.environ["PIPULATE_HOME"] = str(d / "pipulate")
    os.environ["PIPULATE_NOTEBOOK"] = NOTEBOOK
    os.environ["KISHU_PATH_ROOT"] = str(d)
    os.environ["ENV_KISHU_TEST_MODE"] = "1"


def run_save(tool: Tool, args) -> dict:
    import numpy  # noqa: F401  imported before the cells, so no cell's time is an import
    import pandas  # noqa: F401

    ip = make_shell()
    marks: dict[str, float] = {}

    def at(key):
        def cb(*_):
            marks[key] = time.perf_counter()
        return cb

    ip.events.register("pre_run_cell", at("pre0"))
    ip.events.register("post_run_cell", at("post0"))
    tool.attach(ip)
    ip.events.register("pre_run_cell", at("pre1"))
    ip.events.register("post_run_cell", at("post1"))

    def flush() -> float:
        """Seconds until the tool's saves are committed; exactly 0 for a tool that saves inside its hooks."""
        t = time.perf_counter()
        waited = tool.flush(ip)
        return time.perf_counter() - t if waited else 0.0

    cells = []
    catalog = args.workload == "catalog"
    flush_every_cell = args.workload in SIZED
    first = 1 if args.workload in SIZED else 0  # the measured window: big's small cells, all cells otherwise
    expected: dict[str, str] = {}
    hook_failed = []
    shown = ip.showtraceback
    if catalog:  # IPython reports a failing hook with showtraceback; the cell still succeeds
        def showtraceback(*a, **k):
            hook_failed.append(True)
            return shown(*a, **k)
        ip.showtraceback = showtraceback
    sources = cells_for(args)
    gc.collect()  # once: not between cells, where a background save would get untimed time
    window_t0 = window_io0 = None
    for i, source in enumerate(sources):
        if i == first:
            window_t0, window_io0 = time.perf_counter(), wchar()
        hook_failed.clear()
        t0 = time.perf_counter()
        result = ip.run_cell(source, store_history=True)
        total = time.perf_counter() - t0
        if not result.success:
            err = result.error_in_exec or result.error_before_exec
            raise SystemExit(f"cell failed under {tool.name}: {source[:60]!r}: {err!r}")
        if catalog:
            name = source.split(" = ", 1)[0]
            expected[name] = workloads.type_name(ip.user_ns[name])
            if hook_failed:  # the tool cannot save it: the user deletes it and goes on
                ip.run_cell(f"del {name}")
        hook = (marks["pre1"] - marks["pre0"]) + (marks["post1"] - marks["post0"])
        last = i == len(sources) - 1
        if last:
            window_seconds = time.perf_counter() - window_t0
        flushed = flush() if flush_every_cell or i < first or last else None
        cells.append({"total": total, "hook": hook, "cell": total - hook, "flush": flushed})
    # seconds: start of the first measured cell to the end of the last one (big: with the flushes after
    # each small cell but the last); flush: the one after the last cell; bytes: both, final flush included
    window = {"from": first, "cells": len(sources) - first, "seconds": window_seconds,
              "flush": cells[-1]["flush"], "bytes": wchar() - window_io0}
    names = user_names(ip)
    types_ = expected if catalog else {n: workloads.type_name(ip.user_ns[n]) for n in names}
    return {"cells": cells, "window": window, "types": types_, "info": tool.info(), "disk": disk_usage(tool.dir)}


def disk_usage(d: Path) -> int:
    """Bytes the tool keeps on disk (IPython's profile counts only for its %store db)."""
    total = 0
    for p in d.rglob("*"):
        parts = p.relative_to(d).parts
        if parts[0] in ("saved.json", NOTEBOOK) or (parts[0] == "ipython" and "db" not in parts):
            continue
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def drop_from_page_cache(d: Path, rounds: int = 3) -> None:
    """Make every file under ``d`` (all a tool saved: its store, IPython's db, Kishu's
    folder) be read from the disk again, without root: written back first (``sync``),
    then ``POSIX_FADV_DONTNEED``. More than once: a restore process that just exited may
    have asked for read-ahead (pipulate's exit prefetch) that lands after the first pass.
    The code (Python, numpy, pandas) stays cached, for every tool alike."""
    os.sync()
    for n in range(rounds):
        if n:
            time.sleep(0.3)
        for root, _dirs, files in os.walk(d):
            for name in files:
                try:
                    fd = os.open(os.path.join(root, name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                except OSError:  # advice only; a file system that does not take it stays warm
                    pass
                finally:
                    os.close(fd)


def run_restore(tool: Tool, args, expected: dict, info: dict) -> dict:
    import numpy  # noqa: F401  every tool needs them; not part of the timed restore
    import pandas  # noqa: F401

    if tool.name == "pipulate":
        import pipulate.kernel_state.extension  # noqa: F401
    elif tool.name == "kishu":
        import kishu.jupyterint  # noqa: F401
    elif tool.name == "dill":
        import dill  # noqa: F401
    ip = make_shell()
    gc.collect()
    t0 = time.perf_counter()
    failure = None
    try:
        tool.restore(ip, info)
    except Exception as exc:  # counted as restoring what it managed to (usually nothing)
        failure = f"{type(exc).__name__}: {str(exc)[:120]}"
    seconds = time.perf_counter() - t0
    right = [n for n, t in expected.items() if n in ip.user_ns and workloads.type_name(ip.user_ns[n]) == t]
    wrong = [n for n, t in expected.items() if n in ip.user_ns and workloads.type_name(ip.user_ns[n]) != t]
    return {"seconds": None if failure else seconds, "failure": failure, "right": len(right), "wrong": wrong, "expected": len(expected),
            "missing": sorted(set(expected) - set(ip.user_ns))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tool", choices=sorted(TOOLS), required=True)
    p.add_argument("--workload", choices=[*SIZED, "pandas", "catalog"], required=True)
    p.add_argument("--phase", choices=["save", "restore", "restore-cold"], required=True,
                   help="restore-cold: drop the saved files from the page cache first, as after a reboot")
    p.add_argument("--dir", required=True)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--cells", type=int, default=5, help="small-change cells after the 1 GiB set-up")
    p.add_argument("--rows", type=int, default=1_000_000)
    args = p.parse_args(argv)
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    set_env(d)
    sys.path.insert(0, str(ROOT))
    tool = TOOLS[args.tool](d)
    if args.phase == "save":
        out = run_save(tool, args)
        (d / "saved.json").write_text(json.dumps({"types": out["types"], "info": out["info"]}))
    else:
        saved = json.loads((d / "saved.json").read_text())
        if args.phase == "restore-cold":
            drop_from_page_cache(d)
        out = run_restore(tool, args, saved["types"], saved["info"])
    sys.stdout.flush()
    print("BENCHJSON:" + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
