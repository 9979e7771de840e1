"""What a crash costs a notebook holding values no pickler can store: pipulate's
``%state rebuild`` (the cells that made them, run again against the restored inputs)
against what a user does without it (run the whole notebook again).

    .venv/bin/python bench/bench_replay.py            # 5 runs
    .venv/bin/python bench/bench_replay.py --runs 3

Real kernels from the workstation's kernel spec. The notebook: a few slow cells whose
results are stored (data, a fitted model), then a hash object and a generator made from
them (not storable). Each run: run the notebook, kill the kernel (SIGKILL), start a new
one (it restores what was stored) and run ``%state rebuild``; the alternative: a fresh
kernel without pipulate running every cell again. Both are timed from the kernel's start
until every value is back. Prints medians and the ratio.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipulate.jupyter import jupyter_env  # noqa: E402

CELLS = [
    "import hashlib\nimport numpy as np",
    "data = np.random.default_rng(0).random(4_000_000)",
    "model = np.linalg.svd(np.random.default_rng(1).random((700, 700)))",
    "summary = {'mean': float(data.mean()), 'top': float(model[1][0])}",
    "h = hashlib.sha256(data[:100_000].tobytes())",
    "batches = (data[i:i + 1000] for i in range(0, 10_000, 1000))\nfirst = next(batches)",
]
CHECK = "assert h.hexdigest() and next(batches).shape == (1000,)"


def start(home: Path, workstation: bool) -> tuple[KernelManager, object]:
    dirs = ([os.path.join(p, "kernels") for p in jupyter_env(home)["JUPYTER_PATH"].split(os.pathsep)]
            if workstation else [])
    ksm = KernelSpecManager(kernel_dirs=dirs, ensure_native_kernel=not workstation)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=ksm)
    env = {**os.environ, "PIPULATE_HOME": str(home), "JPY_SESSION_NAME": "bench_replay.ipynb",
           "PIPULATE_BACKGROUND_SAVE": "off"}
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    return km, kc


def run(kc, code: str) -> None:
    reply = kc.execute_interactive(code, timeout=600, output_hook=lambda msg: None)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {code!r}: {reply['content'].get('evalue')}")


def one_run(root: Path) -> tuple[float, float]:
    home = Path(tempfile.mkdtemp(dir=root))
    km, kc = start(home, workstation=True)
    for cell in CELLS:
        run(kc, cell)
    os.kill(km.provisioner.process.pid, signal.SIGKILL)  # a crash: no exit hook runs
    kc.stop_channels()
    km.shutdown_kernel(now=True)

    t = time.perf_counter()  # from the kernel's start: the restore is part of the cost
    km, kc = start(home, workstation=True)
    run(kc, "pass")  # the restore has happened; its line comes with this cell
    run(kc, "%state rebuild")
    rebuild = time.perf_counter() - t
    run(kc, CHECK)
    km.shutdown_kernel(now=True)
    kc.stop_channels()

    t = time.perf_counter()
    km, kc = start(home, workstation=False)  # the alternative: every cell again
    for cell in CELLS:
        run(kc, cell)
    rerun = time.perf_counter() - t
    run(kc, CHECK)
    km.shutdown_kernel(now=True)
    kc.stop_channels()
    return rebuild, rerun


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    rebuilds, reruns = [], []
    with tempfile.TemporaryDirectory() as root:
        for i in range(args.runs):
            r, a = one_run(Path(root))
            rebuilds.append(r)
            reruns.append(a)
            print(f"run {i + 1}: start + restore + %state rebuild {r:.3f} s; start + whole notebook again {a:.3f} s",
                  flush=True)
    r, a = statistics.median(rebuilds), statistics.median(reruns)
    print(f"\nmedian of {args.runs}, from the kernel's start until every value is back: pipulate "
          f"(restore, then %state rebuild) {r:.3f} s; the whole notebook again {a:.3f} s; "
          f"ratio {a / r:.1f}x in pipulate's favour")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
