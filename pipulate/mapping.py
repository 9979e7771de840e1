"""``pip.map``: run a function on each item of a list, each result a durable step.

The job's shape, shared with the web app's List to spreadsheet page:

- ``items``: the list, in its order (the DataFrame comes back in this order);
- ``function``: the name of the function;
- ``run``: ``{"status": "running" | "stopped" | "done", "total", "done", "errors",
  "function", "owner", "pid", "host", "started" | "finished"}``;
- one step per distinct item, named by ``item_step(item)``, holding
  ``{"item": item, <the function's columns>, "error": ...}``.

Results are written by the calling thread the moment they are done (several that
finish together go in one transaction), so a run killed at any instant keeps
every finished item, and the next run with the same job skips them. Work runs on
threads (or on any ``concurrent.futures.Executor``): never ``asyncio.run``, so it
works inside a Jupyter cell, whose thread already runs an event loop.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
import os
import queue
import socket
import threading
import time
from concurrent.futures import Executor, Future
from typing import Any, Callable, Iterable

STEP_PREFIXES = ("item:", "item#")  # readable names for short strings; hashes for the rest
MAX_READABLE = 200
ERROR_CHARS = 500


def item_step(item: Any, key: Callable[[Any], str] | None = None) -> str:
    """The step that holds ``item``'s result: stable across runs and processes."""
    if key is not None:
        text = key(item)
        if not isinstance(text, str) or not text:
            raise ValueError(f"key({item!r}) must return a non-empty string, got {text!r}")
        return "item:" + text if len(text) <= MAX_READABLE and text.isprintable() else "item#" + _digest(text)
    if isinstance(item, str) and 0 < len(item) <= MAX_READABLE and item.isprintable():
        return "item:" + item
    try:
        canonical = type(item).__name__ + ":" + json.dumps(item, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        canonical = type(item).__name__ + ":" + repr(item)
    return "item#" + _digest(canonical)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def is_item_step(step: str) -> bool:
    return step.startswith(STEP_PREFIXES)


def done_steps(store, job: str) -> list[str]:
    """The item steps ``job`` holds, in the order they landed (values not read)."""
    return [s for s in store.step_names(job, "item") if is_item_step(s)]


def function_name(func) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__name__
    return str(name)[:200]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --- who is running a job --------------------------------------------------------------------

def process_stamp() -> dict:
    """This process, as a run records it: another process can tell whether it still lives."""
    import psutil

    return {"pid": os.getpid(), "pid_started": psutil.Process().create_time(), "host": socket.gethostname()}


def run_is_live(run: Any) -> bool:
    """Whether ``run`` (a job's ``run`` step) is going on in a process that is still alive."""
    if not isinstance(run, dict) or run.get("status") != "running" or "pid" not in run:
        return False
    if run.get("host") != socket.gethostname():
        return True  # another machine's run (a team store): trust its word
    import psutil

    try:
        proc = psutil.Process(int(run["pid"]))
        return abs(proc.create_time() - float(run.get("pid_started", 0))) < 1.0 and proc.status() != "zombie"
    except (psutil.Error, ValueError, TypeError):
        return False


class JobBusyError(RuntimeError):
    """Another live process is running this job."""


# --- the default executor ----------------------------------------------------------------------

class DaemonPool(Executor):
    """A fixed pool of daemon threads. Unlike ThreadPoolExecutor's, a thread stuck in a call
    that timed out neither blocks the interpreter's exit (daemon) nor shrinks the pool:
    ``replace_one()`` starts a new thread, and the stuck one leaves when its call returns."""

    def __init__(self, workers: int):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._target = self._alive = 0
        for _ in range(workers):
            self.replace_one(grow=True)

    def replace_one(self, grow: bool = False) -> None:
        with self._lock:
            self._alive += 1
            if grow:
                self._target += 1
        threading.Thread(target=self._work, daemon=True, name="pip.map").start()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        fut: Future = Future()
        self._queue.put((fut, fn, args, kwargs))
        return fut

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            fut, fn, args, kwargs = task
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: B036 - handed to the waiting side
                    fut.set_exception(exc)
            with self._lock:
                if self._alive > self._target:  # a replacement took this thread's place
                    self._alive -= 1
                    return

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._target = 0
            alive = self._alive
        for _ in range(alive):
            self._queue.put(None)


class Writer:
    """Lands results on a thread of its own, all that are waiting in one transaction, so the
    coordinator goes on handing out items while a commit is being made durable."""

    def __init__(self, store, job: str, app, bar, on_result):
        self.store, self.job, self.app, self.bar, self.on_result = store, job, app, bar, on_result
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.abandoned = False  # the job was reverted or deleted meanwhile
        self.thread = threading.Thread(target=self._run, daemon=True, name="pip.map-writer")
        self.thread.start()

    def put(self, step: str, row: dict) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((step, row))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        done = False
        while not done:
            batch = [self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get())
            done = batch[-1] is None
            rows = dict(x for x in batch if x is not None)
            if not rows or self.abandoned or self.error is not None:
                continue
            try:
                if not _still_ours(self.store, self.job):
                    self.abandoned = True  # write nothing more
                    continue
                self.store.set_many(self.job, rows, app=self.app)
                self.bar.update(len(rows))
                if self.on_result is not None:
                    for row in rows.values():
                        self.on_result(row)
            except BaseException as exc:  # noqa: B036 - raised in the coordinator
                self.error = exc


# --- results -------------------------------------------------------------------------------------

def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


def make_row(item: Any, result: Any) -> dict:
    if not isinstance(result, dict):
        result = {"result": result}
    row = {"item": item}
    row.update({str(k): v for k, v in result.items() if k != "item"})
    row.setdefault("error", None)
    return row


def job_rows(store, job: str, items: list | None = None, key=None) -> list[dict]:
    """One row per item, in list order (the job's ``items`` when not given); ``{"item": x}``
    alone for an item not done yet."""
    if items is None:
        items = store.get(job, "items") or []
    steps = [item_step(it, key) for it in items]
    # One query for the whole job: 10,000 separate gets would cost seconds.
    done = {k: v for k, v in store.read(job).items() if is_item_step(k)}
    return [dict(done[s]) if isinstance(done.get(s), dict) else {"item": it} for it, s in zip(items, steps)]


def rows_frame(rows: list[dict]):
    import pandas as pd

    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    if "error" in columns:  # last, where a reader looks for it
        columns = [c for c in columns if c != "error"] + ["error"]
    frame = pd.DataFrame(rows, columns=columns or ["item"])
    for col in frame.columns:  # whole numbers with gaps (no status where a fetch failed) stay whole
        values = [r[col] for r in rows if r.get(col) is not None]
        if values and all(type(v) is int for v in values) and frame[col].dtype != "int64":
            frame[col] = frame[col].astype("Int64")
    return frame


def job_frame(store, job: str, items: list | None = None, key=None):
    """The job's results as a DataFrame, one row per item in list order."""
    return rows_frame(job_rows(store, job, items, key))


# --- the run -----------------------------------------------------------------------------------

class _Attempt:
    __slots__ = ("step", "item", "tries", "deadline")

    def __init__(self, step, item):
        self.step, self.item, self.tries, self.deadline = step, item, 0, None


def run_map(store, job: str, items: Iterable, func: Callable[[Any], dict], workers: int = 8,
            executor: Executor | None = None, *, retries: int = 0, backoff: float = 1.0,
            timeout: float | None = None, key: Callable[[Any], str] | None = None,
            redo_errors: bool = False, progress: bool = True, app: str | None = None,
            function: str | None = None, owner: str = "notebook", stop: threading.Event | None = None,
            on_result: Callable[[dict], None] | None = None):
    """Run ``func(item)`` for each item not done yet in ``job``; return the DataFrame of all.

    Args:
        workers: items in flight at once (also with an ``executor``: how many it is handed at once).
        executor: any ``concurrent.futures.Executor`` (a Dask client's ``get_executor()`` too);
            default: threads of this process.
        retries: further tries of an item whose call raised (or timed out), waiting
            ``backoff``, then twice that, ... seconds between tries.
        timeout: seconds one try may take; then it counts as failed (``TimeoutError``) and
            the run goes on (a thread cannot be stopped: a late answer is ignored).
        key: ``key(item) -> str`` names an item's step (default: the item itself when it is a
            short string, else a hash of its value); equal keys are done once.
        redo_errors: do again the items whose stored row has an ``error``.
        progress: show a progress bar (tqdm: the notebook bar in Jupyter, text elsewhere).
        stop: an Event; when set, no new item starts and the run ends ``stopped``.
    """
    from .store import check_name

    check_name("job", job)
    if not callable(func):
        raise TypeError(f"func must be callable, got {func!r}")
    if isinstance(items, (str, bytes)):
        raise TypeError("items must be a list of items, not one string (split it into lines first)")
    items = list(items)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    steps = [item_step(it, key) for it in items]
    first = {}
    for it, s in zip(items, steps):
        first.setdefault(s, it)

    previous = store.get(job, "run")
    if run_is_live(previous) and previous.get("pid") != os.getpid():
        raise JobBusyError(f"job {job!r} is being run by process {previous['pid']} ({previous.get('owner')}); "
                           "wait for it to finish or stop it first")
    name = function or function_name(func)
    setup = {}
    if store.get(job, "items") != items:
        setup["items"] = items
    if store.get(job, "function") != name:
        setup["function"] = name
    done = set(done_steps(store, job))
    if redo_errors:
        stored = store.read(job)
        done = {s for s in done if not (isinstance(stored.get(s), dict) and stored[s].get("error"))}
    todo = [s for s in first if s not in done]
    total = len(first)
    run_info = {"total": total, "function": name, "owner": owner, **process_stamp()}
    setup["run"] = {"status": "running", "done": total - len(todo), "started": _now(), **run_info}
    store.set_many(job, setup, app=app)

    errors = 0
    status = "stopped"
    try:
        errors = _drive(store, job, func, first, todo, workers, executor, retries, backoff, timeout,
                        progress, app, stop, on_result)
        status = "stopped" if stop is not None and stop.is_set() else "done"
    finally:
        have = len([s for s in done_steps(store, job) if s in first])
        if status == "done" and have < total:
            status = "stopped"
        if _still_ours(store, job):
            store.set(job, "run", {"status": status, "done": have, "errors": errors, "finished": _now(),
                                   **run_info}, app=app)
    return job_frame(store, job, items, key)


def _still_ours(store, job: str) -> bool:
    # The job may have been reverted or deleted while the run went on (the web app's Jobs page).
    run = store.get(job, "run")
    return isinstance(run, dict) and run.get("pid") == os.getpid() and run.get("status") == "running"


def _drive(store, job, func, first, todo, workers, executor, retries, backoff, timeout, progress, app,
           stop, on_result) -> int:
    """The coordinator loop: keep ``workers`` items in flight, land results as they come."""
    from tqdm.auto import tqdm

    pool = executor or DaemonPool(workers)
    queue_ = [_Attempt(s, first[s]) for s in reversed(todo)]  # a stack: pop() takes the next in order
    delayed: list[tuple[float, int, _Attempt]] = []  # retries waiting out their backoff
    inflight: dict[Future, _Attempt] = {}
    errors = seq = 0
    bar = tqdm(total=len(todo), desc=job[:40], unit="item", disable=not progress or not todo, leave=True)
    writer = Writer(store, job, app, bar, on_result)
    completed: queue.SimpleQueue = queue.SimpleQueue()  # futures as they finish (a callback each)
    try:
        while (queue_ or inflight or delayed) and not writer.abandoned:
            now = time.monotonic()
            while delayed and delayed[0][0] <= now:
                queue_.append(heapq.heappop(delayed)[2])
            if stop is not None and stop.is_set():
                queue_.clear()
                delayed.clear()
            while queue_ and len(inflight) < workers:
                attempt = queue_.pop()
                attempt.tries += 1
                attempt.deadline = now + timeout if timeout else None
                fut = pool.submit(func, attempt.item)
                inflight[fut] = attempt
                fut.add_done_callback(completed.put)
            if not inflight:
                if delayed:
                    _sleep_until(delayed[0][0], stop)
                continue
            wake = [a.deadline for a in inflight.values() if a.deadline] + [d for d, _, _ in delayed[:1]]
            wait_for = max(0.0, min(wake) - now) if wake else None
            if stop is not None:
                wait_for = 0.5 if wait_for is None else min(wait_for, 0.5)
            finished = []
            try:
                finished.append(completed.get(timeout=wait_for))
                while not completed.empty():
                    finished.append(completed.get())
            except queue.Empty:
                pass
            now = time.monotonic()
            # A future that timed out (and was dropped) may still report in: not ours any more.
            outcomes = [(f, inflight.pop(f)) for f in finished if f in inflight]
            for f, attempt in list(inflight.items()):
                if attempt.deadline is not None and now >= attempt.deadline:
                    f.cancel()
                    if isinstance(pool, DaemonPool):
                        pool.replace_one()  # the stuck thread keeps its call; the work goes on without it
                    outcomes.append((None, inflight.pop(f)))
            for f, attempt in outcomes:
                try:
                    if f is None:
                        raise TimeoutError(f"took longer than {timeout:g} s")
                    row = make_row(attempt.item, f.result())
                except Exception as exc:
                    if attempt.tries <= retries and not (stop is not None and stop.is_set()):
                        seq += 1
                        heapq.heappush(delayed, (now + backoff * 2 ** (attempt.tries - 1), seq, attempt))
                        continue
                    row = make_row(attempt.item, {"error": error_text(exc)})
                errors += bool(row.get("error"))
                writer.put(attempt.step, row)
    finally:
        for f in inflight:
            f.cancel()
        if pool is not executor:
            pool.shutdown(wait=False)
        try:
            writer.close()
        finally:
            bar.close()
    return errors


def _sleep_until(when: float, stop: threading.Event | None) -> None:
    delay = max(0.0, when - time.monotonic())
    if stop is not None:
        stop.wait(delay)
    else:
        time.sleep(delay)
