"""A kernel that is back at once: time from kernel start to the first cell's result after a
restore of big arrays, mapped (``PIPULATE_LAZY_RESTORE`` on, the default) against read
first (off), in the same run, warm and cold page cache.

    .venv/bin/python bench/bench_lazy_restore.py                  # 192 MiB, 5 runs
    .venv/bin/python bench/bench_lazy_restore.py --size-mib 64 --runs 3

Real kernels from the workstation's kernel spec. The namespace: four float64 arrays of
random numbers (stored raw: they do not compress) and a few small variables. Each run
starts a kernel, times the first cell (``counter + 1``: a small variable) from the start
of the kernel, then a cell that sums every array (the full touch: it waits for every
hash check, and reads every page); the kernel is then killed (no exit read-ahead). A
kernel started without restoring (PIPULATE_AUTORESTORE off) gives the start-up cost
every mode pays. Cold: the store's files are dropped from the page cache first (as
``run_all.py`` does; the code stays cached). Modes alternate, so drift hits all alike.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.tools import drop_from_page_cache  # noqa: E402
from pipulate.jupyter import jupyter_env  # noqa: E402

NOTEBOOK = "bench_lazy.ipynb"
MODES = {"no restore": {"PIPULATE_AUTORESTORE": "0", "PIPULATE_AUTOSAVE": "0"},
         "lazy (mapped)": {"PIPULATE_LAZY_RESTORE": "1"},
         "eager (read first)": {"PIPULATE_LAZY_RESTORE": "0"}}
FULL_TOUCH = "float(a.sum() + b.sum() + c.sum() + d.sum())"


def start(home: Path, extra: dict) -> tuple[KernelManager, object]:
    dirs = [os.path.join(p, "kernels") for p in jupyter_env(home)["JUPYTER_PATH"].split(os.pathsep)]
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=dirs))
    env = {**os.environ, "PIPULATE_HOME": str(home), "JPY_SESSION_NAME": NOTEBOOK,
           "PIPULATE_BACKGROUND_SAVE": "off", **extra}
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    return km, kc


def run(kc, code: str) -> None:
    reply = kc.execute_interactive(code, timeout=600, output_hook=lambda msg: None)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {code!r}: {reply['content'].get('evalue')}")


def stop(km, kc) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def one_run(home: Path, extra: dict, cold: bool) -> tuple[float, float]:
    """(seconds from start to the first cell's result, seconds of the full-touch cell)."""
    if cold:
        drop_from_page_cache(home)
    started = time.perf_counter()
    km, kc = start(home, extra)
    try:
        kc.wait_for_ready(timeout=120)
        run(kc, "1 + 1" if "PIPULATE_AUTORESTORE" in extra else "counter + 1")
        first = time.perf_counter() - started
        t = time.perf_counter()
        if "PIPULATE_AUTORESTORE" not in extra:
            run(kc, FULL_TOUCH)
        return first, time.perf_counter() - t
    finally:
        stop(km, kc)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=192, help="the arrays in all (at most 256 here)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="pipulate-bench-lazy-"))
    home = scratch / "home"
    try:
        n = args.size_mib * 2**20 // 4 // 8
        km, kc = start(home, {})
        kc.wait_for_ready(timeout=120)
        run(kc, f"import numpy as np\nrng = np.random.default_rng(1)\n"
                f"a, b, c, d = (rng.random({n}) for _ in range(4))\ncounter = 1\nconfig = {{'k': 'v'}}")
        stop(km, kc)
        print(f"namespace: 4 arrays of {n * 8 / 2**20:.0f} MiB (random floats, stored raw) + small variables")
        times: dict[tuple[str, str], list[float]] = {}
        touch: dict[tuple[str, str], list[float]] = {}
        for cache in ("warm", "cold"):
            for _ in range(args.runs):
                for mode, extra in MODES.items():
                    first, full = one_run(home, extra, cache == "cold")
                    times.setdefault((cache, mode), []).append(first)
                    touch.setdefault((cache, mode), []).append(full)
        print(f"\n  {'seconds (median of %d)' % args.runs:<34} first cell  full touch")
        med = {k: statistics.median(v) for k, v in times.items()}
        for (cache, mode), v in med.items():
            full = "" if mode == "no restore" else f"{statistics.median(touch[(cache, mode)]):10.3f}"
            print(f"  {cache + ', ' + mode:<34} {v:10.3f}  {full}")
        for cache in ("warm", "cold"):
            base = med[(cache, "no restore")]
            lazy, eager = med[(cache, "lazy (mapped)")] - base, med[(cache, "eager (read first)")] - base
            # The restore's share: what the start costs over a kernel that restores nothing.
            print(f"  {cache}: restore's share of the first cell: lazy {lazy:+.3f} s, eager {eager:+.3f} s;"
                  f" start to first cell, eager / lazy: "
                  f"{med[(cache, 'eager (read first)')] / med[(cache, 'lazy (mapped)')]:.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
