"""The web app under a root path (PIPULATE_ROOT_PATH, as behind JupyterHub's proxy): every address
it emits carries the path, it answers with and without the path in the request, and a bad root
path is refused at start."""
from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import server  # noqa: E402

from pipulate.access import RootPathError, check_root_path  # noqa: E402

from .conftest import TOKEN, web_client  # noqa: E402

ROOT = "/user/alice/pipulate-web"
HX = {"HX-Request": "true"}
URL_ATTRS = {"href", "src", "action", "hx-get", "hx-post", "hx-put", "hx-patch", "hx-delete", "hx-push-url"}


class Addresses(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.found += [(name, value) for name, value in attrs if name in URL_ATTRS and value]


def addresses(html: str) -> list[tuple[str, str]]:
    parser = Addresses()
    parser.feed(html)
    return parser.found


def outside_root(html: str) -> list[tuple[str, str]]:
    """The app's own addresses in ``html`` that do not start with the root path."""
    return [(name, value) for name, value in addresses(html)
            if not urlsplit(value).netloc and value.startswith("/")
            and not (value == ROOT or value.startswith(ROOT + "/") or value.startswith(ROOT + "?"))]


@pytest.fixture
def app(isolated_home):
    app = server.create_app(home=isolated_home, root_path=ROOT)
    yield app
    app.state.pip.close()


@pytest.fixture
def client(app):
    with web_client(app) as c:
        yield c


def test_every_address_on_every_page_starts_with_the_root_path(client, app):
    pip = app.state.pip
    pip.set("from-notebook", "x", [1, 2, 3])
    r = client.post(f"{ROOT}/hello/start", data={"key": "greet"}, headers=HX)
    assert r.status_code == 200 and not outside_root(r.text), outside_root(r.text)
    assert r.headers["HX-Push-Url"] == f"{ROOT}/hello?key=greet"
    for step, value in (("first_name", "Mike"), ("last_name", "Levin")):
        r = client.post(f"{ROOT}/hello/step/{step}", data={"key": "greet", "value": value}, headers=HX)
        assert r.status_code == 200 and not outside_root(r.text), outside_root(r.text)
    assert 'hx-post="/user/alice/pipulate-web/hello/revert/first_name"' in r.text

    # Crawl every page reachable from the home page: each address on each is under the root.
    seen, todo, pages = set(), [f"{ROOT}/"], 0
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        if "text/html" not in r.headers.get("content-type", ""):
            continue
        pages += 1
        assert not outside_root(r.text), (url, outside_root(r.text))
        for name, value in addresses(r.text):
            if name in ("href", "src") and value.startswith(ROOT) and not value.endswith((".ipynb", "format=xlsx")):
                todo.append(value.split("#")[0])
    assert pages >= 8, seen  # home, each app, the jobs' pages
    assert {f"{ROOT}/static/pico.min.css", f"{ROOT}/static/htmx.min.js", f"{ROOT}/jobs/view?job=greet",
            f"{ROOT}/jobs/view?job=from-notebook", f"{ROOT}/hello?key=greet"} <= seen, seen
    # The static files are served there.
    css = client.get(f"{ROOT}/static/pico.min.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_htmx_actions_and_redirects_carry_the_root_path(client):
    # A form posted without htmx is sent to the job's page: under the root.
    r = client.post(f"{ROOT}/hello/start", data={"key": "plain"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{ROOT}/hello?key=plain"
    # A job's page: revert and delete go to the app's own routes.
    client.post(f"{ROOT}/hello/start", data={"key": "j"}, headers=HX)
    client.post(f"{ROOT}/hello/step/first_name", data={"key": "j", "value": "Ann"}, headers=HX)
    page = client.get(f"{ROOT}/jobs/view?job=j").text
    assert 'hx-post="/user/alice/pipulate-web/jobs/delete"' in page, page
    r = client.post(f"{ROOT}/jobs/delete", data={"job": "j"}, headers=HX)
    assert r.status_code == 200 and 'href="/user/alice/pipulate-web/jobs"' in r.text, r.text
    assert not outside_root(r.text)


def test_the_token_in_the_url_redirects_under_the_root_with_a_cookie_for_it(app):
    with web_client(app, token=None) as c:
        r = c.get(f"{ROOT}/jobs?token={TOKEN}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"{ROOT}/jobs", r.headers
        cookie = r.headers["set-cookie"]
        assert f"Path={ROOT}" in cookie and "HttpOnly" in cookie, cookie
        # The direct port, asked without the root path (``python server.py`` printed ``/?token=``).
        r = c.get(f"/?token={TOKEN}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"{ROOT}/", r.headers
        assert c.get(f"{ROOT}/jobs", follow_redirects=False).status_code == 200  # the cookie logs in


def test_requests_without_the_root_path_are_served_too_with_addresses_under_it(client):
    r = client.get("/jobs")
    assert r.status_code == 200 and f'href="{ROOT}/hello"' in r.text and not outside_root(r.text)
    assert client.get("/api/jobs").json() == client.get(f"{ROOT}/api/jobs").json()


def test_error_pages_and_api_errors_under_the_root_path(app):
    with web_client(app, raise_server_exceptions=False) as c:
        r = c.get(f"{ROOT}/no-such-page")
        assert r.status_code == 404 and f'href="{ROOT}/"' in r.text and not outside_root(r.text), r.text
        r = c.get(f"{ROOT}/api/jobs/nope")
        assert r.status_code == 404 and r.json()["error"], r.text
    with web_client(app, token=None) as c:
        r = c.get(f"{ROOT}/api/jobs")
        assert r.status_code == 401 and "error" in r.json()  # JSON under the root's /api too
        assert c.get(f"{ROOT}/healthz").json() == {"ok": True}


def test_without_a_root_path_the_addresses_are_the_same_as_ever(isolated_home):
    app = server.create_app(home=isolated_home, root_path="")
    try:
        with web_client(app) as c:
            html = c.get("/").text
            assert 'href="/static/pico.min.css"' in html and 'src="/static/htmx.min.js"' in html
            assert 'href="/hello"' in html and "/user/" not in html
    finally:
        app.state.pip.close()


# --- behind the hub's proxy: its Host, the token in the header --------------------------------

def test_the_proxy_s_host_is_taken_with_the_token_in_the_header_only(client, app):
    hub = {"Host": "hub.example.org"}
    assert client.get(f"{ROOT}/api/jobs", headers=hub).status_code == 200
    # Through the proxy, a change another site asks for is still refused (Origin against Host).
    r = client.post(f"{ROOT}/hello/start", data={"key": "k"},
                    headers={**hub, **HX, "Origin": "https://evil.example"})
    assert r.status_code == 403
    r = client.post(f"{ROOT}/hello/start", data={"key": "k"}, headers={**hub, **HX, "Origin": "http://hub.example.org"})
    assert r.status_code == 200
    # A browser on the direct port with a rebound name (the cookie, not the header) is refused.
    with web_client(app, token=None) as c:
        c.get(f"{ROOT}/?token={TOKEN}", follow_redirects=False)
        assert c.get(f"{ROOT}/api/jobs").status_code == 200
        assert c.get(f"{ROOT}/api/jobs", headers=hub).status_code == 403


# --- bad root paths --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["user/alice", "/a/../b", "/a/./b", "/a//b", "/a b", "/a?x=1", "/a#b",
                                 "//evil.example", "/a\\b", "/ü"])
def test_a_bad_root_path_is_refused_at_start_with_a_clear_error(bad, isolated_home, monkeypatch, capsys):
    with pytest.raises(RootPathError, match="root path"):
        check_root_path(bad)
    with pytest.raises(RootPathError):
        server.create_app(home=isolated_home, root_path=bad)
    assert server.main(["--no-reload", "--root-path", bad]) == 2
    assert "bad --root-path" in capsys.readouterr().err
    monkeypatch.setenv("PIPULATE_ROOT_PATH", bad)
    assert server.main(["--no-reload"]) == 2
    assert "PIPULATE_ROOT_PATH" in capsys.readouterr().err


@pytest.mark.parametrize("given, kept", [("", ""), ("/", ""), ("/p", "/p"), (" /x/y ", "/x/y"),
                                         ("/user/a@b.c/pipulate-web/", "/user/a@b.c/pipulate-web")])
def test_good_root_paths(given, kept):
    assert check_root_path(given) == kept


def test_the_settings_know_the_root_path(monkeypatch):
    from config import WorkstationConfig

    monkeypatch.setenv("PIPULATE_ROOT_PATH", "/team/pipulate/")
    cfg = WorkstationConfig.from_env()
    assert cfg.root_path == "/team/pipulate" and cfg.to_env()["PIPULATE_ROOT_PATH"] == "/team/pipulate"
