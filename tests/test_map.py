"""pip.map: results in order, durable one by one, resumed after a SIGKILL, errors as rows,
retries and timeouts, any Executor (a real Dask LocalCluster of worker processes), and a
job read by another process while a run is going."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import distributed
import pytest

from pipulate import Pipulate
from pipulate.mapping import JobBusyError, done_steps, item_step

from .conftest import REPO


def wait_until(condition, timeout=60.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_results_come_back_in_list_order_with_errors_as_rows(store):
    def work(x):
        time.sleep(0.001 * (10 - x % 10))  # later items finish first
        if x == 7:
            raise ValueError("seven is bad")
        return {"square": x * x, "text": f"n{x}"}

    frame = store.map("squares", list(range(20)), work, workers=6, progress=False)
    assert list(frame["item"]) == list(range(20))
    assert list(frame.columns) == ["item", "square", "text", "error"]
    assert frame.loc[7, "error"] == "ValueError: seven is bad"
    assert frame["error"].isna().sum() == 19
    assert frame.loc[19, "square"] == 361
    run = store.get("squares", "run")
    assert run["status"] == "done" and run["total"] == 20 and run["done"] == 20 and run["errors"] == 1
    assert store.get("squares", "items") == list(range(20))
    assert store.get("squares", item_step(3)) == {"item": 3, "square": 9, "text": "n3", "error": None}


def test_a_rerun_skips_done_items_and_only_does_new_ones(store):
    calls = []

    def work(url):
        calls.append(url)
        return {"length": len(url)}

    urls = [f"https://example.com/{i}" for i in range(5)]
    store.map("urls", urls, work, progress=False)
    assert sorted(calls) == sorted(urls)
    calls.clear()
    frame = store.map("urls", urls[:3] + ["https://example.com/new"] + urls[3:], work, progress=False)
    assert calls == ["https://example.com/new"]
    assert list(frame["item"]) == urls[:3] + ["https://example.com/new"] + urls[3:]
    assert "item:https://example.com/0" in store.read("urls")  # steps readable on the Jobs page


def test_duplicates_keys_and_odd_items(store):
    calls = []

    def work(item):
        calls.append(item)
        return len(str(item))  # not a dict: becomes the `result` column

    items = ["a", "a", {"x": [1, 2]}, ("t", 1), "x" * 500, 1, "1"]
    frame = store.map("odd", items, work, progress=False)
    assert len(calls) == 6  # "a" twice is done once
    assert list(frame["result"]) == [1, 1, 13, 8, 500, 1, 1]
    assert len({item_step(i) for i in items}) == 6  # 1 and "1" are different items

    frame = store.map("keyed", [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], lambda d: {"v": d["v"]},
                      key=lambda d: str(d["id"]), progress=False)
    assert set(store.step_names("keyed", "item:")) == {"item:1", "item:2"}
    with pytest.raises(TypeError, match="list of items"):
        store.map("bad", "https://example.com", work)
    with pytest.raises(ValueError, match="job"):
        store.map("", ["a"], work)


def test_retries_with_backoff_then_an_error_row(store):
    tries: dict[int, int] = {}

    def flaky(x):
        tries[x] = tries.get(x, 0) + 1
        if tries[x] <= 2:
            raise ConnectionError(f"try {tries[x]}")
        return {"ok": True}

    frame = store.map("flaky", [1, 2, 3], flaky, retries=2, backoff=0.01, progress=False)
    assert frame["ok"].tolist() == [True, True, True] and frame["error"].isna().all()
    assert tries == {1: 3, 2: 3, 3: 3}

    tries.clear()
    frame = store.map("flaky-once", [1, 2], flaky, retries=1, backoff=0.01, progress=False)
    assert frame["error"].tolist() == ["ConnectionError: try 2"] * 2
    # An error row counts as done; redo_errors tries those again.
    frame = store.map("flaky-once", [1, 2], flaky, progress=False)
    assert tries == {1: 2, 2: 2}
    frame = store.map("flaky-once", [1, 2], flaky, redo_errors=True, progress=False)
    assert frame["ok"].tolist() == [True, True] and frame["error"].isna().all()


def test_a_try_that_hangs_times_out_and_the_run_goes_on(store):
    release = threading.Event()

    def work(x):
        if x == "hang":
            release.wait(120)
        return {"x": x}

    try:
        frame = store.map("hangs", ["a", "hang", "b", "c"], work, workers=2, timeout=0.5, progress=False)
    finally:
        release.set()
    assert frame["error"].tolist()[1] == "TimeoutError: took longer than 0.5 s"
    assert frame["x"].tolist()[::2] == ["a", "b"] and frame.loc[3, "x"] == "c"


def test_a_stop_event_ends_the_run_stopped_and_a_rerun_finishes_it(store):
    stop = threading.Event()

    def work(x):
        if x == 3:
            stop.set()
        return {"x": x}

    frame = store.map("stoppable", list(range(10)), work, workers=1, stop=stop, progress=False)
    assert store.get("stoppable", "run")["status"] == "stopped"
    assert frame["x"].notna().sum() == 4
    frame = store.map("stoppable", list(range(10)), lambda x: {"x": x}, progress=False)
    assert store.get("stoppable", "run")["status"] == "done" and frame["x"].tolist() == list(range(10))


def test_any_executor_and_inside_a_running_event_loop(store):
    async def cell():  # a Jupyter cell runs while the kernel's asyncio loop is running
        assert asyncio.get_running_loop()
        with ThreadPoolExecutor(3) as pool:
            return store.map("in-loop", list(range(30)), lambda x: {"double": 2 * x}, executor=pool,
                             workers=3)

    frame = asyncio.run(cell())
    assert frame["double"].tolist() == [2 * x for x in range(30)]


SCRIPT = """
import sys, time
from pipulate import pip
log = open(sys.argv[1], "a", buffering=1)
def work(i):
    log.write(f"{i}\\n")
    if i >= int(sys.argv[2]):
        time.sleep(3600)  # the items past the cut never finish: the process is killed first
    return {"value": i * 10}
pip.map("killed", list(range(10)), work, workers=2, progress=False)
"""


def test_a_run_killed_with_sigkill_resumes_with_only_the_items_left(tmp_path, isolated_home):
    log = tmp_path / "calls.log"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(log), "6"], cwd=REPO,
                            env={**os.environ, "PIPULATE_HOME": str(isolated_home)})
    reader = Pipulate(isolated_home)
    try:
        wait_until(lambda: len(done_steps(reader, "killed")) == 6, what="six results")
        assert reader.get("killed", "run")["status"] == "running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        calls: list[int] = []
        frame = reader.map("killed", list(range(10)), lambda i: calls.append(i) or {"value": i * 10},
                           progress=False)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.close()
    assert sorted(calls) == [6, 7, 8, 9]
    assert frame["value"].tolist() == [i * 10 for i in range(10)]
    first_run = {int(x) for x in log.read_text().split()}
    assert set(range(6)) < first_run  # the first run did six, and had more in flight when killed


GATED = """
import os, sys, time
from pipulate import pip
gate = sys.argv[1]
def work(i):
    while not os.path.exists(os.path.join(gate, str(i))):
        time.sleep(0.02)
    return {"value": i}
pip.map("live", list(range(8)), work, workers=4, progress=False)
"""


@contextlib.contextmanager
def gated_run(tmp_path, home):
    """``pip.map`` of job ``live`` (8 items) in another process, each item waiting for its
    gate file; the first three gates are open. Yields (open_the_rest, a reader of the store);
    ``open_the_rest()`` lets the run finish and checks its exit code. A run left going is
    killed."""
    gate = tmp_path / "gate"
    gate.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", GATED, str(gate)], cwd=REPO,
                            env={**os.environ, "PIPULATE_HOME": str(home)})
    reader = Pipulate(home)

    def open_the_rest():
        for i in range(3, 8):
            (gate / str(i)).touch()
        assert proc.wait(60) == 0

    try:
        for i in (0, 1, 2):
            (gate / str(i)).touch()
        yield open_the_rest, reader
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.close()


def test_another_process_reads_the_job_while_a_run_is_going(tmp_path, isolated_home):
    with gated_run(tmp_path, isolated_home) as (open_the_rest, reader):
        wait_until(lambda: len(done_steps(reader, "live")) == 3, what="three results")
        state = reader.read("live")
        assert state["run"]["status"] == "running" and state["run"]["total"] == 8
        assert state["items"] == list(range(8)) and state[item_step(0)]["value"] == 0
        from pipulate.mapping import job_frame, run_is_live

        assert run_is_live(state["run"])
        assert job_frame(reader, "live")["value"].notna().sum() == 3
        with pytest.raises(JobBusyError, match="being run by process"):
            reader.map("live", list(range(8)), lambda i: {"value": i})
        open_the_rest()
        assert reader.get("live", "run")["status"] == "done"
        assert not run_is_live(reader.get("live", "run"))


NOTEBOOK_CELL = textwrap.dedent("""
    import os
    def fetch_len(url):
        return {"length": len(url), "pid": os.getpid()}
""")


def test_a_dask_local_cluster_of_worker_processes(store):
    # A function defined in a notebook lives in a module workers cannot import: made the same
    # way here, so cloudpickle must carry it to the worker processes by value.
    cell = {"__name__": "notebook_cell"}
    exec(NOTEBOOK_CELL, cell)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        urls = [f"https://example.com/{i}" for i in range(12)]
        frame = store.map("on-dask", urls, cell["fetch_len"], executor=client.get_executor(), workers=4,
                          progress=False)
    assert frame["item"].tolist() == urls
    assert frame["length"].tolist() == [len(u) for u in urls]
    assert os.getpid() not in set(frame["pid"])  # the work ran in the worker processes
    assert len(store.step_names("on-dask", "item:")) == 12
