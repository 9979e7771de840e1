"""Shared fixtures: every test gets its own PIPULATE_HOME; nothing touches data/."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Point PIPULATE_HOME (and IPython's dir) at a temporary folder for every test."""
    home = tmp_path / "pipulate-home"
    monkeypatch.setenv("PIPULATE_HOME", str(home))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    import pipulate

    monkeypatch.delattr(pipulate, "pip", raising=False)
    return home


@pytest.fixture
def store(isolated_home):
    from pipulate import Pipulate

    p = Pipulate(isolated_home)
    yield p
    p.close()


def run_python(code: str, env: dict | None = None, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (the kernel-restart case); raise on failure."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
