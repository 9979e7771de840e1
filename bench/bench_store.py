"""Pipeline-state benchmark: does the cost of a set follow the change, not the job?

Compares, in one run and on the same disk, pipulate's one-row-per-step store
with the baseline the original Pipulate uses: the whole job as one JSON blob,
read, changed and written back on every set (same SQLite, same durability:
WAL and synchronous=FULL).

    .venv/bin/python bench/bench_store.py [--steps 10000] [--repeat 300]

Prints medians and ratios (the machine is shared and noisy: read the ratios).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipulate import Pipulate  # noqa: E402


class JsonBlobJobs:
    """The baseline: one row per job holding all its steps as one JSON document."""

    def __init__(self, path: Path):
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self.con.execute("CREATE TABLE IF NOT EXISTS pipeline (pkey TEXT PRIMARY KEY, data TEXT)")

    def set(self, job, step, value):
        self.con.execute("BEGIN IMMEDIATE")
        row = self.con.execute("SELECT data FROM pipeline WHERE pkey = ?", (job,)).fetchone()
        data = json.loads(row[0]) if row else {}
        data[step] = value
        self.con.execute("INSERT OR REPLACE INTO pipeline VALUES (?, ?)", (job, json.dumps(data)))
        self.con.execute("COMMIT")


def median_set_seconds(store, job: str, step: str, repeat: int) -> float:
    times = []
    for i in range(repeat):
        t = time.perf_counter()
        store.set(job, step, {"value": i, "note": "a typical small step value"})
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fill(store, job: str, steps: int) -> None:
    for i in range(steps):
        store.set(job, f"step_{i:05d}", {"value": i, "note": "a typical small step value"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000, help="steps in the large job")
    parser.add_argument("--repeat", type=int, default=300, help="sets timed per case")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pip = Pipulate(tmp / "pipulate")
        base = JsonBlobJobs(tmp / "baseline.db")
        rows = []
        for name, store in (("pipulate (row per step)", pip), ("baseline (JSON blob per job)", base)):
            fill(store, "small", 1)
            fill(store, "large", args.steps)
            small = median_set_seconds(store, "small", "step_00000", args.repeat)
            large = median_set_seconds(store, "large", "step_00000", args.repeat)
            rows.append((name, small, large))

        n = 2000
        t = time.perf_counter()
        for i in range(n):
            pip.set("throughput", f"s{i}", i)
        rate = n / (time.perf_counter() - t)

    print(f"one set: job of 1 step vs job of {args.steps:,} steps (median of {args.repeat})")
    print(f"{'store':32} {'1 step':>10} {f'{args.steps:,} steps':>14} {'ratio':>8}")
    for name, small, large in rows:
        print(f"{name:32} {small * 1e6:8.0f}us {large * 1e6:12.0f}us {large / small:8.2f}")
    (_, ps, pl), (_, bs, bl) = rows
    print(f"\npipulate ratio {pl / ps:.2f} (goal <= 2); baseline ratio {bl / bs:.1f}")
    print(f"set into the {args.steps:,}-step job: pipulate is {bl / pl:.0f}x faster than the baseline")
    print(f"durable sets per second, one process: {rate:,.0f} (goal >= 2,000)")


if __name__ == "__main__":
    main()
