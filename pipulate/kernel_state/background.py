"""Saves that finish after the cell, on one worker thread, in the order the cells ran.

The kernel's thread plans a save (``Saver.plan``: cheap, and nothing the next cells
do can change what it planned); this runs ``Saver.run`` - encoding, blob writes,
fsyncs, the commit - while the next cells run. At most ``max_queued`` saves wait;
a cell that would queue one more first waits for the oldest (memory stays bounded
when cells change data faster than the disk takes it).

A save that fails leaves the previous version whole. Later plans were made
relative to it, so the saves queued after it are dropped too; the extension
reports the failure with the next cell and plans its next save in full.

The worker runs at a lower CPU priority than the cells (``Settings.worker_nice``, Linux,
where each thread has its own nice value): when the machine's cores are busy -
other programs, or a cell's own threads - the cells get the CPU first and the
saves catch up in the gaps. Where the cores are free, it changes nothing.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from ..settings import Settings


def thread_priority() -> int:
    """The calling thread's nice value (Linux, where each thread has its own); else 0.

    Linux only: elsewhere ``getpriority``/``setpriority`` would take a thread id for a
    process id.
    """
    if sys.platform != "linux":
        return 0
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except OSError:
        return 0


def _yield_to_cells(nice: int) -> None:
    """Lower the calling thread's priority by ``nice`` levels, never above the kernel's own."""
    if sys.platform != "linux" or nice <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, thread_priority() + nice))
    except OSError:  # not allowed here (a sandbox): saves run at the kernel's priority
        pass


@dataclass
class Failure:
    label: str  # which cell's save ("cell [5]")
    error: BaseException


class BackgroundSaves:
    def __init__(self, run: Callable, max_queued: int = 32, nice: int = Settings.worker_nice):
        self._run = run
        self.max_queued = max(1, max_queued)
        self.nice = nice  # nice levels below the kernel
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipulate-background-save",
                                        initializer=_yield_to_cells, initargs=(nice,))
        self._queue: deque[Future] = deque()
        self._lock = threading.Lock()
        self._failures: list[Failure] = []
        self._broken = False  # a save failed: drop the ones queued after it
        self.last_result = None

    def submit(self, job, label: str) -> Future:
        while True:
            with self._lock:
                while self._queue and self._queue[0].done():
                    self._queue.popleft()
                if len(self._queue) < self.max_queued:
                    future = self._pool.submit(self._save, job, label)
                    self._queue.append(future)
                    return future
                oldest = self._queue[0]
            oldest.exception()  # wait for room; failures are collected by _save

    def _save(self, job, label: str):
        if self._broken:
            return None
        try:
            result = self._run(job)
        except BaseException as exc:  # reported with the next cell; never raised in the worker
            with self._lock:
                self._broken = True
                self._failures.append(Failure(label, exc))
            return None
        self.last_result = result
        return result

    def pending(self) -> int:
        with self._lock:
            return sum(1 for f in self._queue if not f.done())

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued save is done; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            queued = list(self._queue)
        for future in queued:
            try:
                future.exception(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False
        return True

    def take_failures(self) -> list[Failure]:
        """The failures since the last call; once the queue is drained, saving starts afresh."""
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            self.flush()
            self._broken = False
        return failures

    def shutdown(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)
