"""Kernel-state persistence against what users have without it.

Workload: a namespace of about SIZE MiB (three float64 arrays and a float
DataFrame, in equal parts) plus small variables; a "cell" that changes one
small variable. Prints medians (seconds) and ratios:

1. per-cell save: ours vs pickling the whole namespace after every cell (how
   the Digital Article design persists state) - goal >= 20x faster;
2. the same vs ``dill.dump_module`` (what users do by hand);
3. a full save of the namespace vs writing the same bytes with one plain
   file write + fsync - goal >= 0.7 of that speed;
4. restoring the namespace vs ``pickle.load`` of it - goal >= 1.0x.

    .venv/bin/python bench/bench_kernel_state.py                  # 1 GiB
    .venv/bin/python bench/bench_kernel_state.py --size-mib 256   # smoke run
    PIPULATE_BENCH_SIZE_MIB=128 .venv/bin/python bench/bench_kernel_state.py

The baselines are given the benefit of the doubt: whole-namespace pickles are
written without fsync (ours fsyncs every blob and commits SQLite with
synchronous=FULL). Everything runs on the page cache of one machine; the
machine is shared, so each figure is a median of several runs.
"""
from __future__ import annotations

import argparse
import gc
import os
import pickle
import platform
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_namespace(size_mib: int) -> dict:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(42)
    part = size_mib * 1024 * 1024 // 4
    n = part // 8
    cols = 8
    ns = {
        "np": np, "pd": pd,
        "a": rng.random(n), "b": rng.random(n), "c": rng.standard_normal(n),
        "df": pd.DataFrame({f"col{i}": rng.random(n // cols) for i in range(cols)}),
        "counter": 0,
        "config": {"name": "run", "threshold": 0.5, "tags": ["x", "y"]},
        "labels": [f"label{i}" for i in range(1000)],
        "title": "benchmark",
    }
    ns["__name__"] = "__main__"
    return ns


def timed(fn, repeat: int, setup=None, settle: bool = False) -> list[float]:
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        gc.collect()
        if settle:
            os.sync()  # start with no dirty pages queued from earlier writes
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def interleaved(pairs: dict, repeat: int) -> dict[str, list[float]]:
    """Time several (fn, setup) alternately, so drift on a shared machine hits all alike."""
    out: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(repeat):
        for name, (fn, setup) in pairs.items():
            out[name].extend(timed(fn, 1, setup, settle=True))
    return out


def user_vars(ns: dict) -> dict:
    return {k: v for k, v in ns.items() if not k.startswith("__") and not isinstance(v, types.ModuleType)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}; {platform.system()} {platform.release()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=int(os.environ.get("PIPULATE_BENCH_SIZE_MIB", 1024)))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("PIPULATE_BENCH_REPEAT", 5)),
                        help="runs per figure (at least 3; dill.dump_module gets half)")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)

    import dill

    from pipulate.kernel_state import KernelStateStore
    from pipulate.kernel_state.restoring import restore
    from pipulate.kernel_state.saving import Saver

    scratch = Path(tempfile.mkdtemp(prefix="pipulate-bench-", dir=args.dir))
    big_repeat = max(3, args.repeat)
    try:
        print(f"machine: {machine()}")
        print(f"scratch: {scratch}")
        ns = build_namespace(args.size_mib)
        total = sum(v.nbytes for v in (ns["a"], ns["b"], ns["c"])) + int(ns["df"].memory_usage().sum())
        print(f"namespace: {total / 2**20:.0f} MiB in 3 arrays + 1 DataFrame, plus small variables\n")
        results: dict[str, list[float]] = {}

        # --- full save (fresh store each time) vs plain write + fsync --------------
        home = scratch / "home"

        def fresh_store():
            if fresh_store.ks is not None:
                fresh_store.ks.close()
            shutil.rmtree(home, ignore_errors=True)
            fresh_store.ks = KernelStateStore(home)

        def full_save():
            Saver(fresh_store.ks, "bench.ipynb", "bench.ipynb").save(ns, full=True)

        raw_path = scratch / "raw.bin"
        buffers = [memoryview(ns[k]).cast("B") for k in ("a", "b", "c")] + [
            memoryview(ns["df"][c].to_numpy()).cast("B") for c in ns["df"].columns]

        def plain_write():
            with open(raw_path, "wb") as f:
                for b in buffers:
                    f.write(b)
                f.flush()
                os.fsync(f.fileno())

        def no_raw():
            raw_path.unlink(missing_ok=True)

        fresh_store.ks = None
        results.update(interleaved({"full save (ours)": (full_save, fresh_store),
                                    "plain write+fsync": (plain_write, no_raw)}, big_repeat))
        raw_path.unlink(missing_ok=True)
        fresh_store.ks.close()

        # --- per-cell save after a small change -----------------------------------------
        ks = KernelStateStore(home / "percell")
        saver = Saver(ks, "bench.ipynb", "bench.ipynb")
        saver.save(ns, full=True)

        def cell():
            ns["counter"] += 1
            saver.save(ns, cell="counter += 1")

        def cell_full_check():
            ns["counter"] += 1
            saver.save(ns, cell=None)  # a cell we cannot read: every big value re-hashed

        results["per-cell save (ours)"] = timed(cell, args.repeat, settle=True)
        results["per-cell save, full check (ours)"] = timed(cell_full_check, args.repeat, settle=True)

        pickle_path = scratch / "namespace.pkl"

        def pickle_all():
            ns["counter"] += 1
            with open(pickle_path, "wb") as f:
                pickle.dump(user_vars(ns), f, protocol=pickle.HIGHEST_PROTOCOL)

        results["pickle whole namespace"] = timed(pickle_all, args.repeat, settle=True)

        module = types.ModuleType("bench_session")
        module.__dict__.update(user_vars(ns))
        module.np, module.pd = ns["np"], ns["pd"]
        sys.modules["bench_session"] = module
        dill_path = scratch / "session.dill"

        def dill_all():
            module.counter += 1
            dill.dump_module(str(dill_path), module=module, refimported=True)

        results["dill.dump_module"] = timed(dill_all, max(2, args.repeat // 2), settle=True)
        dill_path.unlink(missing_ok=True)

        # --- restore vs pickle.load --------------------------------------------------------
        def ours_restore():
            target: dict = {}
            res = restore(ks, "bench.ipynb", target)
            assert not res.failed, res.failed
            ours_restore.last = target

        def pickle_restore():
            with open(pickle_path, "rb") as f:
                pickle_restore.last = pickle.load(f)

        def drop():
            ours_restore.last = pickle_restore.last = None

        ours_restore.last = pickle_restore.last = None
        results.update(interleaved({"restore (ours)": (ours_restore, drop),
                                    "pickle.load": (pickle_restore, drop)}, big_repeat))
        drop()
        ks.close()

        med = {k: statistics.median(v) for k, v in results.items()}
        low = {k: min(v) for k, v in results.items()}
        width = max(map(len, med))
        print(f"  {'seconds'.ljust(width)}     median       min  runs")
        for k, v in med.items():
            print(f"  {k.ljust(width)}  {v:9.4f} {low[k]:9.4f}  {len(results[k])}")

        def ratio(a, b):
            return med[a] / med[b], low[a] / low[b]

        print("\nratios (of medians; of minimums in brackets):")
        lines = [
            ("per-cell save vs pickling the whole namespace", "pickle whole namespace", "per-cell save (ours)",
             "x faster  (goal >= 20x)"),
            ("  the same, every big value re-hashed", "pickle whole namespace",
             "per-cell save, full check (ours)", "x faster"),
            ("per-cell save vs dill.dump_module", "dill.dump_module", "per-cell save (ours)", "x faster"),
            ("full save vs plain write+fsync", "plain write+fsync", "full save (ours)", "x its speed  (goal >= 0.7)"),
            ("restore vs pickle.load", "pickle.load", "restore (ours)", "x its speed  (goal >= 1.0)"),
        ]
        for label, a, b, unit in lines:
            m, lo = ratio(a, b)
            print(f"  {label.ljust(48)} {m:8.2f} [{lo:.2f}]{unit}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
