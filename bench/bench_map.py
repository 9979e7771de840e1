"""The list pattern's benchmark: pip.map, pip.scrape and a resume, on the local test site.

    .venv/bin/python bench/bench_map.py [--items 3000] [--workers 8] [--pages 24] [--repeat 3]

1. pip.map (every result a durable step) against a bare ThreadPoolExecutor loop doing
   the same work with the same number of workers and keeping nothing. The work: an HTTP
   GET of a page of the local test site (a separate process) with one shared httpx client;
   once for pages that answer at once (pure overhead: the machine's cores are the limit),
   once for pages that answer after ``--latency-ms`` (a network round trip).
   Runs interleaved, medians of ``--repeat``. Goal: pip.map within 10% of the bare loop's
   items per second.
2. pip.scrape pages per second with 1 and with ``--workers`` pages at once (one browser,
   a context per page), every page rendered afresh (refresh=True).
3. Resume: a 10,000-item job with 9,990 items done; the time from calling pip.map until
   the first new item starts. Goal: under a second.

Runs on a temporary PIPULATE_HOME; prints figures and ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def start_site() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "site_server.py")], stdout=subprocess.PIPE,
                            text=True)
    return proc, proc.stdout.readline().strip()


def bare_loop(urls, work, workers) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(work, urls):
            pass
    return len(urls) / (time.perf_counter() - started)


def with_map(pip, job, urls, work, workers) -> float:
    pip.delete(job)
    started = time.perf_counter()
    pip.map(job, urls, work, workers=workers, progress=False)
    return len(urls) / (time.perf_counter() - started)


def resume_cost(pip, total=10_000, done=9_990) -> float:
    from pipulate.mapping import item_step

    items = [f"https://example.com/page/{i}" for i in range(total)]
    for start in range(0, done, 1000):
        pip.set_many("resume", {item_step(u): {"item": u, "n": i, "error": None}
                                for i, u in enumerate(items[start:min(start + 1000, done)], start)})
    first: list[float] = []

    def work(url):
        if not first:
            first.append(time.perf_counter())
        return {"n": -1}

    started = time.perf_counter()
    frame = pip.map("resume", items, work, workers=8, progress=False)
    assert len(frame) == total and (frame["n"] == -1).sum() == total - done
    return first[0] - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--pages", type=int, default=24, help="pages scraped per figure")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-ms", type=int, default=20,
                        help="the second comparison's page delay: a network round trip, as on real sites")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PIPULATE_HOME"] = tmp
        import httpx

        from pipulate import Pipulate

        pip = Pipulate(tmp)
        site, base = start_site()
        try:
            client = httpx.Client(limits=httpx.Limits(max_connections=args.workers * 2))

            def work(url):
                r = client.get(url)
                return {"status": r.status_code, "bytes": len(r.content)}

            bare_loop([f"{base}/p{i}.html" for i in range(200)], work, args.workers)  # warm the connections
            with_map(pip, "warm-up", [f"{base}/p{i}.html" for i in range(200)], work, args.workers)
            for latency, n in ((0, args.items), (args.latency_ms, args.items // 3)):
                urls = ([f"{base}/p{i}.html" for i in range(n)] if not latency
                        else [f"{base}/slow{i}.html?ms={latency}" for i in range(n)])
                bare, mapped = [], []
                for _ in range(args.repeat):
                    bare.append(bare_loop(urls, work, args.workers))
                    mapped.append(with_map(pip, "bench", urls, work, args.workers))
                b, m = statistics.median(bare), statistics.median(mapped)
                print(f"per-item work: HTTP GET of a local page answering after {latency} ms, {n:,} items, "
                      f"{args.workers} workers, median of {args.repeat}")
                print(f"  bare ThreadPoolExecutor, keeps nothing: {b:8,.0f} items/s  (runs: "
                      f"{', '.join(f'{x:,.0f}' for x in bare)})")
                print(f"  pip.map, every result durable:          {m:8,.0f} items/s  (runs: "
                      f"{', '.join(f'{x:,.0f}' for x in mapped)})")
                print(f"  pip.map / bare: {m / b:.2f} (goal >= 0.90)\n")

            pip.scrape(f"{base}/p0.html", refresh=True)  # the browser is up before the clock starts
            rates = {}
            for n in (1, args.workers):
                pages = [f"{base}/js{i}.html?n={n}" for i in range(args.pages)]
                started = time.perf_counter()
                pip.map(f"scrape-{n}", pages, lambda u: pip.scrape(u, refresh=True), workers=n, progress=False)
                rates[n] = args.pages / (time.perf_counter() - started)
            print(f"pip.scrape ({args.pages} JavaScript pages, rendered afresh, screenshot and all):")
            for n, rate in rates.items():
                print(f"  {n} page(s) at once: {rate:6.1f} pages/s")
            print(f"  {args.workers} at once / 1 at a time: {rates[args.workers] / rates[1]:.2f}")

            cost = resume_cost(pip)
            print(f"\nresume: 10,000 items, 9,990 done: {cost * 1000:.0f} ms before the first new item starts "
                  "(goal < 1000 ms)")
        finally:
            site.terminate()
            site.wait()
            pip.close()


if __name__ == "__main__":
    main()
