"""All kernel-state benchmarks in one run: pipulate against what users have without it.

    .venv/bin/python bench/run_all.py            # 1 GiB namespace, 1M-row pandas notebook, 3 runs each
    .venv/bin/python bench/run_all.py --quick    # 128 MiB, 200k rows, 2 runs: a few minutes

Tools (columns): pipulate (``%load_ext pipulate``), pickling the whole namespace
after each cell (the Digital Article design), ``dill.dump_module`` after each
cell, IPython's ``%store`` of each changed variable, and Kishu (run from its own
venv, ``--kishu-python``, default /tmp/kishu-venv/bin/python; made with
``python3 -m venv /tmp/kishu-venv && /tmp/kishu-venv/bin/pip install kishu``).

Workloads: the 1 GiB namespace of the kernel-state benchmark with cells that
change one small variable; a notebook of 30 cells of pandas work; dill's object
catalog. Every (tool, workload, run) saves in a fresh process and restores in
another fresh process (``bench/tools.py``); runs are interleaved across tools so
drift on a shared machine hits all alike. Costs are counted so that a tool saving
in a background thread is measured as honestly as one saving in its hook: the
cells' whole wall time against the same without any tool, the wait until the
last save is committed (flush), and the bytes written by every thread over the
cells and that wait (see bench/README.md, "what it measures"). Prints one table
of medians and one of ratios, then (unless ``--no-goals``) the goal lines of
bench_store.py, bench_kernel_state.py and bench_web.py.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TOOLS = ["pipulate", "pickle", "dill", "store", "kishu"]
HEADERS = {"pipulate": "pipulate", "pickle": "pickle whole ns", "dill": "dill.dump_module",
           "store": "%store", "kishu": "kishu"}
GOAL_PCT = 2.5
# Workloads restored a second time with their files dropped from the page cache (as after a reboot).
COLD_RESTORE = ("big", "pandas")
# Tools whose save returns before its bytes are on disk (no fsync; the system writes them
# back within ~30 s): for them "until durable" is the time until the save returns.
NO_FSYNC = ("pickle", "dill", "store")


def run_worker(python: str, tool: str, workload: str, phase: str, d: Path, extra: list[str],
               timeout: float) -> dict:
    cmd = [python, str(HERE / "tools.py"), "--tool", tool, "--workload", workload, "--phase", phase,
           "--dir", str(d), *extra]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(d.parent))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCHJSON:"):
            return json.loads(line[len("BENCHJSON:"):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": (tail[-1] if tail else f"exit status {proc.returncode}")[:160]}


def run_restores(python: str, tool: str, workload: str, d: Path, extra: list[str], args,
                 cold: bool) -> tuple[dict, dict | None]:
    """``args.restore_repeat`` restores of one saved folder, each warm one followed by a cold
    one when ``cold``: a restore is cheap next to a save, and one restore time is noisy.
    Each result is the first run's, with ``samples`` (every run's seconds) and ``seconds``
    (their median); an error stops the runs and is returned."""
    runs = {"restore": [], "restore-cold": []}
    for _ in range(args.restore_repeat):
        for phase in ("restore", "restore-cold") if cold else ("restore",):
            out = run_worker(python, tool, workload, phase, d, extra, args.timeout)
            if "error" in out:
                return (out, None) if phase == "restore" else (summary(runs["restore"]), out)
            runs[phase].append(out)
    return summary(runs["restore"]), (summary(runs["restore-cold"]) if cold else None)


def summary(outs: list[dict]) -> dict:
    samples = [o["seconds"] for o in outs if o["seconds"] is not None]
    return {**outs[0], "samples": samples, "seconds": median(samples)}


def samples(results: list[dict | None]) -> list[float]:
    """Every restore time of these runs (one per run in results written before ``samples``)."""
    return [t for r in results if r for t in r.get("samples", [r.get("seconds")]) if t is not None]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Results:
    def __init__(self):
        self.runs: dict[tuple[str, str], list[dict]] = {}   # (tool, workload) -> [{save, restore}]
        self.errors: dict[tuple[str, str], str] = {}
        self.notes: list[str] = []

    def add(self, tool, workload, save, restore, cold=None):
        for part in (save, restore, cold):
            if part is not None and "error" in part:
                self.errors[(tool, workload)] = part["error"]
                return
        self.runs.setdefault((tool, workload), []).append({"save": save, "restore": restore, "cold": cold})

    def get(self, tool, workload):
        return self.runs.get((tool, workload), [])


def run_benchmarks(args, scratch: Path) -> Results:
    res = Results()
    kishu_ok = Path(args.kishu_python).exists()
    pythons = {t: sys.executable for t in TOOLS + ["none"]}
    pythons["kishu"] = args.kishu_python
    tools = [t for t in TOOLS if t != "kishu" or kishu_ok]
    if not kishu_ok:
        for w in ("big", "pandas", "catalog"):
            res.errors[("kishu", w)] = f"not installed ({args.kishu_python} missing)"
    # (workload, worker arguments, runs, tools, tools run only in the first args.repeat runs);
    # "none" (no tool) is the baseline whose time and bytes are subtracted, run interleaved
    pandas_runs = max(args.repeat, args.pandas_repeat)
    plan = [
        ("big", ["--size-mib", str(args.size_mib), "--cells", str(args.cells)], args.repeat, ["none"] + tools, ()),
        ("pandas", ["--rows", str(args.rows)], pandas_runs, ["none"] + tools,
         [t for t in tools if t != "pipulate"]),
        ("catalog", [], 1, tools, ()),
    ]
    for workload, extra, repeat, wtools, fewer in plan:
        if workload not in args.workloads:
            continue
        for rep in range(repeat):
            # Every other run in the opposite order: a slot that is slower on this machine
            # (the first after a pause, say) is not always the same tool's.
            for tool in (wtools if rep % 2 == 0 else wtools[::-1]):
                if (tool, workload) in res.errors or (tool in fewer and rep >= args.repeat):
                    continue
                d = scratch / f"{workload}-{tool}-{rep}"
                t0 = time.perf_counter()
                save = run_worker(pythons[tool], tool, workload, "save", d, extra, args.timeout)
                restore = cold = None
                if "error" not in save and tool != "none":
                    restore, cold = run_restores(pythons[tool], tool, workload, d, extra, args,
                                                 workload in COLD_RESTORE)
                res.add(tool, workload, save, restore, cold)
                note = res.errors.get((tool, workload), "ok")
                print(f"  {workload:8} run {rep + 1}/{repeat} {tool:9} {time.perf_counter() - t0:7.1f} s  {note}",
                      file=sys.stderr, flush=True)
                shutil.rmtree(d, ignore_errors=True)
    return res


# --- figures -----------------------------------------------------------------------------


def window(run) -> dict:
    return run["save"]["window"]


def base_median(res: Results, workload: str, key) -> float | None:
    """Median over the runs of the baseline (no tool) of key(run), or None when it did not run."""
    base = res.get("none", workload)
    return median([key(r) for r in base]) if base else None


def cells_wall(run) -> float:
    """Wall time of the notebook's cells, hooks and all, without the flush after the last cell."""
    return window(run)["seconds"]


def window_bytes_per_cell(run) -> float:
    return window(run)["bytes"] / window(run)["cells"]


def figures(res: Results) -> dict:
    """{row: {tool: value or None}}, the baseline's own time, plus error notes."""
    rows: dict[str, dict] = {}
    times: dict[str, dict] = {}  # {row: {tool: every run's time}}, for the rows made of many runs

    def put(row, tool, value):
        rows.setdefault(row, {})[tool] = value

    def put_times(row, tool, values):
        times.setdefault(row, {})[tool] = values
        put(row, tool, median(values))

    def minus(value, base):
        return None if value is None or base is None else value - base

    big_base_bytes = base_median(res, "big", window_bytes_per_cell)
    pd_base_wall = base_median(res, "pandas", cells_wall)
    pd_base_bytes = base_median(res, "pandas", window_bytes_per_cell)
    for tool in TOOLS:
        big = res.get(tool, "big")
        if big:
            # each small cell is flushed: its save = time in hooks + the wait until committed
            put(ROW_BIG_SAVE, tool, median([median([c["hook"] + c["flush"] for c in r["save"]["cells"][1:]])
                                            for r in big]))
            put(ROW_BIG_BYTES, tool, minus(median([window_bytes_per_cell(r) for r in big]), big_base_bytes))
            put(ROW_BIG_FIRST, tool, median([r["save"]["cells"][0]["hook"] + r["save"]["cells"][0]["flush"]
                                             for r in big]))
            put_times(ROW_BIG_RESTORE, tool, samples([r["restore"] for r in big]))
            put_times(ROW_BIG_COLD, tool, samples([r["cold"] for r in big]))
        pd_runs = res.get(tool, "pandas")
        if pd_runs:
            if pd_base_wall:
                walls = [cells_wall(r) for r in pd_runs]
                put(ROW_PD_OVERHEAD, tool, 100 * (median(walls) - pd_base_wall) / pd_base_wall)
                lo, hi = (100 * (w - pd_base_wall) / pd_base_wall for w in (min(walls), max(walls)))
                put(ROW_PD_SPREAD, tool, f"{lo:.0f}..{hi:.0f}% ({len(walls)})" if len(walls) > 1 else "1 run")
                base_walls = [cells_wall(r) for r in res.get("none", "pandas")]
                interval = overhead_interval(walls, base_walls)
                put(ROW_PD_INTERVAL, tool, f"{interval[0]:.1f}..{interval[1]:.1f}%" if interval else "-")
            put(ROW_PD_HOOKS, tool, median([statistics.mean(c["hook"] for c in r["save"]["cells"]) for r in pd_runs]))
            put(ROW_PD_DURABLE, tool, median([window(r)["flush"] for r in pd_runs]))
            put(ROW_PD_BYTES, tool, minus(median([window_bytes_per_cell(r) for r in pd_runs]), pd_base_bytes))
            put_times(ROW_PD_RESTORE, tool, samples([r["restore"] for r in pd_runs]))
            put_times(ROW_PD_COLD, tool, samples([r["cold"] for r in pd_runs]))
            put(ROW_PD_VARS, tool, f"{pd_runs[0]['restore']['right']}/{pd_runs[0]['restore']['expected']}")
        cat = res.get(tool, "catalog")
        if cat:
            r = cat[0]["restore"]
            put(ROW_CATALOG, tool, f"{r['right']}/{r['expected']}" + ("*" if r.get("failure") else ""))
            if r.get("failure"):
                res.notes.append(f"{HEADERS[tool]}, catalog: restore raised {r['failure']}")
    base = [cells_wall(r) for r in res.get("none", "pandas")]
    own = (pd_base_wall, min(base), max(base), len(base)) if base else None
    return {"rows": rows, "own": own, "times": times}


def overhead_interval(walls: list[float], base_walls: list[float]) -> tuple[float, float] | None:
    """A 90% bootstrap interval of the overhead (median of ``walls`` against the median of
    ``base_walls``, in %): how far the figure could move with other runs on the same machine.
    None with fewer than 3 runs of either."""
    interval = ratio_interval(base_walls, walls)
    return None if interval is None else (100 * (interval[0] - 1), 100 * (interval[1] - 1))


def ratio_interval(mine: list[float], other: list[float], resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float] | None:
    """A 90% bootstrap interval of median(other) / median(mine); None with fewer than 3 of either."""
    if len(mine) < 3 or len(other) < 3:
        return None
    rng = random.Random(seed)
    draws = sorted(median(rng.choices(other, k=len(other))) / median(rng.choices(mine, k=len(mine)))
                   for _ in range(resamples))
    return draws[int(0.05 * resamples)], draws[int(0.95 * resamples) - 1]


def fmt(row: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if "bytes" in row:
        for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if value >= size:
                return f"{value / size:.1f} {unit}"
        return f"{value:.0f} B"
    if "%" in row:
        return f"{value:.1f}%"
    return f"{value:.4f}" if value < 10 else f"{value:.1f}"


ROW_BIG_SAVE = "big: per-cell save, until durable (s)"
ROW_PD_OVERHEAD = "pandas: per-cell overhead (% of cell time)"
ROW_PD_SPREAD = "pandas: overhead, min..max of runs"
ROW_PD_INTERVAL = "pandas: overhead, 90% bootstrap interval"
ROW_PD_HOOKS = "pandas: time in hooks per cell (s)"
ROW_PD_DURABLE = "pandas: time to durable after last cell (s)"
ROW_BIG_BYTES = "big: bytes written per cell"
ROW_PD_BYTES = "pandas: bytes written per cell"
ROW_BIG_FIRST = "big: first save, until durable (s)"
ROW_BIG_RESTORE = "big: full restore (s)"
ROW_PD_RESTORE = "pandas: full restore (s)"
ROW_BIG_COLD = "big: full restore, cold cache (s)"
ROW_PD_COLD = "pandas: full restore, cold cache (s)"
ROW_PD_VARS = "pandas: restored vars (right type)"
ROW_CATALOG = "catalog: objects saved+restored (right type)"
ORDER = [ROW_BIG_SAVE, ROW_PD_OVERHEAD, ROW_PD_SPREAD, ROW_PD_INTERVAL, ROW_PD_HOOKS, ROW_PD_DURABLE, ROW_BIG_BYTES, ROW_PD_BYTES,
         ROW_BIG_FIRST, ROW_BIG_RESTORE, ROW_BIG_COLD, ROW_PD_RESTORE, ROW_PD_COLD, ROW_PD_VARS, ROW_CATALOG]
# not in the ratio table: the spread (a range), time in hooks (a part of the overhead, the part on the
# critical path) and time to durable (a tool that saves in its hooks has nothing left to wait for:
# 0 by construction, its save is paid in the overhead row)
NO_RATIO = {ROW_PD_SPREAD, ROW_PD_INTERVAL, ROW_PD_HOOKS, ROW_PD_DURABLE}
# not in "better than every alternative on every row": the spread, time to durable (see above),
# and the first save (a one-off)
NO_GOAL = {ROW_PD_SPREAD, ROW_PD_INTERVAL, ROW_PD_DURABLE, ROW_BIG_FIRST}


def print_table(fig: dict, res: Results) -> None:
    rows = fig["rows"]
    width = max(len(r) for r in ORDER) + 2
    colw = 17
    print("medians" .ljust(width) + "".join(HEADERS[t].rjust(colw) for t in TOOLS))
    for row in ORDER:
        if row not in rows:
            continue
        cells = []
        for t in TOOLS:
            workload = row.split(":")[0]
            if (t, workload) in res.errors:
                cells.append("n/a")
            else:
                cells.append(fmt(row, rows[row].get(t)))
        print(row.ljust(width) + "".join((" " + c).rjust(colw) for c in cells))
    if fig["own"] is not None:
        own, lo, hi, n = fig["own"]
        print(f"(pandas notebook: the 30 cells' own run time without any tool, median: {own:.2f} s, "
              f"min..max {lo:.2f}..{hi:.2f} s over {n} runs)")
    notes = sorted({(t, e) for (t, _), e in res.errors.items()})
    for t, e in notes:
        print(f"n/a {HEADERS[t]}: {e}")
    for note in res.notes:
        print(f"* {note}")
    print("until durable: pipulate fsyncs before a save counts as done; "
          + ", ".join(HEADERS[t] for t in NO_FSYNC) + " do not fsync (their figure is until the save returns)")

    print("\nratios: alternative / pipulate for times and bytes (>1 = pipulate better); "
          "objects: pipulate minus alternative")
    print("".ljust(width) + "".join(HEADERS[t].rjust(colw) for t in TOOLS[1:]))
    for row in ORDER:
        if row not in rows or "pipulate" not in rows[row] or row in NO_RATIO:
            continue
        mine = rows[row]["pipulate"]
        cells = []
        for t in TOOLS[1:]:
            other = rows[row].get(t)
            if other is None:
                cells.append("n/a")
            elif isinstance(mine, str):
                a, b = (int(x.split("/")[0]) for x in (mine, other))
                cells.append(f"{a - b:+d}")
            elif mine <= 0:
                cells.append("inf")
            else:
                cells.append(f"{other / mine:.2f}x")
        print(row.ljust(width) + "".join((" " + c).rjust(colw) for c in cells))

    spreads = [(row, fig["times"][row]) for row in ORDER if "pipulate" in fig.get("times", {}).get(row, {})]
    if spreads:
        print("\n90% bootstrap intervals of those ratios, from every restore of every run")
        for row, spread in spreads:
            cells = []
            for t in TOOLS[1:]:
                interval = ratio_interval(spread["pipulate"], spread.get(t, []))
                cells.append(f"{interval[0]:.2f}..{interval[1]:.2f}" if interval else "-")
            print(row.ljust(width) + "".join((" " + c).rjust(colw) for c in cells))

    pct = rows.get(ROW_PD_OVERHEAD, {}).get("pipulate")
    if pct is not None:
        print(f"\ngoal: pipulate per-cell overhead <= {GOAL_PCT}% of the cells' own time on the pandas "
              f"notebook: {pct:.1f}% -> {'met' if pct <= GOAL_PCT else 'MISSED'}"
              f" (90% bootstrap interval: {rows.get(ROW_PD_INTERVAL, {}).get('pipulate', '-')})")
    lost = []
    for row in ORDER:
        if row not in rows or "pipulate" not in rows[row] or row in NO_GOAL:
            continue
        mine = rows[row]["pipulate"]
        for t in TOOLS[1:]:
            other = rows[row].get(t)
            if other is None:
                continue
            if isinstance(mine, str):
                worse = int(mine.split("/")[0]) < int(other.split("/")[0])
            else:
                worse = other < mine
            if worse:
                # Where the row is many runs' times, how sure the loss is: an interval that
                # reaches past 1 is a loss the machine's noise could undo.
                spread = fig.get("times", {}).get(row, {})
                interval = ratio_interval(spread.get("pipulate", []), spread.get(t, []))
                sure = f" (ratio {other / mine:.2f}x, 90% interval {interval[0]:.2f}..{interval[1]:.2f}x)" if interval else ""
                lost.append(f"{row} vs {HEADERS[t]}{sure}")
    print("goal: better than every alternative on every row: "
          + ("met" if not lost else "MISSED on " + "; ".join(lost)))


def goal_lines(args) -> None:
    """The goal lines of the other benchmarks, run one after the other."""
    py = sys.executable
    runs = [
        ("bench_store.py", [py, str(HERE / "bench_store.py")] + (["--repeat", "100"] if args.quick else [])),
        ("bench_kernel_state.py", [py, str(HERE / "bench_kernel_state.py"), "--size-mib", str(args.size_mib)]),
        ("bench_web.py", [py, str(HERE / "bench_web.py"), "--duration", "5" if args.quick else "20"]),
    ]
    for name, cmd in runs:
        print(f"\n{name}:")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            print("  timed out")
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip() and not ln.startswith("scratch")]
        for ln in lines or proc.stderr.strip().splitlines()[-3:]:
            print("  " + ln.rstrip())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="128 MiB, 200k rows, 2 runs, short goal runs")
    p.add_argument("--size-mib", type=int, default=None)
    p.add_argument("--rows", type=int, default=None)
    p.add_argument("--cells", type=int, default=5, help="small-change cells after the 1 GiB set-up")
    p.add_argument("--repeat", type=int, default=None, help="runs per tool and workload")
    p.add_argument("--pandas-repeat", type=int, default=9,
                   help="runs of pipulate and of the no-tool baseline on the pandas notebook (at least --repeat): "
                        "the overhead is a small difference of two noisy times")
    p.add_argument("--restore-repeat", type=int, default=3,
                   help="restores of each saved run (warm, then cold where measured): the restore rows are "
                        "the median of them all")
    p.add_argument("--workloads", default="big,pandas,catalog")
    p.add_argument("--kishu-python", default=os.environ.get("KISHU_PYTHON", "/tmp/kishu-venv/bin/python"))
    p.add_argument("--timeout", type=float, default=600, help="seconds per worker process (Kishu on 1M rows needs more)")
    p.add_argument("--no-goals", action="store_true", help="skip bench_store/bench_kernel_state/bench_web")
    p.add_argument("--json", help="also write the raw results here")
    args = p.parse_args(argv)
    args.size_mib = args.size_mib or (128 if args.quick else 1024)
    args.rows = args.rows or (200_000 if args.quick else 1_000_000)
    args.repeat = args.repeat or (2 if args.quick else 3)
    args.workloads = set(args.workloads.split(","))

    from bench_kernel_state import machine

    print(f"machine: {machine()}")
    print(f"workloads: {args.size_mib} MiB namespace + {args.cells} small cells; pandas notebook of 30 cells, "
          f"{args.rows:,} rows; dill object catalog. {args.repeat} runs per figure "
          f"({max(args.repeat, args.pandas_repeat)} of pipulate and no tool on the pandas notebook), interleaved.\n")
    scratch = Path(tempfile.mkdtemp(prefix="pipulate-bench-all-"))
    try:
        res = run_benchmarks(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    fig = figures(res)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": {f"{t}/{w}": v for (t, w), v in res.runs.items()},
                                               "errors": {f"{t}/{w}": e for (t, w), e in res.errors.items()}}))
    print()
    print_table(fig, res)
    if not args.no_goals:
        goal_lines(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
