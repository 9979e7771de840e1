"""The kernel side of the JupyterLab extension: the ``pipulate.state`` comm (status after each
save, the start-up restore report, restore and undo) and ``%state undo``, in real kernels
started from the shipped kernel spec.

A second client on the same kernel plays JupyterLab: it opens the comm and reads IOPub, where
the comm's messages arrive whichever thread sent them.
"""
from __future__ import annotations

import queue
import time
import uuid

import pytest

from pipulate.kernel_state import notes

from .kernel_helpers import SETTLE

pytestmark = pytest.mark.timeout(600)
DEADLINE = 120


class Front:
    """What JupyterLab does: open the comm, run cells, collect what the kernel sends.

    It is the kernel's one client (a second client in the test's process would share
    jupyter_client's event loop), reading IOPub itself: ``execute_interactive`` drops the
    messages of other parents, and comm messages sent from the save worker have none.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.kc = kernel.kc
        self.seen: list[dict] = []
        self.unread: list[dict] = []
        self.comm_id = None

    def _read(self, timeout: float) -> dict | None:
        try:
            msg = self.kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            return None
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == self.comm_id:
            self.unread.append(msg["content"]["data"])
        return msg

    def run(self, code: str) -> str:
        """Run a cell, wait for its background save; its output (a failed cell fails the test)."""
        out, errors = [], []
        for source, silent in ((code, False), (SETTLE, True)):
            msg_id = self.kc.execute(source, silent=silent, store_history=not silent, allow_stdin=False)
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline:
                msg = self._read(0.5)
                if msg is None or msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    errors.append(f"{content['ename']}: {content['evalue']}")
                elif kind == "status" and content["execution_state"] == "idle":
                    break
            else:
                raise AssertionError(f"cell did not finish: {source}")
        return "".join(out) + ("\n".join(errors) if errors else "")

    def open(self):
        """Open a new comm, as the front end does after each (re)start."""
        self.comm_id = uuid.uuid4().hex
        self.unread.clear()
        msg = self.kc.session.msg("comm_open", {"comm_id": self.comm_id, "target_name": "pipulate.state",
                                                "data": {}})
        self.kc.shell_channel.send(msg)

    def action(self, action: str, **data):
        msg = self.kc.session.msg("comm_msg", {"comm_id": self.comm_id, "data": {"action": action, **data}})
        self.kc.shell_channel.send(msg)
        return self.wait(lambda m: m.get("type") == "reply" and m.get("action") == action)

    def wait(self, matches, timeout: float = DEADLINE) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.unread:
                self._read(0.5)
                continue
            data = self.unread.pop(0)
            self.seen.append(data)
            if matches(data):
                return data
        raise AssertionError(f"no matching message; seen: {self.seen}")

    def saved(self, version: int) -> dict:
        """The status of a finished save of ``version`` (it may have come before an action's reply)."""
        def matches(m):
            return m.get("type") == "status" and not m["saving"] and m["version"] == version
        return next((m for m in self.seen if matches(m)), None) or self.wait(matches)


def test_status_after_each_save_undo_and_the_restore_report(kernels, ks):
    k, _ = kernels.start("lab.ipynb")
    front = Front(k)
    front.open()
    hello = front.wait(lambda m: m.get("type") == "status")
    assert hello["notebook"] == "lab.ipynb" and hello["version"] is None

    front.run("x = 1\ny = [1, 2]")
    # "saving" comes first, then the finished save: never the previous version as current.
    first = front.wait(lambda m: m.get("type") == "status" and m["version"] == 1)
    assert first["saving"] is False and first["variables"] == 2 and first["bytes"] > 0 and first["saved_at"]
    assert any(m.get("saving") for m in front.seen[:front.seen.index(first)]), front.seen
    front.run("x = 2\nz = 'new'")
    assert front.saved(2)["variables"] == 3
    assert notes.cell_lines(ks, "lab.ipynb") == {1: "x = 1", 2: "x = 2"}

    # Undo the last cell: x is 1 again, z (which it added) is gone, and that is a new version.
    reply = front.action("undo")
    assert reply["ok"] and "back to version 1" in reply["message"] and "removed z" in reply["message"], reply
    assert front.saved(3)["variables"] == 2
    assert front.run("print(x, 'z' in dir(), y)").strip() == "1 False [1, 2]"
    # Nothing further back than the first version.
    reply = front.action("undo")
    assert not reply["ok"] and "first saved one" in reply["message"], reply

    # A restart: the report waits for the front end that connects after it. `pip` is the
    # workstation's own (its import makes it again): not in the report's skipped list, which
    # would make JupyterLab's notice a warning on every notebook that uses pip.
    front.run("from pipulate import pip\nw = 5")
    front.saved(4)
    k.km.restart_kernel(now=False)
    k.kc.wait_for_ready(timeout=90)
    front.open()
    report = front.wait(lambda m: m.get("type") == "restore")
    assert report["on_start"] and report["version"] == 4 and report["restored"] == ["w", "x", "y"], report
    assert report["skipped"] == [], report
    assert "pipulate: restored 3 variables of lab.ipynb" in report["line"]

    # Restore an older version from the front end: in the kernel, and kept as the latest.
    reply = front.action("restore", version=2)
    assert reply["ok"] and "from version 2" in reply["message"], reply
    assert front.run("print(x, z)").strip().endswith("\n2 new")  # after the printed restore line
    assert ks.latest_version("lab.ipynb") == 5
    assert sorted(v["name"] for v in ks.variables("lab.ipynb")["variables"]) == ["w", "x", "y", "z"]
    reply = front.action("restore", version=99)
    assert not reply["ok"] and "no version 99" in reply["message"], reply
    reply = front.action("restore", version="two")
    assert not reply["ok"] and "whole number" in reply["message"], reply
    reply = front.action("fly")
    assert not reply["ok"] and "unknown action" in reply["message"], reply


def test_restart_without_restoring_keeps_the_versions(kernels, ks):
    k, _ = kernels.start("skip.ipynb")
    k.ok("a = 1")
    k.ok("a = 2")
    notes.request_skip_restore(ks, "skip.ipynb")
    out = k.restart()
    assert "was not restored, as asked" in out and "latest: 2" in out, out
    assert k.ok("print(get_ipython().run_line_magic('who_ls', ''))").strip() == "[]"
    assert [v["version"] for v in ks.versions("skip.ipynb")] == [2, 1]
    # The request is used once: the next restart restores again.
    out = k.restart()
    assert "restored 1 variable of skip.ipynb from version 2" in out, out


def test_state_undo_magic(kernels):
    k, _ = kernels.start("undo.ipynb")
    out, err = k.run("%state undo")
    assert err and "nothing to undo" in err, (out, err)
    k.ok("n = 1")
    k.ok("n = n + 1\nm = 'added'")
    out = k.ok("%state undo")
    assert "back to version 1" in out and "removed m" in out, out
    assert k.ok("print(n, 'm' in dir())").strip() == "1 False"
    # The undo survives a restart: it was saved as the latest version.
    assert "from version 3" in k.restart()
    assert k.ok("print(n)").strip() == "1"


def test_the_restore_report_names_what_can_be_rebuilt_and_the_rebuild_action_runs_it(kernels):
    k, _ = kernels.start("rebuild-lab.ipynb")
    k.ok("seed = [1, 2, 3]")
    k.ok("gen = (v * 10 for v in seed)")
    k.km.restart_kernel(now=False)
    k.kc.wait_for_ready(timeout=90)
    front = Front(k)
    front.open()
    report = front.wait(lambda m: m.get("type") == "restore")
    assert report["rebuildable"] == [{"name": "gen", "cells": "cell [3] of an earlier kernel"}], report
    reply = front.action("rebuild")
    assert reply["ok"] and "rebuilt 1 variable by running their cells again: gen" in reply["message"], reply
    assert front.run("print(list(gen))").strip().endswith("[10, 20, 30]")
    reply = front.action("rebuild")
    assert not reply["ok"] and "nothing to rebuild" in reply["message"], reply
