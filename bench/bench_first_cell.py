"""Kernel start to the first cell's result after a restart: pipulate (big arrays and frame
columns mapped; and read first, ``PIPULATE_LAZY_RESTORE=0``) against ``pickle.load``,
``dill.load_module`` and Kishu's checkout, in the same run, warm and cold page cache.

    .venv/bin/python bench/bench_first_cell.py                        # 1 GiB + pandas 1M rows, 3 runs
    .venv/bin/python bench/bench_first_cell.py --size-mib 256 --rows 200000 --runs 2   # quick
    .venv/bin/python bench/bench_first_cell.py --workloads containers                  # the same bytes in a list and a dict

Each tool saves the workloads of ``run_all.py`` (``tools.py --phase save``: the 1 GiB
namespace, and the 30 pandas cells) in a fresh process. Then each run starts a real
kernel and times, from the start of the kernel, the first cell that uses a small
variable (``counter + 1``; ``n + 1`` for pandas): pipulate's kernel comes from the
workstation's kernel spec, which restores as it loads the extension; the others are
stock kernels whose first cell restores (``tools.TOOLS[tool].restore``, as their users
would) and then uses the variable. A stock kernel that restores nothing gives the
start-up every mode pays. For the 1 GiB namespace a second cell sums every array (the
full touch: pages read, hash checks waited for). Modes alternate, so drift hits all
alike; cold: the saved files are dropped from the page cache first (``tools``). Kernel
start-up and the imports of numpy and pandas dominate the first figure on a busy machine,
so each run also times, in a fresh process with those imported, the restore itself to
the first cell's result (pipulate: from ``%load_ext``, which restores). The kernel's RSS
right after its first cell shows what each restore holds in memory.
Kishu runs where ``--kishu-python`` (a venv with kishu and ipykernel:
``python3 -m venv /tmp/kishu-venv && /tmp/kishu-venv/bin/pip install kishu ipykernel``) exists.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from tools import NOTEBOOK, drop_from_page_cache  # noqa: E402

from pipulate.jupyter import jupyter_env  # noqa: E402

FIRST = {"big": "counter + 1", "containers": "counter + 1", "pandas": "n + 1"}
# The full touch of the sized workloads (the pandas one has none): the same bytes, top-level or in containers.
FULL_TOUCH = {"big": "float(a.sum() + b.sum() + c.sum() + df.to_numpy().sum())",
              "containers": "float(runs[0].sum() + runs[1].sum() + store['c'].sum() + store['df'].to_numpy().sum())"}
LAZY, EAGER = "pipulate (mapped)", "pipulate (read first)"
# mode -> (the tool whose save it restores, extra environment); "none": a stock kernel, no restore.
MODES = {"none": (None, {}), LAZY: ("pipulate", {"PIPULATE_LAZY_RESTORE": "1"}),
         EAGER: ("pipulate", {"PIPULATE_LAZY_RESTORE": "0"}), "pickle.load": ("pickle", {}),
         "dill.load_module": ("dill", {}), "kishu": ("kishu", {})}


def save(python: str, tool: str, workload: str, d: Path, args) -> dict:
    extra = ["--size-mib", str(args.size_mib), "--cells", "1"] if workload in FULL_TOUCH else ["--rows", str(args.rows)]
    proc = subprocess.run([python, str(HERE / "tools.py"), "--tool", tool, "--workload", workload,
                           "--phase", "save", "--dir", str(d), *extra], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} {workload} save failed: {(proc.stderr or proc.stdout)[-400:]}")
    return json.loads((d / "saved.json").read_text())["info"]


def stock_spec(python: str, scratch: Path) -> KernelSpecManager:
    """A kernel spec of ``python`` with nothing loaded at start (any Jupyter's python3)."""
    folder = scratch / "specs" / Path(python).parent.parent.name / "python3"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(folder.parent)])


def first_cell(mode: str, tool: str | None, workload: str, d: Path, info: dict) -> str:
    if tool is None or tool == "pipulate":
        return FIRST[workload] if tool else "1 + 1"
    return (f"import sys; sys.path.insert(0, {str(HERE)!r}); import tools as _t; from pathlib import Path as _P\n"
            f"_t.set_env(_P({str(d)!r})); _t.TOOLS[{tool!r}](_P({str(d)!r})).restore(get_ipython(), {info!r})\n"
            f"del _t, _P\n{FIRST[workload]}")


def one_run(mode: str, workload: str, d: Path | None, info: dict, python: str, scratch: Path,
            cold: bool, touch: bool) -> tuple[float, float | None, int]:
    tool, extra = MODES[mode]
    if cold and d is not None:
        drop_from_page_cache(d)
    env = {**os.environ, "IPYTHONDIR": str(scratch / "ipython"), "JPY_SESSION_NAME": NOTEBOOK}
    if tool == "pipulate":
        home = d / "pipulate"
        env.update(jupyter_env(home), PIPULATE_HOME=str(home), **extra)
        dirs = [os.path.join(p, "kernels") for p in env["JUPYTER_PATH"].split(os.pathsep)]
        specs = KernelSpecManager(kernel_dirs=dirs)
    else:
        env.pop("JUPYTER_PATH", None)
        specs = stock_spec(python, scratch)
    started = time.perf_counter()
    km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    km.start_kernel(env=env, cwd=str(scratch))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=180)
        run(kc, first_cell(mode, tool, workload, d, info))
        first = time.perf_counter() - started
        rss = kernel_rss(km)
        full = None
        if touch and tool is not None:
            t = time.perf_counter()
            run(kc, FULL_TOUCH[workload])
            full = time.perf_counter() - t
        return first, full, rss
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def kernel_rss(km) -> int:
    """The kernel's resident memory (VmRSS, bytes) right after its first cell: what the restore took."""
    with open(f"/proc/{km.provisioner.process.pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) * 1024


# In a fresh process with numpy, pandas and the tool imported first: from the restore's start
# (pipulate: loading the extension) to the first cell's result. Prints the seconds.
IN_PROCESS = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {bench!r})
import numpy, pandas, tools
d = Path({d!r})
tools.set_env(d)
os.environ.update({extra!r})
tool = tools.TOOLS[{tool!r}](d)
if {tool!r} == "pipulate":
    import pipulate.kernel_state.extension
elif {tool!r} != "pickle":
    __import__({tool!r} if {tool!r} == "dill" else "kishu.jupyterint")
ip = tools.make_shell()
if {cold!r}:
    tools.drop_from_page_cache(d)
started = time.perf_counter()
tool.restore(ip, {info!r})
result = ip.run_cell({cell!r})
assert result.success, result.error_in_exec
print("SECONDS", time.perf_counter() - started)
"""


def in_process(mode: str, workload: str, d: Path, info: dict, python: str, cold: bool) -> float:
    tool, extra = MODES[mode]
    code = IN_PROCESS.format(bench=str(HERE), d=str(d), extra=extra, tool=tool, cold=cold, info=info,
                             cell=FIRST[workload])
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SECONDS ")]
    if not lines:
        raise RuntimeError(f"{mode}: {(proc.stderr or proc.stdout)[-400:]}")
    return float(lines[-1].split()[1])


def run(kc, code: str) -> None:
    reply = kc.execute_interactive(code, timeout=900, output_hook=lambda msg: None)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {code[:80]!r}: {reply['content'].get('evalue')}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", default="big,containers,pandas")
    parser.add_argument("--kishu-python", default=os.environ.get("KISHU_PYTHON", "/tmp/kishu-venv/bin/python"))
    args = parser.parse_args(argv)
    modes = [m for m in MODES if m != "kishu" or Path(args.kishu_python).exists()]
    if "kishu" not in modes:
        print(f"kishu left out: {args.kishu_python} missing")
    scratch = Path(tempfile.mkdtemp(prefix="pipulate-bench-first-"))
    try:
        for workload in args.workloads.split(","):
            saved: dict[str, tuple[Path, dict]] = {}
            for mode in modes:
                tool = MODES[mode][0]
                if tool is not None and tool not in saved:
                    d = scratch / workload / tool
                    python = args.kishu_python if tool == "kishu" else sys.executable
                    saved[tool] = (d, save(python, tool, workload, d, args))
            what = ({"big": f"{args.size_mib} MiB namespace",
                     "containers": f"{args.size_mib} MiB namespace in a list and a dict"}.get(workload)
                    or f"pandas notebook, {args.rows} rows")
            if "pipulate" in saved:
                print(f"\n{what}: pipulate's big blobs, compressed (read) or raw (mapped)")
                compression_report(saved["pipulate"][0] / "pipulate")
            print(f"\n{what}: seconds from kernel start to the first cell's result (median of {args.runs})")
            first: dict[tuple[str, str], list[float]] = {}
            full: dict[tuple[str, str], list[float]] = {}
            memory: dict[tuple[str, str], list[int]] = {}
            inside: dict[tuple[str, str], list[float]] = {}
            for cache in ("warm", "cold"):
                for _ in range(args.runs):
                    for mode in modes:
                        tool = MODES[mode][0]
                        d, info = saved.get(tool, (None, {}))
                        python = args.kishu_python if tool == "kishu" else sys.executable
                        f, t, rss = one_run(mode, workload, d, info, python, scratch, cache == "cold", workload in FULL_TOUCH)
                        first.setdefault((cache, mode), []).append(f)
                        memory.setdefault((cache, mode), []).append(rss)
                        if t is not None:
                            full.setdefault((cache, mode), []).append(t)
                        if tool is not None:
                            inside.setdefault((cache, mode), []).append(
                                in_process(mode, workload, d, info, python, cache == "cold"))
            report(first, full, memory, modes)
            report_in_process(inside, [m for m in modes if m != "none"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def compression_report(home: Path) -> None:
    """Per big blob pipulate stored: compressed (read at the restore) or raw (mapped), and
    what the other choice would give: MiB on disk, and seconds to read it from a cold
    cache (and decompress); the other choice's seconds scale the cold read by size."""
    import pyarrow as pa

    from pipulate.blobs import _HEADER, _ZSTD, BIG_BLOB

    codec = pa.Codec("zstd", compression_level=1)
    # label -> [count, MiB raw, MiB on disk, cold seconds, MiB the other way, seconds the other way]
    rows = {"compressed": [0, 0.0, 0.0, 0.0, 0.0, 0.0], "raw": [0, 0.0, 0.0, 0.0, 0.0, 0.0]}
    for path in (home / "blobs").rglob("*"):
        if not path.is_file() or path.name.endswith(".tmp"):
            continue
        with open(path, "rb") as f:
            _magic, kind, size = _HEADER.unpack(f.read(_HEADER.size))
        if size < BIG_BLOB:
            continue
        drop_from_page_cache(path.parent, rounds=1)
        t = time.perf_counter()
        data = path.read_bytes()
        cold = time.perf_counter() - t
        if kind == _ZSTD:
            t = time.perf_counter()
            codec.decompress(data[_HEADER.size:], decompressed_size=size)
            cold += time.perf_counter() - t
            other_size, other = size, cold * size / len(data)
        else:
            packed = codec.compress(data[len(data) - size:], asbytes=True)
            t = time.perf_counter()
            codec.decompress(packed, decompressed_size=size)
            other_size, other = len(packed), cold * len(packed) / size + time.perf_counter() - t
        row = rows["compressed" if kind == _ZSTD else "raw"]
        for i, v in enumerate((1, size / 2**20, len(data) / 2**20, cold, other_size / 2**20, other)):
            row[i] += v
    print(f"  {'big blobs (>= 1 MiB)':<12} {'count':>5} {'MiB':>8} {'on disk':>8} {'cold s':>7}"
          f"   the other choice: {'on disk':>8} {'cold s':>7}")
    for label, (n, size, disk, cold, other_size, other) in rows.items():
        print(f"  {label:<12} {n:5d} {size:8.1f} {disk:8.1f} {cold:7.3f}   {'':>18} {other_size:8.1f} {other:7.3f}")


def report_in_process(inside: dict, modes: list[str]) -> None:
    med = {k: statistics.median(v) for k, v in inside.items()}
    print("  in one process, imports done: from the restore's start (pipulate: %load_ext) to the first cell's result")
    for cache in ("warm", "cold"):
        lazy = med[(cache, LAZY)]
        print(f"  {cache}: " + ", ".join(f"{m} {med[(cache, m)]:.3f} s ({med[(cache, m)] / lazy:.1f}x)" for m in modes))


def report(first: dict, full: dict, memory: dict, modes: list[str]) -> None:
    med = {k: statistics.median(v) for k, v in first.items()}
    touch = {k: statistics.median(v) for k, v in full.items()}
    rss = {k: statistics.median(v) / 2**20 for k, v in memory.items()}
    print(f"  {'':<32} {'first cell':>10} {'restore share':>14} {'vs mapped':>10} {'full touch':>11} {'RSS MiB':>8}")
    for cache in ("warm", "cold"):
        base, lazy = med[(cache, "none")], med[(cache, LAZY)]
        for mode in modes:
            v = med[(cache, mode)]
            share = "" if mode == "none" else f"{v - base:+14.3f}"
            ratio = "" if mode == "none" else f"{v / lazy:9.2f}x"
            t = touch.get((cache, mode))
            print(f"  {cache + ', ' + mode:<32} {v:10.3f} {share:>14} {ratio:>10} {'' if t is None else f'{t:11.3f}':>11}"
                  f" {rss[(cache, mode)]:8.0f}")
        shares = {m: med[(cache, m)] - base for m in modes if m not in ("none", LAZY)}
        lazy_share = max(lazy - base, 0.001)
        print(f"  {cache}: the restore's share over a kernel that restores nothing: mapped {lazy - base:+.3f} s; "
              + ", ".join(f"{m} {s / lazy_share:.1f}x that" for m, s in shares.items()))
        if (cache, LAZY) in touch and (cache, EAGER) in touch:
            print(f"  {cache}: start + full touch, mapped {lazy + touch[(cache, LAZY)]:.3f} s against read first "
                  f"{med[(cache, EAGER)] + touch[(cache, EAGER)]:.3f} s; the touch alone "
                  f"{touch[(cache, LAZY)] / touch[(cache, EAGER)]:.2f}x read first's")


if __name__ == "__main__":
    sys.exit(main())
