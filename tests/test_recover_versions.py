"""Saved notebook versions: the post-save hook, through a real Jupyter server."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from tests.conftest import stop_process
from tests.test_recover_support import run_cli

REPO = Path(__file__).resolve().parent.parent
WORKSTATION_CONFIG = REPO / "pipulate" / "jupyter" / "config"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook(markdown: str, code: str) -> dict:
    nb = v4.new_notebook()
    nb.cells = [v4.new_markdown_cell(markdown), v4.new_code_cell(code)]
    return json.loads(nbformat.writes(nb))


@pytest.fixture
def jupyter_server(tmp_path, isolated_home):
    """A real jupyter_server on a free port, with the workstation's post-save hook."""
    root = tmp_path / "notebooks"
    root.mkdir()
    port, token = free_port(), "test-token-recover"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "jdata"), "PIPULATE_HOME": str(isolated_home)}
    if (WORKSTATION_CONFIG / "jupyter_server_config.py").is_file():
        env["JUPYTER_CONFIG_DIR"] = str(WORKSTATION_CONFIG)  # the workstation's own server config
        extra = []
    else:
        cfg = tmp_path / "jupyter_server_config.py"
        cfg.write_text('c.FileContentsManager.post_save_hook = '
                       '"pipulate.recover.versions.post_save_hook"\n')
        env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "jconfig")
        extra = [f"--config={cfg}"]
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.open_browser=False", "--allow-root",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", *extra],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                call(base, token, "GET", "/api/status")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter server did not start:\n"
                                       + (tmp_path / "server.log").read_text(errors="replace"))
                time.sleep(0.2)
        yield base, token, root
    finally:
        stop_process(proc)
        log.close()


def call(base: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def test_two_saves_make_two_versions_and_the_first_restores(jupyter_server, tmp_path):
    base, token, root = jupyter_server
    first, second = notebook("# First draft", "x = 1"), notebook("# Second draft", "x = 2")
    for content in (first, second, second):  # the identical third save adds nothing
        call(base, token, "PUT", "/api/contents/analysis.ipynb",
             {"type": "notebook", "format": "json", "content": content})
    nb_path = root / "analysis.ipynb"

    from pipulate.recover.versions import NotebookVersions

    store = NotebookVersions()
    versions = store.list(nb_path)
    store.close()
    assert len(versions) == 2, (tmp_path / "server.log").read_text()
    old_id = versions[-1].id

    code, out, err = run_cli("versions", str(nb_path))
    assert code == 0, err
    assert str(old_id) in out and "1 code, 1 markdown" in out

    code, out, err = run_cli("versions")
    assert code == 0 and str(nb_path) in out

    # Restore to a new file: the notebook is not touched.
    copy = tmp_path / "first.ipynb"
    code, out, err = run_cli("versions", str(nb_path), "--restore", str(old_id), "-o", str(copy))
    assert code == 0, err
    assert nbformat.read(copy, as_version=4).cells[0].source == "# First draft"
    assert nbformat.read(nb_path, as_version=4).cells[0].source == "# Second draft"

    # Restore over the notebook: the current file is backed up first.
    code, out, err = run_cli("versions", str(nb_path), "--restore", str(old_id))
    assert code == 0, err
    assert nbformat.read(nb_path, as_version=4).cells[0].source == "# First draft"
    backups = list(root.glob("analysis.before-restore-*.ipynb"))
    assert len(backups) == 1
    assert nbformat.read(backups[0], as_version=4).cells[0].source == "# Second draft"

    # -o onto an existing file is refused.
    code, _, err = run_cli("versions", str(nb_path), "--restore", str(old_id), "-o", str(copy))
    assert code == 1 and "already exists" in err


def test_versions_are_bounded_by_the_setting(tmp_path, isolated_home, monkeypatch):
    from pipulate.recover import versions

    monkeypatch.setenv("PIPULATE_NOTEBOOK_VERSIONS_KEEP", "3")
    monkeypatch.setattr(versions, "COLLECT_EVERY_SECONDS", 0.0)
    nb = tmp_path / "n.ipynb"
    for i in range(6):
        nb.write_text(json.dumps(notebook(f"# v{i}", f"x = {i}")))
        versions.post_save_hook(model={"type": "notebook"}, os_path=str(nb), contents_manager=None)
    store = versions.NotebookVersions()
    kept = store.list(nb)
    assert len(kept) == 3
    assert ["".join(json.loads(store.data(v))["cells"][0]["source"]) for v in kept] == [
        "# v5", "# v4", "# v3"]
    # garbage collection of the store sees these blobs as in use
    assert {v.blob for v in kept} <= store.db.referenced_blobs()
    store.close()


def test_the_hook_never_raises(tmp_path, caplog):
    from pipulate.recover.versions import post_save_hook

    post_save_hook(model={"type": "notebook"}, os_path=str(tmp_path / "missing.ipynb"),
                   contents_manager=None)
    assert "could not keep a version" in caplog.text
    post_save_hook(model={"type": "file"}, os_path=str(tmp_path / "x.txt"), contents_manager=None)


def test_unknown_version_and_unknown_notebook(tmp_path):
    code, _, err = run_cli("versions", "--restore", "12345")
    assert code == 1 and "no saved version 12345" in err
    code, _, err = run_cli("versions", "--restore", str(2**63))  # past SQLite's integers
    assert code == 1 and f"no saved version {2**63}" in err
    code, _, err = run_cli("versions", str(tmp_path / "never.ipynb"))
    assert code == 1 and "no saved versions of" in err
