"""Only the holder of the token gets in: every route and method with no token, a wrong one, and
the token in the query string, the header and the cookie; the cookie's protections; the token
kept out of logs; a second user of the machine; the URLs that `pipulate up` records."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from pipulate import access

from .conftest import REPO, TOKEN, stop_process, web_client
from .test_reliability_http import fill, routes
from .test_web import HX, app, pip, walk  # noqa: F401  (fixtures)
from .test_web_apps import free_port, wait_health

WRONG = "f" * len(TOKEN)
COOKIE = "pipulate-token-5001"
OPEN = {("GET", "/healthz")}


def every_request(app):
    """(method, URL) for every route and method of ``app``, with harmless path values."""
    out = [(m, fill(t, ["hello"], [False])) for m, t in routes(app)]
    return out + [("GET", "/static/htmx.min.js"), ("HEAD", "/"), ("GET", "/nope")]


def _ids(pairs):
    return [f"{m} {u}" for m, u in pairs]


@pytest.fixture
def anonymous(app):
    with web_client(app, token=None, follow_redirects=False) as c:
        yield c


@pytest.mark.parametrize("credential", ["none", "wrong header", "wrong query", "wrong cookie",
                                        "cookie of another port", "bearer wrong"])
def test_without_the_token_every_route_and_method_is_refused(app, anonymous, pip, credential):
    pip.set("secret-job", "password", "hunter2")
    headers, params = {}, {}
    if credential == "wrong header":
        headers["Authorization"] = f"token {WRONG}"
    elif credential == "bearer wrong":
        headers["Authorization"] = f"Bearer {WRONG}"
    elif credential == "wrong query":
        params["token"] = WRONG
    elif credential == "wrong cookie":
        headers["Cookie"] = f"{COOKIE}={WRONG}"
    elif credential == "cookie of another port":  # another workstation's, on this host
        headers["Cookie"] = f"pipulate-token-5002={TOKEN}"
    for method, url in every_request(app):
        r = anonymous.request(method, url, headers=headers, params=params)
        if (method, url) in OPEN:
            assert r.status_code == 200 and r.json() == {"ok": True}
            continue
        assert r.status_code == 401, (method, url, r.status_code)
        assert "set-cookie" not in r.headers and "hunter2" not in r.text
        if method != "HEAD":
            assert "pipulate up" in r.text and "pipulate url" in r.text
        if url.startswith("/api/") and method != "HEAD":
            assert r.json()["error"].startswith("This workstation's web app lets in only its own user")
    assert pip.read("secret-job") == {"password": "hunter2"}


@pytest.mark.parametrize("how", ["header", "bearer", "cookie", "query"])
def test_with_the_token_every_route_and_method_is_allowed(app, anonymous, how):
    headers, params = {}, {}
    if how == "header":
        headers["Authorization"] = f"token {TOKEN}"
    elif how == "bearer":
        headers["Authorization"] = f"bearer {TOKEN}"
    elif how == "cookie":
        headers["Cookie"] = f"_xsrf=abc; {COOKIE}={TOKEN}; key=x"
    else:
        params["token"] = TOKEN
    for method, url in every_request(app):
        r = anonymous.request(method, url, headers=headers, params=params,
                              data={"key": "hello"} if method == "POST" else None)
        assert r.status_code != 401 and r.status_code < 500, (method, url, r.status_code, r.text[:200])
        if how == "query" and method in ("GET", "HEAD"):
            # The first visit: the cookie, and the same address without the token.
            assert r.status_code == 303, (method, url)
            assert r.headers["location"] == url.split("?")[0] and TOKEN not in r.headers["location"]
            cookie = r.headers["set-cookie"]
            assert cookie.startswith(f"{COOKIE}={TOKEN};")
            assert {"httponly", "path=/", "samesite=strict"} <= {p.strip().lower() for p in cookie.split(";")}


def test_the_first_visit_keeps_the_rest_of_the_address_and_logs_in_the_browser(app, anonymous):
    r = anonymous.get("/hello", params={"key": "k 1", "token": TOKEN, "x": "2"})
    assert r.status_code == 303 and r.headers["location"] == "/hello?key=k+1&x=2"
    assert anonymous.get("/api/jobs").status_code == 200  # the cookie the client kept does the rest
    # Never a redirect to another site: "//evil.example" is a protocol-relative address.
    r = anonymous.get(f"http://127.0.0.1:5001//evil.example/x?token={TOKEN}")
    assert r.status_code == 303 and r.headers["location"] == "/evil.example/x"


def test_our_cookie_never_fills_a_parameter_and_other_cookies_are_still_dropped(app, anonymous, pip):
    anonymous.cookies.set(COOKIE, TOKEN)
    anonymous.cookies.set("key", "hijacked")
    anonymous.cookies.set("value", "hijacked")
    walk(anonymous, "mine", "Mike")
    assert pip.read("mine") == {"first_name": "Mike"} and "hijacked" not in pip.jobs()
    assert COOKIE not in pip.jobs()


ECHO_APP = """
from starlette.requests import Request
APP_NAME, TITLE = "echo", "Echo"

def register(app, rt, pip):
    @rt("", methods=["get", "post"])
    def index(request: Request):
        return repr(sorted(request.query_params.multi_items())) + repr(request.scope["query_string"])
"""


def test_the_token_never_reaches_a_handler(isolated_home, tmp_path):
    import server

    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "echo.py").write_text(ECHO_APP)
    echo = server.create_app(home=isolated_home, apps_dir=tmp_path / "apps")
    try:
        with web_client(echo, token=None) as c:
            r = c.post("/echo", params=[("a", "1"), ("token", TOKEN), ("b", "2")])
            assert r.text == "[('a', '1'), ('b', '2')]b'a=1&b=2'"
            r = c.get(f"/echo?token={WRONG}&a=1", headers={"Authorization": f"token {TOKEN}"})
            assert r.text == "[('a', '1')]b'a=1'"
    finally:
        echo.state.pip.close()


def test_healthz_tells_the_token_holder_more(app, anonymous):
    assert anonymous.get("/healthz").json() == {"ok": True}
    full = anonymous.get("/healthz", headers={"Authorization": f"token {TOKEN}"}).json()
    assert {"home", "apps", "pid"} <= set(full)


def test_a_websocket_without_the_token_is_closed(app, anonymous):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as closed:
        with anonymous.websocket_connect("/ws"):
            pass
    assert closed.value.code == 1008


def test_the_token_is_compared_whole(monkeypatch):
    assert access.same_token(TOKEN, TOKEN)
    for guess in (None, "", TOKEN[:-1], TOKEN + "0", TOKEN.upper(), "é" * len(TOKEN), "\udcff"):
        assert not access.same_token(guess, TOKEN)
    for bad in ("short", "x" * 15, "has space" * 3, "semi;colon" * 3, "é" * 20):
        with pytest.raises(ValueError, match="PIPULATE_TOKEN must be 16 to 256"):
            access.check_token(bad)
    monkeypatch.setenv("PIPULATE_TOKEN", "short")
    proc = subprocess.run([sys.executable, str(REPO / "server.py"), "--no-reload"], capture_output=True,
                          text=True, timeout=60, env=os.environ)
    assert proc.returncode == 2 and "bad setting: PIPULATE_TOKEN must be" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_home_page_links_to_jupyterlab_logged_in_only_when_told_where_it_is(isolated_home):
    import server

    plain = server.create_app(home=isolated_home)
    lab = server.create_app(home=isolated_home, jupyterlab="http://127.0.0.1:8888/lab")
    try:
        with web_client(plain) as c:
            assert "jupyterlab-link" not in c.get("/").text
        with web_client(lab) as c:
            assert f'href="http://127.0.0.1:8888/lab?token={TOKEN}"' in c.get("/").text
    finally:
        plain.state.pip.close()
        lab.state.pip.close()


# --- a real server: what it prints, what it logs, who gets in -------------------------------------

def start_server(env: dict, *args: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "server.py"), "--no-reload", "--port", str(port), *args],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, port


def test_a_server_without_a_token_makes_one_per_start_and_logs_it_nowhere(isolated_home):
    env = {k: v for k, v in os.environ.items() if k != "PIPULATE_TOKEN"}
    tokens = []
    for _ in range(2):
        proc, port = start_server(env, "--log-level", "info")
        url = f"http://127.0.0.1:{port}"
        try:
            printed = proc.stdout.readline()
            assert printed.startswith(f"pipulate server: open {url}/?token="), printed
            token = printed.strip().rsplit("token=", 1)[1]
            tokens.append(token)
            wait_health(url, token=token)
            with httpx.Client(base_url=url, follow_redirects=True) as c:
                assert c.get("/api/jobs").status_code == 401
                assert c.get(f"/jobs?token={token}&job=x").status_code == 200  # followed the 303
                assert c.get("/api/jobs").status_code == 200  # the cookie
        finally:
            stop_process(proc)
        log = proc.stdout.read() + proc.stderr.read()
        assert 'GET /jobs?job=x HTTP/1.1" 303' in log, log  # the access log is on...
        assert token not in log  # ...and the token is not in it
    assert tokens[0] != tokens[1]


def test_a_token_set_explicitly_is_not_printed(isolated_home):
    proc, port = start_server(dict(os.environ), "--log-level", "info")
    try:
        wait_health(f"http://127.0.0.1:{port}")
        assert httpx.get(f"http://127.0.0.1:{port}/?token={TOKEN}", follow_redirects=True).status_code == 200
    finally:
        stop_process(proc)
    log = proc.stdout.read() + proc.stderr.read()
    assert TOKEN not in log and "?token=" not in log


@pytest.mark.parametrize("explicit", [False, True])
def test_listening_on_every_address_without_a_chosen_token_warns(isolated_home, explicit):
    env = dict(os.environ)
    if not explicit:
        env.pop("PIPULATE_TOKEN")
    proc, port = start_server(env, "--host", "0.0.0.0")
    try:
        wait_health(f"http://127.0.0.1:{port}")
    finally:
        stop_process(proc)
    err = proc.stderr.read()
    warned = "PIPULATE_HOST=0.0.0.0 opens the web app and JupyterLab to every machine" in err
    assert warned is not explicit, err
    if warned:
        assert "unencrypted" in err and "PIPULATE_TOKEN" in err
    assert access.exposure_warning("127.0.0.1", False) is None and access.exposure_warning("::1", False) is None
    assert access.exposure_warning("localhost", False) is None and access.exposure_warning("10.0.0.5", True) is None
    assert "10.0.0.5" in access.exposure_warning("10.0.0.5", False)


def as_another_user() -> list[str]:
    """The command prefix that runs as another OS user (nobody) when we can switch users; else
    nothing: another process of ours that holds no token."""
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    return []


PROBE = r'''
import json, sys, urllib.request, urllib.error
out = {}
for method, url in json.loads(sys.argv[1]):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as r:
            out[method + " " + url] = [r.status, r.read().decode(errors="replace")]
    except urllib.error.HTTPError as e:
        out[method + " " + url] = [e.code, e.read().decode(errors="replace")]
print(json.dumps(out))
'''


def test_a_second_user_of_the_machine_gets_nothing_but_401(tmp_path):
    # A home that other users may traverse (as data/ in a checkout often is): only the file
    # modes keep them out of what is secret.
    home = Path(tempfile.mkdtemp(prefix="pipulate-second-user-", dir="/tmp"))
    try:
        os.chmod(home, 0o755)
        from pipulate import Pipulate

        p = Pipulate(home)
        p.set("bank", "password", "hunter2")
        p.close()
        urls_file = access.write_urls(home, {"web app": f"http://127.0.0.1:1/?token={TOKEN}"})
        env = {**os.environ, "PIPULATE_HOME": str(home)}
        proc, port = start_server(env)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_health(base)
            import server

            app = server.create_app(home=home)
            targets = [(m, base + u) for m, u in every_request(app) if m != "HEAD"]
            targets += [("GET", f"{base}/api/jobs/bank?token={WRONG}"), ("GET", f"{base}/recovery/session.ipynb?s=1")]
            app.state.pip.close()
            probe = subprocess.run([*as_another_user(), "/usr/bin/python3", "-c", PROBE, json.dumps(targets)],
                                   capture_output=True, text=True, timeout=300, cwd="/",
                                   env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
            assert probe.returncode == 0, probe.stderr
            answers = json.loads(probe.stdout)
            assert len(answers) == len(targets)
            for request, (status, body) in answers.items():
                if request == f"GET {base}/healthz":
                    assert status == 200 and json.loads(body) == {"ok": True}
                else:
                    assert status == 401, (request, status)
                assert "hunter2" not in body and str(home) not in body
            # The token is in no file, argument or environment the other user can read.
            cat = subprocess.run([*as_another_user(), "cat", str(urls_file), f"/proc/{proc.pid}/environ"],
                                 capture_output=True, text=True, cwd="/")
            assert TOKEN not in cat.stdout
            if as_another_user():
                assert cat.stderr.count("Permission denied") == 2, cat.stderr
            cmdline = subprocess.run([*as_another_user(), "cat", f"/proc/{proc.pid}/cmdline"],
                                     capture_output=True, text=True, cwd="/")
            assert "server.py" in cmdline.stdout and TOKEN not in cmdline.stdout
        finally:
            stop_process(proc)
        assert stat.S_IMODE(urls_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(urls_file.parent.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.backends("embedded", reason="file permissions of the SQLite store; on the team backend PostgreSQL's row-level security keeps users apart (test_team)")
def test_a_second_user_cannot_read_the_store_from_disk_either(tmp_path):
    """A new home is made private; an old one (a checkout's data/, made with the clone's
    umask) is made private by `pipulate up` (``keep_private``)."""
    from pipulate import Pipulate
    from pipulate.home import keep_private, resolve_home

    parent = Path(tempfile.mkdtemp(prefix="pipulate-private-", dir="/tmp"))
    try:
        os.chmod(parent, 0o755)
        fresh = resolve_home(parent / "new-home")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
        old = parent / "data"
        old.mkdir(mode=0o755)
        os.chmod(old, 0o755)
        p = Pipulate(old)
        p.set("bank", "password", "hunter2")
        p.close()
        read = [*as_another_user(), "cat", str(old / "pipulate.db")]
        if as_another_user():  # as root the file's own mode would not stop us: prove the gap first
            assert "hunter2" in subprocess.run(read, capture_output=True, text=True, errors="replace").stdout
        assert keep_private(old) is True
        assert stat.S_IMODE(old.stat().st_mode) == 0o700
        assert keep_private(old) is False  # already private: nothing to do
        denied = subprocess.run(read, capture_output=True, text=True, errors="replace")
        assert "hunter2" not in denied.stdout
        if as_another_user():
            assert "Permission denied" in denied.stderr
    finally:
        shutil.rmtree(parent, ignore_errors=True)


# --- `pipulate url` --------------------------------------------------------------------------------

def test_pipulate_url_prints_the_running_workstations_urls_and_only_while_it_runs(isolated_home):
    def url_command():
        return subprocess.run([sys.executable, "-m", "pipulate", "url"], capture_output=True, text=True,
                              timeout=60, cwd=REPO, env={**os.environ, "PIPULATE_HOME": str(isolated_home)})

    none = url_command()
    assert none.returncode == 1 and "no workstation is running" in none.stderr and "pipulate up" in none.stderr
    urls = {"web app": f"http://127.0.0.1:5001/?token={TOKEN}",
            "JupyterLab": f"http://127.0.0.1:8888/lab?token={TOKEN}"}
    access.write_urls(isolated_home, urls)  # as this process, which is running
    shown = url_command()
    assert shown.returncode == 0
    assert shown.stdout.splitlines() == [f"web app:    {urls['web app']}", f"JupyterLab: {urls['JupyterLab']}"]
    # A process that has ended (or a pid now used by another program) is not the workstation.
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    access.write_urls(isolated_home, urls, pid=os.getpid())
    record = json.loads(access.urls_path(isolated_home).read_text())
    record["pid"] = int(ended.stdout)
    access.urls_path(isolated_home).write_text(json.dumps(record))
    assert access.running_urls(isolated_home) is None
    assert url_command().returncode == 1
    access.write_urls(isolated_home, urls)
    access.remove_urls(isolated_home, pid=int(ended.stdout))  # not ours to remove
    assert access.running_urls(isolated_home) == urls
    access.remove_urls(isolated_home)
    assert not access.urls_path(isolated_home).exists()


def test_the_docs_say_how_to_get_in():
    web = (REPO / "docs" / "web.md").read_text()
    readme = (REPO / "README.md").read_text()
    for text in (web, readme):
        assert "pipulate url" in text and "PIPULATE_TOKEN" in text and "Authorization: token" in text
    team = (REPO / "docs" / "workstation.md").read_text()
    assert re.search(r"JupyterHub", team) and "jupyter-server-proxy" in team
