"""The jupyter_server extension (pipulate/jupyter/server/) in a real JupyterLab started as
`pipulate up` starts it: every endpoint with good and bad input, without a token and with one.

The kernel that writes the state is one JupyterLab starts for the notebook, so the server and
the kernel must name the notebook the same way for the endpoints to find its state.
"""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from .test_up import checkout, free_ports, get_json, run_cells, running  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(600)

CELLS = ['x = 1\ny = "a"', 'x = 2\nz = [1, 2, 3]', 'del y']


def call(lab: str, token: str | None, method: str, route: str, query: dict | None = None,
         body=None, raw: bytes | None = None) -> tuple[int, dict]:
    url = f"{lab}pipulate/{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"raw": text.decode(errors="replace")}


@pytest.fixture
def lab(running, checkout):  # noqa: F811
    web_port, lab_port = free_ports(2)
    up = running("--port", str(web_port), "--jupyter-port", str(lab_port))
    url = up.wait_for("JupyterLab:").split()[-1]
    parsed = urllib.parse.urlparse(url)
    token = urllib.parse.parse_qs(parsed.query)["token"][0]
    return f"{parsed.scheme}://{parsed.netloc}/", token, checkout / "my_notebooks"  # what JupyterLab opens: the user's copies


def run_notebook(lab: str, token: str, name: str, cells: list[str]) -> list[dict]:
    """Put the notebook and run its cells in a kernel JupyterLab starts for it."""
    content = {"nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (pipulate)", "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"c{i}", "source": s, "metadata": {}, "outputs": [],
                   "execution_count": None} for i, s in enumerate(cells)]}
    get_json(lab + f"api/contents/{name}", token, "PUT", {"type": "notebook", "content": content})
    session = get_json(lab + "api/sessions", token, "POST",
                       {"path": name, "name": name, "type": "notebook", "kernel": {"name": "python3"}})
    # The last cell waits for the background saves: every version is committed when it returns.
    settle = ("__import__('pipulate.kernel_state.extension', fromlist=['current'])"
              ".current(get_ipython()).flush()")
    results = asyncio.run(run_cells(lab, token, session["kernel"]["id"], cells + [settle]))
    assert [r["status"] for r in results] == ["ok"] * (len(cells) + 1), results
    return results


def test_every_endpoint_with_good_and_bad_input(lab):
    url, token, notebooks = lab
    # Without a token (or with a wrong one) nothing answers.
    for method, route, query, body in [("GET", "state", {"path": "srv.ipynb"}, None),
                                       ("DELETE", "state", {"path": "srv.ipynb"}, None),
                                       ("GET", "state/diff", {"path": "srv.ipynb", "a": 1, "b": 2}, None),
                                       ("POST", "state/select", None, {"path": "srv.ipynb"}),
                                       ("POST", "state/skip-restore", None, {"path": "srv.ipynb"}),
                                       ("GET", "recover", {"path": "srv.ipynb"}, None),
                                       ("POST", "recover/open", None, {"path": "srv.ipynb", "source": "session",
                                                                       "ref": "1"})]:
        for bad in (None, "wrong-token"):
            status, _ = call(url, bad, method, route, query, body)
            assert status == 403, (method, route, bad, status)

    status, info = call(url, token, "GET", "info")
    assert status == 200 and info["large_state_bytes"] == 1024**3
    # The launcher's link to the web app carries the workstation's one token: it logs the user in.
    assert info["web_app_url"].startswith("http://127.0.0.1:") and info["web_app_url"].endswith(f"/?token={token}")
    assert call(url, None, "GET", "info")[0] == 403

    # A notebook with no state yet.
    status, empty = call(url, token, "GET", "state", {"path": "srv.ipynb"})
    assert status == 200 and empty["has_saved_state"] is False and empty["current"] is None
    assert empty["large_state_bytes"] == 1024**3

    run_notebook(url, token, "srv.ipynb", CELLS)
    status, state = call(url, token, "GET", "state", {"path": "srv.ipynb"})
    assert status == 200, state
    assert state["notebook"] == "srv.ipynb" and state["has_saved_state"]
    assert [v["version"] for v in state["versions"]] == [3, 2, 1]
    assert [v["cell"] for v in state["versions"]] == ["del y", "x = 2", "x = 1"]
    assert [v["name"] for v in state["current"]["variables"]] == ["x", "z"]
    status, v1 = call(url, token, "GET", "state", {"path": "srv.ipynb", "version": 1})
    assert status == 200 and [v["name"] for v in v1["current"]["variables"]] == ["x", "y"]

    status, diff = call(url, token, "GET", "state/diff", {"path": "srv.ipynb", "a": 1, "b": 3})
    assert status == 200 and diff == {"from": 1, "to": 3, "added": ["z"], "deleted": ["y"], "modified": ["x"]}

    status, chosen = call(url, token, "POST", "state/select", body={"path": "srv.ipynb", "version": 2})
    assert status == 200 and chosen["version"] == 2
    assert call(url, token, "GET", "state", {"path": "srv.ipynb"})[1]["next_restore"] == 2
    status, skip = call(url, token, "POST", "state/skip-restore", body={"path": "srv.ipynb"})
    assert status == 200 and skip["notebook"] == "srv.ipynb"

    # Bad input: a 4xx with a message, never a 500.
    bad = [("GET", "state", {}, None, 400, "path is required"),
           ("GET", "state", {"path": "../outside.ipynb"}, None, 403, "outside the notebooks folder"),
           ("GET", "state", {"path": "/etc/passwd"}, None, 400, "relative"),
           ("GET", "state", {"path": "srv.ipynb", "version": 99}, None, 404, "no version 99"),
           ("GET", "state", {"path": "srv.ipynb", "version": "two"}, None, 400, "whole number"),
           ("GET", "state", {"path": "nothing.ipynb", "version": 1}, None, 404, "no saved state"),
           ("GET", "state/diff", {"path": "srv.ipynb", "a": 1}, None, 400, "a and b are required"),
           ("GET", "state/diff", {"path": "srv.ipynb", "a": 1, "b": 42}, None, 404, "no version 42"),
           ("GET", "state/diff", {"path": "srv.ipynb", "a": 0, "b": 1}, None, 400, "1 or more"),
           ("POST", "state/select", None, {"path": "srv.ipynb", "version": 42}, 404, "no version 42"),
           ("POST", "state/select", None, {"path": "nothing.ipynb"}, 404, "no saved state"),
           ("POST", "state/select", None, {"version": 1}, 400, "path is required"),
           ("POST", "state/select", None, [1, 2], 400, "JSON object"),
           ("POST", "state/skip-restore", None, {"path": "../x.ipynb"}, 403, "outside"),
           ("GET", "recover", {"path": "../../etc/x.ipynb"}, None, 403, "outside"),
           ("POST", "recover/open", None, {"path": "srv.ipynb", "source": "attic", "ref": "1"}, 400, "source"),
           ("POST", "recover/open", None, {"path": "srv.ipynb", "source": "session"}, 400, "ref is required"),
           ("POST", "recover/open", None, {"path": "srv.ipynb", "source": "session", "ref": "9999"}, 404,
            "no session 9999"),
           ("POST", "recover/open", None, {"path": "srv.ipynb", "source": "version", "ref": "x"}, 400, "number"),
           ("POST", "recover/open", None, {"path": "srv.ipynb", "source": "version", "ref": "9999"}, 404,
            "no saved version 9999"),
           ("POST", "recover/open", None, {"path": "srv.ipynb", "source": "checkpoint", "ref": "../../x"}, 403,
            "outside"),
           ("POST", "recover/open", None, {"path": "srv.ipynb", "source": "checkpoint", "ref": "srv.ipynb"}, 404,
            "not a checkpoint")]
    for method, route, query, body, want, words in bad:
        status, answer = call(url, token, method, route, query, body)
        assert status == want and words in answer.get("message", ""), (route, query, body, status, answer)
    status, answer = call(url, token, "POST", "state/select", raw=b"{not json")
    assert status == 400 and "JSON object" in answer["message"]

    # Recovery: the session that ran srv.ipynb's cells comes first, and opens as a new notebook.
    status, found = call(url, token, "GET", "recover", {"path": "srv.ipynb"})
    assert status == 200, found
    best = found["sessions"][0]
    assert best["score"] and best["cells"] >= len(CELLS), found["sessions"]
    status, opened = call(url, token, "POST", "recover/open",
                          body={"path": "srv.ipynb", "source": "session", "ref": best["ref"]})
    assert status == 201 and opened["path"] == "srv-recovered-1.ipynb", opened
    recovered = json.loads((notebooks / "srv-recovered-1.ipynb").read_text())
    assert ["".join(c["source"]) for c in recovered["cells"]][:len(CELLS)] == CELLS
    # Saved notebook versions (the save hook kept one when the notebook was PUT) open too.
    assert found["versions"], found
    status, opened = call(url, token, "POST", "recover/open",
                          body={"path": "srv.ipynb", "source": "version", "ref": found["versions"][0]["ref"]})
    assert status == 201 and opened["path"] == "srv-recovered-2.ipynb", opened
    # A checkpoint that differs from its notebook.
    (notebooks / ".ipynb_checkpoints").mkdir(exist_ok=True)
    (notebooks / ".ipynb_checkpoints" / "srv-checkpoint.ipynb").write_text(json.dumps(recovered))
    status, found = call(url, token, "GET", "recover", {"path": "srv.ipynb"})
    assert [c["ref"] for c in found["checkpoints"]] == [".ipynb_checkpoints/srv-checkpoint.ipynb"]
    status, opened = call(url, token, "POST", "recover/open", body={
        "path": "srv.ipynb", "source": "checkpoint", "ref": ".ipynb_checkpoints/srv-checkpoint.ipynb"})
    assert status == 201 and opened["path"] == "srv-recovered-3.ipynb", opened

    # Clear: the state is gone, and clearing again says so.
    status, cleared = call(url, token, "DELETE", "state", {"path": "srv.ipynb"})
    assert status == 200 and cleared["cleared"] is True
    status, cleared = call(url, token, "DELETE", "state", {"path": "srv.ipynb"})
    assert status == 200 and cleared["cleared"] is False
    assert call(url, token, "GET", "state", {"path": "srv.ipynb"})[1]["has_saved_state"] is False
