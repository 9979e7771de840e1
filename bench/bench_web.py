"""Web workflows under load: N concurrent clients walk the Hello workflow on a real server.

    python bench/bench_web.py                   50 clients for 20 s
    python bench/bench_web.py --duration 3      a smoke run
    python bench/bench_web.py --clients 10 --url http://127.0.0.1:5001   against a running server
                                                (its token in PIPULATE_TOKEN)

Each client loops: start a new key, submit first_name, last_name and greeting,
finalize; every request must answer 200. Afterwards every step each client was
told was saved is read back from the store: a missing or different value is a
lost step. Prints requests, errors, lost steps, throughput, and the median and
p99 latency of step submissions. Exits 1 on any error or lost step.

Unless --url is given it starts ``python server.py --no-reload`` on a free
loopback port with a temporary PIPULATE_HOME (the real data/ is never touched).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HX = {"HX-Request": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, token: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PIPULATE_HOME": str(home), "PIPULATE_PORT": str(port), "PIPULATE_HOST": "127.0.0.1",
           "PIPULATE_TOKEN": token}
    proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "--no-reload", "--log-level", "warning"],
                            env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


class Stats:
    def __init__(self):
        self.latencies: list[float] = []
        self.requests = 0
        self.errors: list[str] = []
        self.saved: dict[str, dict] = {}   # key -> {step: value} the server confirmed


async def client_loop(n: int, client: httpx.AsyncClient, stop_at: float, stats: Stats) -> None:
    i = 0
    while time.perf_counter() < stop_at:
        key = f"bench-{n}-{i}"
        i += 1
        values = {"first_name": f"First{n}x{i}", "last_name": f"Last{n}x{i}", "greeting": f"Hello {n}/{i}"}
        calls = [("/hello/start", {"key": key}, None)]
        calls += [(f"/hello/step/{step}", {"key": key, "value": value}, step) for step, value in values.items()]
        calls += [("/hello/finalize", {"key": key}, "finalized")]
        for path, data, step in calls:
            t0 = time.perf_counter()
            try:
                r = await client.post(path, data=data, headers=HX)
                ok = r.status_code == 200
                why = f"{path} {key}: HTTP {r.status_code} {r.text[:120]!r}"
            except httpx.HTTPError as exc:
                ok, why = False, f"{path} {key}: {type(exc).__name__}: {exc}"
            dt = time.perf_counter() - t0
            stats.requests += 1
            if not ok:
                stats.errors.append(why)
                break
            if step is not None:
                stats.latencies.append(dt)
                stats.saved.setdefault(key, {})[step] = values.get(step, True)


async def run(url: str, clients: int, duration: float, token: str) -> Stats:
    stats = Stats()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 headers={"Authorization": f"token {token}"}) as client:
        stop_at = time.perf_counter() + duration
        await asyncio.gather(*[client_loop(n, client, stop_at, stats) for n in range(clients)])
    return stats


def lost_steps(home: Path, saved: dict[str, dict]) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from pipulate import Pipulate

    pip = Pipulate(home)
    lost = []
    for key, steps in saved.items():
        stored = pip.read(key)
        for step, value in steps.items():
            if stored.get(step) != value:
                lost.append(f"{key}/{step}: expected {value!r}, stored {stored.get(step)!r}")
    pip.close()
    return lost


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--url", help="a running server (its PIPULATE_HOME must be given with --home)")
    parser.add_argument("--home", help="the store to check for lost steps (with --url)")
    args = parser.parse_args(argv)

    tmp = None
    proc = None
    token = os.environ.get("PIPULATE_TOKEN") or secrets.token_hex(24)
    if args.url:
        url, home = args.url.rstrip("/"), Path(args.home) if args.home else None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="pipulate-bench-web-")
        home = Path(tmp.name)
        proc, url = start_server(home, token)
    try:
        started = time.perf_counter()
        stats = asyncio.run(run(url, args.clients, args.duration, token))
        elapsed = time.perf_counter() - started
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    lost = lost_steps(home, stats.saved) if home is not None else []
    steps = len(stats.latencies)
    print(f"clients {args.clients}, {elapsed:.1f} s, {stats.requests} requests "
          f"({stats.requests / elapsed:.0f}/s), {steps} steps saved, {len(stats.saved)} jobs")
    if stats.latencies:
        print(f"step latency: median {statistics.median(stats.latencies) * 1000:.1f} ms, "
              f"p99 {pct(stats.latencies, 0.99) * 1000:.1f} ms, max {max(stats.latencies) * 1000:.1f} ms")
    print(f"errors: {len(stats.errors)}, lost steps: {len(lost)}"
          + ("" if home is not None else " (not checked: give --home)"))
    for line in (stats.errors + lost)[:10]:
        print("  " + line)
    if tmp is not None:
        tmp.cleanup()
    return 1 if stats.errors or lost else 0


if __name__ == "__main__":
    sys.exit(main())
