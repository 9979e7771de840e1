"""`pipulate up` and the notebooks: the user works on copies, the shipped templates never change;
JupyterLab never asks about news (it is offline).

Each test runs the real `pipulate up` in a copy of the checkout (see test_up.py).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import urllib.request

import pytest

from pipulate.user_notebooks import for_this_python

from .test_browser import CHROMIUM, CHROMIUM_ARGS
from .test_up import checkout, free_ports, get_json, run_cells, running  # noqa: F401  (fixtures)
from .conftest import REPO

SHIPPED = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))  # every template, as shipped


def git(checkout, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=checkout, env=env, capture_output=True, text=True,
                          check=True).stdout


def start(running, *extra: str):
    web_port, lab_port = free_ports(2)
    up = running("--port", str(web_port), "--jupyter-port", str(lab_port), *extra)
    lab_url = up.wait_for("JupyterLab:").split()[-1]
    return up, f"http://127.0.0.1:{lab_port}/", lab_url.split("token=", 1)[1], lab_url


def stop(up) -> str:
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(60) == 0, up.output()
    return up.output()


def test_the_user_works_on_copies_and_the_templates_never_change(running, checkout):
    git(checkout, "init", "-q")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-qm", "the workstation as shipped")
    mine = checkout / "my_notebooks"

    up, lab, token, _ = start(running)
    # The user's folder has a copy of every template, and JupyterLab opens it.
    assert sorted(p.name for p in mine.glob("*.ipynb")) == SHIPPED
    for name in SHIPPED:
        assert (mine / name).read_bytes() == for_this_python((checkout / "notebooks" / name).read_bytes())
    listed = get_json(lab + "api/contents", token)
    assert sorted(c["name"] for c in listed["content"] if c["type"] == "notebook") == SHIPPED

    # Run hello_world's first cells in a kernel JupyterLab starts for the copy, save it with its
    # outputs and a checkpoint, and make a new notebook, as the buttons of JupyterLab do.
    model = get_json(lab + "api/contents/hello_world.ipynb", token)
    cells = [c for c in model["content"]["cells"] if c["cell_type"] == "code"][:2]
    session = get_json(lab + "api/sessions", token, "POST",
                       {"path": "hello_world.ipynb", "name": "hello_world.ipynb", "type": "notebook",
                        "kernel": {"name": "python3"}})
    results = asyncio.run(run_cells(lab, token, session["kernel"]["id"], [c["source"] for c in cells]))
    assert [r["status"] for r in results] == ["ok", "ok"], results
    for cell, result in zip(cells, results):
        cell["outputs"], cell["execution_count"] = result["outputs"], 1
    get_json(lab + "api/contents/hello_world.ipynb", token, "PUT",
             {"type": "notebook", "format": "json", "content": model["content"]})
    get_json(lab + "api/contents/hello_world.ipynb/checkpoints", token, "POST")
    new = get_json(lab + "api/contents", token, "POST", {"type": "notebook"})
    assert (mine / new["path"]).is_file()
    edited = (mine / "hello_world.ipynb").read_bytes()
    assert b"Mike" in edited

    assert git(checkout, "status", "--porcelain") == ""  # no tracked file changed, nothing new to add
    out = stop(up)
    assert f"copied to {mine}: " + ", ".join(SHIPPED) in out

    # An update changes a template; the user's edited copy stays, the new version comes beside it.
    template = checkout / "notebooks" / "hello_world.ipynb"
    updated = template.read_text().replace("# Hello, world", "# Hello, updated world")
    assert updated != template.read_text()
    template.write_text(updated)
    git(checkout, "commit", "-qam", "an update")
    up, lab, token, _ = start(running)
    assert (mine / "hello_world.ipynb").read_bytes() == edited
    assert (mine / "hello_world-new.ipynb").read_bytes() == for_this_python(updated.encode())
    assert (mine / new["path"]).is_file()
    out = stop(up)
    assert "notebooks/hello_world.ipynb changed in this update" in out
    assert "copied to" not in out
    assert git(checkout, "status", "--porcelain") == ""


def test_jupyterlab_never_asks_about_news(running, tmp_path):
    up, lab, token, lab_url = start(running)
    try:
        settings = get_json(lab + "lab/api/settings/@jupyterlab/apputils-extension:notification", token)
        defaults = settings["schema"]["properties"]
        assert defaults["fetchNews"]["default"] == "false"
        assert defaults["checkForUpdates"]["default"] is False
        assert json.loads(settings["raw"] or "{}").get("fetchNews") is None  # nobody answered it

        from playwright import sync_api

        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(120_000)
                # The question is asked once JupyterLab is restored and its announcements
                # config section has loaded: wait for both, then for the page to settle.
                with page.expect_response(lambda r: "/api/config/" in r.url and "announcements" in r.url):
                    page.goto(lab_url)
                page.locator(".jp-DirListing-item", has_text="hello_world.ipynb").wait_for()
                page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")
                page.screenshot(path=str(tmp_path / "lab.png"))
                assert page.get_by_text("official Jupyter news").count() == 0
                print(f"screenshot: {tmp_path / 'lab.png'}")

                # The same wait sees the question when the setting asks for it: the check above
                # would have caught it.
                body = json.dumps({"raw": json.dumps({"fetchNews": "none"})}).encode()
                request = urllib.request.Request(
                    lab + "lab/api/settings/@jupyterlab/apputils-extension:notification", data=body,
                    method="PUT", headers={"Authorization": f"token {token}"})
                urllib.request.urlopen(request, timeout=30).close()
                page.reload()
                page.get_by_text("official Jupyter news").wait_for()
            finally:
                browser.close()
    finally:
        stop(up)
