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
def isolated_home(tmp_path, monkeypatch, backend):
    """Point PIPULATE_HOME, IPython's dir and Jupyter's runtime dir at temporary folders, on the
    test's store backend (``backend``)."""
    home = tmp_path / "pipulate-home"
    monkeypatch.setenv("PIPULATE_HOME", str(home))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("PIPULATE_TOKEN", TOKEN)
    import pipulate

    monkeypatch.delattr(pipulate, "pip", raising=False)
    return home


# Every test runs on each store backend (ids end in [embedded] / [team]): the embedded default,
# and the team backend (PostgreSQL: a fresh database per test; S3: a fresh bucket on the test
# SeaweedFS; both in the environment, so the kernels, servers and processes a test starts use
# them too). `--backends` (or PIPULATE_TEST_BACKENDS) narrows a run to some of them. A test or
# module marked `backends("embedded", reason=...)` runs on the backends named only: it opens no
# store, checks what only that backend has (the SQLite file, the key file), or sets up its stores
# by itself; a test's own mark wins over its module's.
BACKENDS = ("embedded", "team")


def pytest_addoption(parser):
    parser.addoption("--backends", default=os.environ.get("PIPULATE_TEST_BACKENDS", ",".join(BACKENDS)),
                     help="the store backends every test runs on, comma-separated: embedded (SQLite and "
                          "files), team (PostgreSQL and S3, servers started by the tests). Default: both.")


def pytest_configure(config):
    config.addinivalue_line("markers", "backends(*names, reason): runs on those store backends only, "
                                       "for the reason given")
    chosen = chosen_backends(config)
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown or not chosen:
        raise pytest.UsageError(f"--backends: {', '.join(unknown) or 'none given'}; "
                                f"choose from {', '.join(BACKENDS)}")


def chosen_backends(config) -> list[str]:
    return [name.strip() for name in config.getoption("backends").split(",") if name.strip()]


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    names = list(BACKENDS)
    only = metafunc.definition.get_closest_marker("backends")
    if only is not None:
        if not only.args or set(only.args) - set(BACKENDS) or not only.kwargs.get("reason"):
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: mark backends(NAME..., reason=...) "
                                    f"with names from {', '.join(BACKENDS)}")
        names = list(only.args)
    metafunc.parametrize("backend", names, indirect=True)


def pytest_collection_modifyitems(config, items):
    """Leave out the backends not chosen (deselected, not skipped: they were not asked for)."""
    chosen = set(chosen_backends(config))
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        (drop if callspec is not None and callspec.params.get("backend", "embedded") not in chosen
         else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def backend(request) -> str:
    if request.param == "team":
        request.getfixturevalue("team_url")
        request.getfixturevalue("s3_blobs")
    return request.param


def store_env() -> dict[str, str]:
    """The test backend's store settings in this environment (the team's database, bucket and S3
    credentials; nothing on the embedded backend): for a test that starts a process with an
    environment of its own."""
    return {k: v for k, v in os.environ.items()
            if k in ("PIPULATE_DATABASE_URL", "PIPULATE_BLOBS_URL", "PIPULATE_USER") or k.startswith("AWS_")}


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
