"""Team backend benchmark: durable ``pip.set`` per second, embedded (SQLite) vs team (PostgreSQL).

    .venv/bin/python bench/bench_team.py [--sets 500] [--database-url postgresql://...]

From 1 and from 16 processes at once, each setting steps of its own job (every set a
committed transaction: durable when it returns). Without ``--database-url`` a throwaway
PostgreSQL cluster on loopback is started (tests/pg_server.py; Debian's postgresql package)
with its default durability (fsync, synchronous_commit on). Prints sets per second and the
ratio team/embedded for each. (Blobs are not involved: the values are small and inline.)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORKER = """
import os, sys, time
from pipulate import Pipulate
p = Pipulate()
job, n, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
p.set(job, "warm", 0)  # connected and the tables open before the clock starts
while time.time() < start:
    time.sleep(0.001)
t0 = time.time()
for i in range(n):
    p.set(job, f"s{i % 50}", {"value": i, "note": "a typical small step value"})
print(t0, time.time())
"""


def sets_per_second(processes: int, sets: int, env: dict) -> float:
    start = time.time() + 3 + processes * 0.3  # every process is up and connected by then
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, f"job{i}", str(sets), str(start)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(processes)]
    spans = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"a writer failed: {err}")
        spans.append(tuple(map(float, out.split())))
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return processes * sets / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=int, default=500, help="sets per process")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--database-url", help="an existing team database (default: a throwaway server)")
    args = parser.parse_args()

    server = None
    url = args.database_url
    if url is None:
        from tests.pg_server import PostgresServer

        server = PostgresServer()
        url = server.user_url(server.make_database(), "bench")
    try:
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.processes:
                base = {k: v for k, v in os.environ.items() if k != "PIPULATE_DATABASE_URL"}
                embedded = sets_per_second(n, args.sets, {**base, "PIPULATE_HOME": f"{tmp}/e{n}"})
                team = sets_per_second(n, args.sets, {**base, "PIPULATE_HOME": f"{tmp}/t{n}",
                                                      "PIPULATE_DATABASE_URL": url})
                results.append((n, embedded, team))
    finally:
        if server is not None:
            server.close()

    print(f"durable pip.set per second ({args.sets} sets per process, each process its own job)")
    print(f"{'processes':>10} {'embedded':>12} {'team (pg)':>12} {'team/embedded':>15}")
    for n, embedded, team in results:
        print(f"{n:>10} {embedded:>12,.0f} {team:>12,.0f} {team / embedded:>15.2f}")


if __name__ == "__main__":
    main()
