"""`pipulate recover live`: a running kernel whose history.sqlite was deleted."""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest

from tests.test_recover_support import execute, history_file, run_cli, start_kernel

pytestmark = pytest.mark.backends("embedded", reason="reads running kernels; opens no store")


def test_live_rescues_a_deleted_history_and_the_kernels_memory(tmp_path, monkeypatch, isolated_home):
    ipy = Path(os.environ["IPYTHONDIR"])
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    km, kc = start_kernel(ipy, runtime, extra_env={"JPY_SESSION_NAME": "work/analysis.ipynb"})
    try:
        execute(kc, "before_delete = 'written to the file'")
        execute(kc, "twice = before_delete * 2")
        time.sleep(0.5)
        code, out, err = run_cli("sessions")
        assert code == 0, err
        row = next(ln for ln in out.splitlines() if "before_delete" in ln)
        assert f"running, pid {km.provisioner.process.pid}" in row
        assert "[work/analysis.ipynb]" in row

        db = history_file(ipy)
        db.unlink()  # the user "cleans up" ~/.ipython while the kernel runs
        execute(kc, "after_delete = 'only in memory'")

        code, out, err = run_cli("live")
        assert code == 0, err
        assert f"pid {km.provisioner.process.pid}" in out
        assert "DELETED but is still open" in out and str(db) in out
        assert "notebook work/analysis.ipynb" in out
        assert "3 cells of this session are in the kernel's memory" in out
        recovered = sorted(p.name for p in (isolated_home / "recovered").iterdir())
        assert any(n.startswith("deleted-history-pid") for n in recovered), recovered
        assert any(n.startswith("live-pid") for n in recovered), recovered
        assert not db.exists()  # nothing was put back in IPython's place

        # The rescued copies are read by every other command.
        code, out, _ = run_cli("search", "before_delete")
        assert code == 0 and "before_delete = 'written to the file'" in out
        code, out, _ = run_cli("search", "after_delete")
        assert code == 0 and "only in memory" in out
        code, out, _ = run_cli("sessions")
        # the deleted file's copy is a prefix of the memory copy: only the fuller one is listed
        assert out.count("before_delete") == 1, out
        # (other kernels of this user may be rescued too: pick ours by its code)
        ref = next(ln.split()[0] for ln in out.splitlines() if "before_delete" in ln)
        target = tmp_path / "rescued.ipynb"
        code, out, err = run_cli("export", ref, "-o", str(target))
        assert code == 0, err
        sources = [c.source for c in nbformat.read(target, as_version=4).cells]
        assert sources == ["before_delete = 'written to the file'", "twice = before_delete * 2",
                           "after_delete = 'only in memory'"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_live_with_no_kernels_says_so(monkeypatch):
    from pipulate.recover import live

    monkeypatch.setattr(live, "find_processes", lambda: [])
    code, out, _ = run_cli("live")
    assert code == 0 and "no running IPython kernels" in out
