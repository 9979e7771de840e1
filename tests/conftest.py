"""Shared fixtures: every test gets its own PIPULATE_HOME; nothing touches data/."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .pg_server import postgres_server, team_url  # noqa: F401
from .s3_server import s3_blobs, s3_server  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
# The web app's token in every test (PIPULATE_TOKEN): in-process apps and the servers the tests
# start read it from the environment; requests send AUTH. Tests of a token made per start unset it.
TOKEN = secrets.token_hex(16)
AUTH = {"Authorization": f"token {TOKEN}"}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Point PIPULATE_HOME, IPython's dir and Jupyter's runtime dir at temporary folders."""
    home = tmp_path / "pipulate-home"
    monkeypatch.setenv("PIPULATE_HOME", str(home))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("PIPULATE_TOKEN", TOKEN)
    import pipulate

    monkeypatch.delattr(pipulate, "pip", raising=False)
    return home


# The store contract runs on both backends: the embedded default, and the team backend
# (PostgreSQL: a fresh database per test; S3: a fresh bucket on the test SeaweedFS; both in
# the environment, so kernels and processes the test starts use them too).
BACKENDS = ["embedded", "team"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "team":
        request.getfixturevalue("team_url")
        request.getfixturevalue("s3_blobs")
    return request.param


@pytest.fixture
def ks(isolated_home, backend):
    """The kernel-state store on the test's home (and backend)."""
    from pipulate.kernel_state import KernelStateStore

    store = KernelStateStore(isolated_home)
    yield store
    store.close()


@pytest.fixture
def kernels(isolated_home, tmp_path):
    """Real ipykernels (jupyter_client) on the test's home, shut down afterwards."""
    from .kernel_helpers import Kernels

    work = tmp_path / "work"
    work.mkdir()
    running = Kernels(isolated_home, work)
    yield running
    running.close()


@pytest.fixture
def store(isolated_home, backend):
    from pipulate import Pipulate

    p = Pipulate(isolated_home)
    yield p
    p.close()


def web_client(app, raise_server_exceptions: bool = True, token: str | None = TOKEN, **kwargs):
    """Starlette's test client of the web app ``app``, sending ``token`` (the tests' one, or none
    if None) with every request."""
    from starlette.testclient import TestClient

    auth = {"Authorization": f"token {token}"} if token is not None else {}
    return TestClient(app, raise_server_exceptions=raise_server_exceptions, base_url="http://127.0.0.1:5001",
                      headers={**auth, **kwargs.pop("headers", {})}, **kwargs)


def run_python(code: str, env: dict | None = None, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (the kernel-restart case); raise on failure."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def repo_files() -> list[str]:
    """The repository's files: tracked and new ones (not ignored) per git, or, outside a git
    checkout (a tarball), every file but the local environment, data and caches."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True)
    if listed.returncode == 0:
        return [p for p in listed.stdout.decode().split("\0") if p]
    skip = {".git", ".venv", "data", "__pycache__", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints"}
    return [str(p.relative_to(REPO)) for p in REPO.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(REPO).parts)]


def copy_checkout(dest: Path) -> Path:
    """The repository's files copied to ``dest``: no .venv, and an empty data/."""
    for rel in repo_files():
        src = REPO / rel
        if not src.is_file() or rel.startswith(("data/", ".venv/")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    (dest / "data").mkdir(exist_ok=True)
    (dest / "notebooks").mkdir(exist_ok=True)
    assert not (dest / ".venv").exists()
    return dest


def stop_process(proc: subprocess.Popen, grace: float = 15) -> None:
    """Terminate ``proc``; kill it if it has not stopped after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
