"""The Recovery page (apps/recovery.py): sessions, checkpoints, saved versions, downloads."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from tests.test_recover_support import shell_sessions

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture
def client(isolated_home, tmp_path, monkeypatch):
    import server

    from .conftest import web_client

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    monkeypatch.setenv("PIPULATE_NOTEBOOKS_DIR", str(notebooks))
    app = server.create_app(home=isolated_home)
    with web_client(app) as c:
        c.notebooks = notebooks
        yield c
    app.state.pip.close()


def test_page_lists_sessions_checkpoints_and_versions_and_downloads_each(client, tmp_path):
    from pipulate.recover.versions import post_save_hook

    shell_sessions(Path(os.environ["IPYTHONDIR"]), [["first_session = 1"], ["lost_code = 42", "lost_code + 1"]])
    nb = client.notebooks / "emptied.ipynb"
    full = v4.new_notebook()
    full.cells = [v4.new_markdown_cell("# Kept in a checkpoint"), v4.new_code_cell("k = 1")]
    (client.notebooks / ".ipynb_checkpoints").mkdir()
    nbformat.write(full, client.notebooks / ".ipynb_checkpoints" / "emptied-checkpoint.ipynb")
    nbformat.write(v4.new_notebook(), nb)
    saved = tmp_path / "saved.ipynb"
    saved.write_text(nbformat.writes(full))
    post_save_hook(model={"type": "notebook"}, os_path=str(saved), contents_manager=None)

    html = client.get("/recovery").text
    assert "lost_code = 42" in html and "first_session = 1" in html
    assert "emptied.ipynb" in html and "differs" in html
    assert str(saved.resolve()) in html

    r = client.get("/recovery/session?s=2")
    assert r.status_code == 200 and "lost_code + 1" in r.text

    r = client.get("/recovery/session.ipynb?s=last")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    got = nbformat.reads(r.text, as_version=4)
    nbformat.validate(got)
    assert [c.source for c in got.cells] == ["lost_code = 42", "lost_code + 1"]

    r = client.get("/recovery/checkpoint.ipynb?path=.ipynb_checkpoints/emptied-checkpoint.ipynb")
    assert r.status_code == 200 and 'filename="emptied.ipynb"' in r.headers["content-disposition"]
    assert nbformat.reads(r.text, as_version=4).cells[0].source == "# Kept in a checkpoint"

    from pipulate.recover.versions import NotebookVersions

    store = NotebookVersions()
    (version,) = store.list(saved)
    store.close()
    r = client.get(f"/recovery/versions?notebook={saved.resolve()}")
    assert r.status_code == 200 and f"/recovery/version.ipynb?id={version.id}" in r.text
    r = client.get(f"/recovery/version.ipynb?id={version.id}")
    assert r.status_code == 200
    assert nbformat.reads(r.text, as_version=4).cells[0].source == "# Kept in a checkpoint"


def test_empty_page_says_where_history_would_be(client):
    r = client.get("/recovery")
    assert r.status_code == 200
    assert "No kernel history found" in r.text and "No saved versions yet" in r.text


@pytest.mark.parametrize("url, status, message", [
    ("/recovery/session?s=99", 400, "no session"),
    ("/recovery/session?s=banana", 400, "is not a session"),
    ("/recovery/session.ipynb", 400, "Name a session"),
    ("/recovery/checkpoint.ipynb?path=../../etc/passwd", 400, "not a checkpoint"),
    ("/recovery/checkpoint.ipynb?path=.ipynb_checkpoints/none-checkpoint.ipynb", 404, "No checkpoint"),
    ("/recovery/version.ipynb?id=abc", 400, "whole number"),
    ("/recovery/version.ipynb?id=999", 400, "no saved version 999"),
    ("/recovery/versions?notebook=/nowhere.ipynb", 404, "No saved versions"),
])
def test_bad_input_gets_a_4xx_with_a_message(client, url, status, message):
    shell_sessions(Path(os.environ["IPYTHONDIR"]), [["x = 1"]])
    r = client.get(url, headers={"HX-Request": "true"})
    assert r.status_code == status, r.text
    assert message in r.text


def test_live_button_reports_what_it_found(client, monkeypatch):
    from pipulate.recover import live

    monkeypatch.setattr(live, "find_processes", lambda: [])
    r = client.post("/recovery/live", headers={"HX-Request": "true"})
    assert r.status_code == 200 and "No running IPython kernels" in r.text


def test_page_loads_nothing_from_a_cdn(client):
    import re

    html = client.get("/recovery").text
    srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/htmx.min.js" in srcs
    assert not [s for s in srcs if s.startswith(("http:", "https:", "//"))]
