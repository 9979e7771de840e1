"""install.sh, the path without Nix: Python check, .venv from the lock file, idempotent."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, copy_checkout as copy_repo

pytestmark = pytest.mark.backends("embedded", reason="builds the checkout's .venv; opens no store")


def install(repo: Path, *args: str, python: str | None = None, timeout: int = 900):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHON"] = python or sys.executable
    return subprocess.run([str(repo / "install.sh"), *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_setup_builds_a_venv_from_the_lock_file_and_a_second_run_installs_nothing(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    first = install(repo, "setup")
    assert first.returncode == 0, first.stderr
    assert "installing locked dependencies from requirements.lock" in first.stderr
    venv_python = repo / ".venv" / "bin" / "python"
    assert venv_python.is_file()
    assert (repo / ".venv" / "bin" / "pipulate").is_file()
    # The package runs from this copy (editable): its home is this copy's data/.
    where = subprocess.run([str(venv_python), "-c", "import pipulate, pipulate.home as h; "
                            "print(pipulate.__file__); print(h.checkout_root())"],
                           capture_output=True, text=True, check=True, cwd=tmp_path,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout.split()
    assert Path(where[0]).is_relative_to(repo) and Path(where[1]) == repo
    # Bytecode is compiled at install: a kernel that may not write it (PYTHONDONTWRITEBYTECODE,
    # a read-only install) does not compile pandas and pyarrow again at every start.
    compiled = subprocess.run([str(venv_python), "-c", "import importlib.util as u, os; print(all("
                               "os.path.exists(u.cache_from_source(u.find_spec(m).origin)) "
                               "for m in ('pandas', 'pyarrow', 'pipulate')))"],
                              capture_output=True, text=True, check=True, cwd=tmp_path,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}).stdout
    assert compiled.strip() == "True"
    # The JupyterLab extension is enabled for a `jupyter` run from .venv too, not only under
    # `pipulate up` (an editable install leaves out the package's data files).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHONPATH"))}
    listed = subprocess.run([str(repo / ".venv" / "bin" / "jupyter"), "labextension", "list"], capture_output=True,
                            text=True, cwd=tmp_path, env={**env, "HOME": str(tmp_path)})
    assert re.search(r"pipulate-jupyterlab v\S+ \S*enabled", listed.stdout + listed.stderr), listed
    server = subprocess.run([str(repo / ".venv" / "bin" / "jupyter"), "server", "extension", "list"],
                            capture_output=True, text=True, cwd=tmp_path, env={**env, "HOME": str(tmp_path)})
    assert re.search(r"pipulate\.jupyter\.server\S* \S*enabled", server.stdout + server.stderr), server

    started = time.monotonic()
    second = install(repo, "setup")
    assert second.returncode == 0, second.stderr
    assert "installing" not in second.stderr and "making" not in second.stderr
    assert time.monotonic() - started < 10

    # `test` mode adds the test lock and runs pytest with the arguments it is given.
    selected = "tests/test_install.py::test_a_python_older_than_3_11_is_refused_with_a_clear_message"
    tested = install(repo, "test", "-q", "-p", "no:cacheprovider", "--backends=embedded", selected)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "installing locked dependencies from requirements-test.lock" in tested.stderr
    assert "1 passed" in tested.stdout


FAKE_UV = """#!/bin/sh
# Records what install.sh asks of uv; `uv venv DIR` makes DIR with a working python.
echo "uv $*" >> "$UV_LOG"
if [ "$1" = venv ]; then
    for last; do :; done
    mkdir -p "$last/bin" && ln -sf "$REAL_PYTHON" "$last/bin/python"
fi
"""


def test_a_venv_that_no_longer_runs_is_made_again(tmp_path):
    # install.sh's logic only, with a stand-in for uv (the real install is tested above).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text(FAKE_UV)
    (bin_dir / "uv").chmod(0o755)
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("install.sh", "requirements.lock", "pyproject.toml"):
        shutil.copy2(REPO / name, repo / name)
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to("/nonexistent/python3")  # a collected Nix path
    (repo / ".venv" / "stale-file").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", UV_LOG=str(tmp_path / "uv.log"),
               REAL_PYTHON=sys.executable, PYTHON=sys.executable)
    result = subprocess.run([str(repo / "install.sh"), "setup"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "does not run with Python 3.11+ any more: making it again" in result.stderr
    assert not (repo / ".venv" / "stale-file").exists()
    calls = (tmp_path / "uv.log").read_text().splitlines()
    assert calls[0].startswith("uv venv") and calls[0].endswith(".venv")
    assert any("-r requirements.lock" in c for c in calls)
    assert any("-e ." in c for c in calls)
    # Nothing changed: the second run asks uv for nothing.
    again = subprocess.run([str(repo / "install.sh"), "setup"], cwd=repo, env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "making" not in again.stderr
    assert (tmp_path / "uv.log").read_text().splitlines() == calls


def test_a_python_older_than_3_11_is_refused_with_a_clear_message(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\nif [ "$1" = "-V" ]; then echo "Python 3.9.18"; exit 0; fi\nexit 1\n')
    fake.chmod(0o755)
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy2(REPO / "install.sh", repo / "install.sh")
    result = install(repo, python=str(fake))
    assert result.returncode == 1
    assert "Python 3.11 or newer is needed" in result.stderr
    assert "Python 3.9.18" in result.stderr
    assert not (repo / ".venv").exists()


def test_a_missing_python_is_named(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy2(REPO / "install.sh", repo / "install.sh")
    result = install(repo, "setup", python=str(tmp_path / "no-such-python"))
    assert result.returncode == 1
    assert "install Python 3.11 or newer" in result.stderr


def test_an_unknown_command_is_refused(tmp_path):
    result = install(REPO, "frobnicate")
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr
