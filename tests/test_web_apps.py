"""Kernel state and List to spreadsheet pages, the cross-process contract, and the real server process."""
from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from .conftest import TOKEN, run_python, stop_process
from .test_web import HX, REPO, app, client, pip, walk  # noqa: F401  (fixtures)


# --- a local site for List to spreadsheet ----------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    hits: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).hits.append(self.path)
        if self.path.startswith("/slow"):
            time.sleep(0.5)
        return super().do_GET()


@pytest.fixture
def site(tmp_path):
    """A loopback HTTP server with pages p0.html..p19.html titled "Page N"; yields its base URL."""
    root = tmp_path / "site"
    root.mkdir()
    for i in range(20):
        (root / f"p{i}.html").write_text(f"<html><head><title> Page {i} &amp; co </title></head><body>{i}</body></html>")
    for i in range(12):
        (root / f"slow{i}.html").write_text(f"<title>Slow {i}</title>")
    handler = type("H", (_QuietHandler,), {"hits": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield base, handler
    srv.shutdown()
    srv.server_close()


def prepare_list(client, key, items, function="fetch_title"):
    assert client.post("/list-to-sheet/start", data={"key": key}, headers=HX).status_code == 200
    r = client.post("/list-to-sheet/step/items", data={"key": key, "value": "\n".join(items)}, headers=HX)
    assert r.status_code == 200, r.text
    r = client.post("/list-to-sheet/step/function", data={"key": key, "value": function}, headers=HX)
    assert r.status_code == 200, r.text
    assert 'id="run-button"' in r.text


def wait_done(client, key, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get("/list-to-sheet/progress", params={"key": key}, headers=HX)
        assert r.status_code == 200
        if r.headers.get("HX-Retarget") == "#workflow":
            return r
        time.sleep(0.1)
    raise AssertionError("the run did not finish")


def test_list_to_sheet_runs_and_downloads(client, pip, site):
    base, handler = site
    urls = [f"{base}/p{i}.html" for i in range(10)] + [f"{base}/missing", "http://127.0.0.1:9/refused"]
    prepare_list(client, "urls", urls)
    r = client.post("/list-to-sheet/run", data={"key": "urls"}, headers=HX)
    assert r.status_code == 200 and ("<progress" in r.text or "step-card done" in r.text)
    r = wait_done(client, "urls")
    assert "Download CSV" in r.text and "Page 3 &amp; co" in r.text
    assert pip.get("urls", "run")["status"] == "done"
    assert pip.get("urls", "item:" + urls[3]) == {"item": urls[3], "status": 200, "title": "Page 3 & co",
                                         "final_url": urls[3], "error": ""}
    assert pip.get("urls", "item:" + urls[10])["status"] == 404
    assert pip.get("urls", "item:" + urls[11])["error"].startswith("ConnectError")

    csv = client.get("/list-to-sheet/download", params={"key": "urls", "format": "csv"})
    assert csv.status_code == 200 and csv.headers["content-disposition"] == 'attachment; filename="urls.csv"'
    lines = csv.text.splitlines()
    assert lines[0] == "#,item,status,title,final_url,error"
    assert lines[4] == f"4,{urls[3]},200,Page 3 & co,{urls[3]},"
    assert len(lines) == 13

    xlsx = client.get("/list-to-sheet/download", params={"key": "urls", "format": "xlsx"})
    assert xlsx.status_code == 200
    import openpyxl

    sheet = openpyxl.load_workbook(io.BytesIO(xlsx.content)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("#", "item", "status", "title", "final_url", "error")
    assert rows[1][:4] == (1, urls[0], 200, "Page 0 & co") and len(rows) == 13
    assert client.get("/list-to-sheet/download", params={"key": "urls", "format": "pdf"}).status_code == 400
    assert client.get("/list-to-sheet/download", params={"key": "nope"}).status_code == 404


def test_list_to_sheet_resumes_where_it_left_off(client, pip, site):
    base, handler = site
    urls = [f"{base}/p{i}.html" for i in range(6)]
    prepare_list(client, "resume", urls)
    # A run that stopped after two items (as if the server died): those two are not fetched again.
    pip.set("resume", "run", {"status": "stopped", "total": 6})
    pip.set("resume", "item:" + urls[0], {"item": urls[0], "status": 200, "title": "kept", "final_url": "", "error": ""})
    pip.set("resume", "item:" + urls[4], {"item": urls[4], "status": 200, "title": "kept", "final_url": "", "error": ""})
    page = client.get("/list-to-sheet", params={"key": "resume"}).text
    assert "2 of 6 items are done" in page and ">Resume<" in page
    client.post("/list-to-sheet/run", data={"key": "resume"}, headers=HX)
    wait_done(client, "resume")
    assert sorted(handler.hits) == sorted(f"/p{i}.html" for i in (1, 2, 3, 5))
    assert pip.get("resume", "item:" + urls[0])["title"] == "kept"
    assert pip.get("resume", "item:" + urls[1])["title"] == "Page 1 & co"


def test_list_to_sheet_stop_then_resume(client, pip, site):
    base, handler = site
    urls = [f"{base}/slow{i}.html" for i in range(12)]
    prepare_list(client, "stop", urls)
    client.post("/list-to-sheet/run", data={"key": "stop"}, headers=HX)
    r = client.post("/list-to-sheet/stop", data={"key": "stop"}, headers=HX)
    assert r.status_code == 200
    run = pip.get("stop", "run")
    assert run["status"] == "stopped"
    done = sum(1 for s in pip.read("stop") if s.startswith("item:"))
    # The stop may land before the first item started (then there is nothing to resume yet).
    assert done < 12 and (">Resume<" if done else ">Start<") in r.text
    client.post("/list-to-sheet/run", data={"key": "stop"}, headers=HX)
    wait_done(client, "stop")
    assert len(handler.hits) == 12  # nothing fetched twice
    assert pip.get("stop", "run")["status"] == "done"


def test_a_run_left_going_restarts_with_the_server(isolated_home, site):
    import server

    base, handler = site
    from pipulate import Pipulate

    p = Pipulate(isolated_home)
    urls = [f"{base}/p{i}.html" for i in range(3)]
    p.set("left", "items", urls, app="list-to-sheet")
    p.set("left", "function", "fetch_title", app="list-to-sheet")
    p.set("left", "run", {"status": "running", "total": 3}, app="list-to-sheet")
    app = server.create_app(home=isolated_home)
    runner = app.state.list_runner
    deadline = time.time() + 20
    while runner.running("left") and time.time() < deadline:
        time.sleep(0.05)
    assert p.get("left", "run")["status"] == "done"
    assert p.get("left", "item:" + urls[2])["title"] == "Page 2 & co"
    app.state.pip.close()
    p.close()


def test_list_to_sheet_bad_input(client, pip):
    walk(client, "x", app="list-to-sheet")
    for value, status in [("", 400), ("\n \n", 400), ("a\n" * 5001, 400), ("y" * 3000, 400)]:
        r = client.post("/list-to-sheet/step/items", data={"key": "x", "value": value}, headers=HX)
        assert r.status_code == status
    client.post("/list-to-sheet/step/items", data={"key": "x", "value": "one\ntwo"}, headers=HX)
    r = client.post("/list-to-sheet/step/function", data={"key": "x", "value": "rm -rf"}, headers=HX)
    assert r.status_code == 400
    r = client.post("/list-to-sheet/run", data={"key": "x"}, headers=HX)
    assert r.status_code == 409  # the function step comes first
    r = client.post("/list-to-sheet/step/run", data={"key": "x", "value": "go"}, headers=HX)
    assert r.status_code == 409


def test_text_stats_function_and_revert_stops_the_run(client, pip):
    prepare_list(client, "words", ["a b c", "hello"], function="text_stats")
    client.post("/list-to-sheet/run", data={"key": "words"}, headers=HX)
    wait_done(client, "words")
    assert pip.get("words", "item:a b c") == {"item": "a b c", "characters": 5, "words": 3, "error": None}
    r = client.post("/list-to-sheet/revert/function", data={"key": "words"}, headers=HX)
    assert r.status_code == 200
    assert list(pip.read("words")) == ["items"]


# --- kernel state ------------------------------------------------------------------------------------

@pytest.fixture
def saved_notebook(isolated_home):
    import numpy as np

    import pipulate.kernel_state as ks_mod
    from pipulate.kernel_state import saving
    ks = ks_mod.KernelStateStore(home=isolated_home)
    saver = saving.Saver(ks, "demo.ipynb", "demo.ipynb")
    saver.save({"a": 1, "arr": np.zeros(1000)}, full=True)
    saver.save({"a": 2, "arr": np.zeros(1000), "text": "x" * 5000, "lock": threading.Lock()}, full=True)
    yield "demo.ipynb"
    ks.close()


def test_kernel_state_api(client, saved_notebook):
    nb = saved_notebook
    body = client.get(f"/api/notebooks/{nb}/state").json()
    for field in ("has_saved_state", "saved_at", "variable_count", "variable_names", "file_size_bytes",
                  "checksum", "versions"):
        assert field in body
    assert body["has_saved_state"] is True and body["variable_names"] == ["a", "arr", "lock", "text"]
    assert [v["version"] for v in body["versions"]] == [2, 1]
    assert client.get("/api/notebooks").json()["notebooks"][0]["id"] == nb

    r = client.post(f"/api/notebooks/{nb}/state/restore", json={"version": 1})
    assert r.status_code == 200 and r.json()["version"] == 1
    assert client.post(f"/api/notebooks/{nb}/state/restore").json()["version"] == 2
    assert client.post(f"/api/notebooks/{nb}/state/restore", json={"version": 99}).status_code == 404
    assert client.post(f"/api/notebooks/{nb}/state/restore", content=b"{oops").status_code == 400
    assert client.post(f"/api/notebooks/{nb}/state/restore", json=[1]).status_code == 400
    assert client.post(f"/api/notebooks/{nb}/state/restore", json={"version": "two"}).status_code == 400
    assert client.post(f"/api/notebooks/{nb}/state/restore", json={"version": True}).status_code == 400

    r = client.delete(f"/api/notebooks/{nb}/state")
    assert r.status_code == 200 and r.json()["cleared"] is True
    assert client.get(f"/api/notebooks/{nb}/state").json()["has_saved_state"] is False
    assert client.delete(f"/api/notebooks/{nb}/state").json()["cleared"] is False


@pytest.mark.parametrize("bad", ["..", "a..b", ".hidden", "a%2Fb", "a%2F..%2Fb", "%2E%2E", "x" * 300, "a%20b"])
def test_kernel_state_api_refuses_unsafe_ids(client, isolated_home, bad):
    before = sorted(str(p) for p in isolated_home.rglob("*"))
    for r in (client.get(f"/api/notebooks/{bad}/state"), client.delete(f"/api/notebooks/{bad}/state"),
              client.post(f"/api/notebooks/{bad}/state/restore", json={})):
        assert r.status_code in (400, 404), (bad, r.status_code)
        assert "error" in r.json()
    for r in (client.get("/kernel-state/notebook", params={"id": bad.replace("%2F", "/").replace("%2E", ".")}),
              client.post("/kernel-state/clear", data={"id": bad}, headers=HX)):
        assert r.status_code == 400
    assert sorted(str(p) for p in isolated_home.rglob("*")) == before


def test_kernel_state_pages(client, saved_notebook):
    nb = saved_notebook
    r = client.get("/kernel-state")
    assert r.status_code == 200 and f"/kernel-state/notebook?id={nb}" in r.text
    r = client.get("/kernel-state/notebook", params={"id": nb})
    assert r.status_code == 200
    assert "<svg" in r.text and "<polyline" in r.text  # size over versions
    assert "numpy.ndarray" in r.text and "npy" in r.text  # variable type and format
    assert "lock" in r.text and "pickle" in r.text  # the skipped one and why
    r = client.get("/kernel-state/notebook", params={"id": nb, "version": "1"})
    assert r.status_code == 200 and "Variables of version 1" in r.text
    assert client.get("/kernel-state/notebook", params={"id": nb, "version": "9"}).status_code == 404
    assert client.get("/kernel-state/notebook", params={"id": nb, "version": "x"}).status_code == 400
    r = client.post("/kernel-state/restore", data={"id": nb, "version": "1"}, headers=HX)
    assert r.status_code == 200 and "Version 1" in r.text and "%state restore 1" in r.text
    assert client.post("/kernel-state/restore", data={"id": nb, "version": "7"}, headers=HX).status_code == 404
    r = client.post("/kernel-state/clear", data={"id": nb}, headers=HX)
    assert r.status_code == 200 and "Cleared" in r.text
    assert "has no saved kernel state" in client.get("/kernel-state/notebook", params={"id": nb}).text


# --- one store: notebook process <-> web app ------------------------------------------------------------

def test_a_notebook_write_shows_in_the_web_app(client, isolated_home):
    run_python("from pipulate import pip; pip.set('hello', 'first_name', 'Mike'); "
               "pip.set('hello', 'last_name', 'Levin')", env={"PIPULATE_HOME": str(isolated_home)})
    page = client.get("/hello", params={"key": "hello"})
    assert "Mike" in page.text and "Levin" in page.text
    assert 'hx-post="/hello/step/greeting"' in page.text and "Hello, Mike Levin!" in page.text
    assert '<option value="hello"></option>' in client.get("/hello").text  # offered though made in a notebook
    steps = client.get("/api/jobs/hello").json()["steps"]
    assert [(s["step"], s["value"]) for s in steps] == [("first_name", "Mike"), ("last_name", "Levin")]


def test_a_web_step_is_read_by_a_notebook(client, isolated_home):
    walk(client, "hello", "Ada", "Lovelace", "Hi Ada")
    client.post("/hello/finalize", data={"key": "hello"}, headers=HX)
    out = run_python("from pipulate import pip; import json; print(json.dumps(pip.read('hello'))); "
                     "print(pip.get('hello', 'first_name'))", env={"PIPULATE_HOME": str(isolated_home)})
    first, second = out.stdout.splitlines()
    assert json.loads(first) == {"first_name": "Ada", "last_name": "Lovelace", "greeting": "Hi Ada",
                                 "finalized": True}
    assert second == "Ada"


# --- the real server process: env, reload --------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url, timeout=30, not_pid=None, token=TOKEN):
    """The health answer of the server at ``url`` (told everything with the right ``token``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            r = httpx.get(url + "/healthz", headers={"Authorization": f"token {token}"}, timeout=2)
            if r.status_code == 200 and (not_pid is None or r.json().get("pid") not in (None, not_pid)):
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def test_server_restarts_on_a_source_change_and_loses_nothing(tmp_path, isolated_home):
    # A copy of the entry point and the apps: the test changes files of the copy only.
    tree = tmp_path / "checkout"
    tree.mkdir()
    shutil.copy(REPO / "server.py", tree / "server.py")
    shutil.copy(REPO / "config.py", tree / "config.py")
    shutil.copytree(REPO / "apps", tree / "apps", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    env = {**os.environ, "PIPULATE_HOME": str(isolated_home), "PIPULATE_PORT": str(port),
           "PIPULATE_HOST": "127.0.0.1"}
    env.pop("PIPULATE_TOKEN")  # made at start: a reload must keep it, or the user is logged out
    proc = subprocess.Popen([sys.executable, str(tree / "server.py")], env=env, cwd=tree,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        printed = proc.stdout.readline()
        assert printed.startswith(f"pipulate server: open {url}/?token="), printed
        token = printed.strip().rsplit("token=", 1)[1]
        first = wait_health(url, token=token)
        assert "pid" in first  # the token was taken
        web = httpx.Client(base_url=url, headers={"Authorization": f"token {token}"})
        assert web.post("/hello/start", data={"key": "keep"}).status_code == 303
        assert web.post("/hello/step/first_name", data={"key": "keep", "value": "Mike"}).status_code == 200
        time.sleep(0.5)  # let the watcher settle before the change
        (tree / "apps" / "extra.py").write_text(
            'from pipulate.web import P, page\nAPP_NAME = "extra"\nTITLE = "Extra"\n'
            'def register(app, rt, pip):\n    @rt("")\n    def index():\n        return page("Extra", P("added"))\n')
        second = wait_health(url, not_pid=first["pid"], token=token)
        assert "extra" in second["apps"]
        assert "added" in web.get("/extra").text
        assert "Mike" in web.get("/hello", params={"key": "keep"}).text
        r = web.get("/api/jobs/keep").json()
        assert r["steps"][0]["value"] == "Mike"
    finally:
        stop_process(proc)
    # The reloader passes the stop on: nothing is left listening.
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/healthz", timeout=1)


def test_a_busy_port_is_a_clear_error(isolated_home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, str(REPO / "server.py"), "--port", str(port)],
                              env={**os.environ, "PIPULATE_HOME": str(isolated_home)},
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


def test_the_server_stops_when_its_reloader_is_killed(isolated_home):
    import signal

    port = free_port()
    env = {**os.environ, "PIPULATE_HOME": str(isolated_home), "PIPULATE_PORT": str(port)}
    parent = subprocess.Popen([sys.executable, str(REPO / "server.py")], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        child = wait_health(url)["pid"]
        assert child != parent.pid
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the server outlived its reloader")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_concurrent_first_writes_in_one_process_share_one_key(tmp_path):
    # A fresh server gets many requests at once: each thread's first pickle must be signed
    # with the key on disk, or it could never be read back.
    from concurrent.futures import ThreadPoolExecutor

    from pipulate import Pipulate

    for attempt in range(5):
        home = tmp_path / f"h{attempt}"
        p = Pipulate(home)
        barrier = threading.Barrier(16)

        def write(i):
            barrier.wait()
            p.set(f"job{i}", "obj", {1, 2, i} if i % 2 else complex(i, 1))  # tagged JSON...
            p.set(f"job{i}", "pickled", Exception(f"e{i}"))  # ...and a signed pickle
            return i

        with ThreadPoolExecutor(16) as pool:
            assert sorted(pool.map(write, range(16))) == list(range(16))
        p.close()
        fresh = Pipulate(home)
        assert [str(fresh.get(f"job{i}", "pickled")) for i in range(16)] == [f"e{i}" for i in range(16)]
        fresh.close()
