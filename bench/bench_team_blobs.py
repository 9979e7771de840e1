"""Kernel state on the embedded store (blob files, SQLite) vs blobs in S3 (PIPULATE_BLOBS_URL)
vs the whole team backend (S3 and the records on PostgreSQL, PIPULATE_DATABASE_URL).

Same namespace as bench_kernel_state.py (about SIZE MiB in 3 arrays and a DataFrame,
plus small variables), same runs on every backend; the S3 server is SeaweedFS on
loopback (from the test requirements, ``tests/s3_server.py``), PostgreSQL a throwaway
cluster on loopback (``tests/pg_server.py``):

1. full save of the namespace (S3: every blob uploaded before the commit);
2. per-cell save after a one-line change (goal: under 50 ms on S3 on loopback);
3. restore, its blobs in the local cache (a user's own machine);
4. restore with an empty cache (S3 only: a new machine, every blob downloaded).

    .venv/bin/python bench/bench_team_blobs.py                  # 1 GiB
    .venv/bin/python bench/bench_team_blobs.py --size-mib 128   # smoke run

Prints medians (seconds) and the ratios to the embedded store.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_kernel_state import build_namespace, machine, timed  # noqa: E402


def run_backend(name: str, home: Path, ns: dict, repeat: int) -> dict[str, list[float]]:
    from pipulate.kernel_state import KernelStateStore
    from pipulate.kernel_state.restoring import restore
    from pipulate.kernel_state.saving import Saver

    results: dict[str, list[float]] = {}
    ks = KernelStateStore(home)
    saver = Saver(ks, "bench.ipynb", "bench.ipynb")
    results["full save"] = timed(lambda: saver.save(ns, full=True), 1, settle=True)

    def cell():
        ns["counter"] += 1
        saver.save(ns, cell="counter += 1")

    results["per-cell save, one-line change"] = timed(cell, repeat, settle=True)

    def restored():
        target: dict = {}
        res = restore(ks, "bench.ipynb", target)
        assert not res.failed, res.failed

    results["restore, blobs in the local cache"] = timed(restored, repeat, settle=True)
    if name != "files":
        def empty_cache():
            shutil.rmtree(home / "blobs", ignore_errors=True)
            (home / "blobs").mkdir()

        results["restore, empty cache (a new machine)"] = timed(restored, max(1, repeat // 2), setup=empty_cache)
    ks.close()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=int(os.environ.get("PIPULATE_BENCH_SIZE_MIB", 1024)))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("PIPULATE_BENCH_REPEAT", 5)))
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)

    from tests.pg_server import PostgresServer
    from tests.s3_server import S3Server

    scratch = Path(tempfile.mkdtemp(prefix="pipulate-bench-team-", dir=args.dir))
    server = S3Server(scratch / "s3")
    postgres = PostgresServer()
    try:
        print(f"machine: {machine()}")
        server.start()
        bucket = server.make_bucket()
        ns = build_namespace(args.size_mib)
        total = sum(v.nbytes for v in (ns["a"], ns["b"], ns["c"])) + int(ns["df"].memory_usage().sum())
        print(f"namespace: {total / 2**20:.0f} MiB in 3 arrays + 1 DataFrame, plus small variables; "
              f"S3: SeaweedFS on loopback\n")
        os.environ.pop("PIPULATE_BLOBS_URL", None)
        files = run_backend("files", scratch / "files-home", ns, args.repeat)
        os.environ.update(server.env, PIPULATE_BLOBS_URL=f"s3://{bucket}/bench")
        s3 = run_backend("s3", scratch / "s3-home", ns, args.repeat)
        os.environ.update(PIPULATE_BLOBS_URL=f"s3://{server.make_bucket()}/bench",
                          PIPULATE_DATABASE_URL=postgres.user_url(postgres.make_database(), "bench"))
        team = run_backend("team", scratch / "team-home", ns, args.repeat)

        width = max(map(len, team))
        print(f"  {'seconds (median)'.ljust(width)}      files         s3       team   s3/files team/files")
        for key, runs in team.items():
            here, s3_here = statistics.median(runs), statistics.median(s3[key])
            there = statistics.median(files[key]) if key in files else None
            base = statistics.median(files["restore, blobs in the local cache"]) if there is None else there
            note = "" if there is not None else "  (vs files' restore)"
            shown = f"{there:10.4f}" if there is not None else " " * 10
            print(f"  {key.ljust(width)} {shown} {s3_here:10.4f} {here:10.4f} {s3_here / base:9.2f}x "
                  f"{here / base:9.2f}x{note}")
        for name, runs in (("S3 blobs, SQLite records", s3), ("team (PostgreSQL + S3)", team)):
            cell = statistics.median(runs["per-cell save, one-line change"])
            print(f"per-cell save, {name}: {cell * 1000:.1f} ms  (goal < 50 ms on loopback)")
    finally:
        server.kill()
        postgres.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
