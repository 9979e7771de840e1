"""Bad input against every HTTP route of the web app (hypothesis): never a 5xx, never a path outside data/.

Every route of ``server.create_app`` is enumerated from ``app.routes`` (so a new route is fuzzed
without editing this file) and called with every method it accepts, path parameters such as
``..``, ``/``, ``%2e%2e``, NUL, very long and non-ASCII strings, arbitrary query strings, form and
JSON bodies. The app's data folder lives in a sandbox folder that also holds sentinel files
(outside ``data/``) whose content no response may contain; after the run nothing in the sandbox
but the data folder has changed, and the workstation's real data/ and notebooks/ are untouched.
"""
from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from .conftest import TOKEN, web_client
from .reliability_helpers import tree_snapshot

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import server  # noqa: E402

SECRET = "SENTINEL-7f3a9c-outside-data"
NASTY = ["..", "../..", "../../secret.txt", "%2e%2e", "%2e%2e%2fsecret.txt", "..%2f..%2fsecret.txt", "/",
         "//", "/etc/passwd", "\x00", "a\x00b", "%00", ".", "...", "~", "~root", "C:\\Windows", "..\\..",
         "x" * 5000, "é" * 300, "\u202e\u0000\ud7ff", "🙂/🙂", "hello", "hello_world.ipynb", "nb.ipynb",
         "../notebooks/secret.ipynb", ".ipynb_checkpoints/secret-checkpoint.ipynb",
         "../outside/secret.ipynb", "-1", "0", "1", "99999999999999999999", "NaN", "{}", "[]", "null",
         "first_name", "last_name", "greeting", "finalize", "%", "%zz", "?", "#", " ", "\t\n", "'; DROP TABLE steps;--"]
PARAM_NAMES = ["key", "value", "step", "s", "path", "id", "notebook", "version", "dedupe", "job", "from_step",
               "urls", "q", "nb", "nb_id", "app", "format", "download"]

text = st.text(st.characters(codec="utf-8"), max_size=60)
nasty = st.sampled_from(NASTY)
param_value = st.one_of(nasty, text, st.integers().map(str))
json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(PARAM_NAMES) | text, c,
                                                                                  max_size=3), max_leaves=8)


def routes(app):
    """(method, path template) of every route but static files; HEAD is tried through GET."""
    out = []
    for r in app.routes:
        path, methods = getattr(r, "path", None), getattr(r, "methods", None)
        if path is None or path == "/static" or not methods:
            continue
        out.extend((m, path) for m in sorted(methods) if m != "HEAD")
    return out


def fill(template: str, values: list[str], raw: list[bool]) -> str:
    """The template with each {param} replaced by a value, percent-encoded unless raw."""
    parts = re.split(r"\{[^}]+\}", template)
    out = parts[0]
    for i, rest in enumerate(parts[1:]):
        v = values[i % len(values)]
        # raw: slashes, dots and %-escapes as they are (the server decodes %2e%2e to ..)
        out += quote(v, safe="/.%~:@!$&'()*+,;=" if raw[i % len(raw)] else "") + rest
    return out


@contextlib.contextmanager
def app_client(home, token: str | None = TOKEN, **client_options):
    """The whole app on ``home`` and a client of it that sends ``token``; its list runs stopped
    and its store closed afterwards."""
    app = server.create_app(home=home)
    try:
        with web_client(app, raise_server_exceptions=False, token=token, **client_options) as client:
            yield app, client
    finally:
        runner = getattr(app.state, "list_runner", None)
        for key in list(getattr(runner, "runs", {})):
            runner.stop(key)
        app.state.pip.close()


def server_error(response) -> bool:
    return response.status_code >= 500 or "Traceback" in response.text


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """data/ inside a folder that also holds what must never be read or changed through the app."""
    box = tmp_path / "sandbox"
    home = box / "data"
    notebooks = box / "notebooks"
    (notebooks / ".ipynb_checkpoints").mkdir(parents=True)
    (box / "outside").mkdir()
    (box / "secret.txt").write_text(SECRET)
    (box / "outside" / "secret.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, '
                                                  f'"nbformat_minor": 5, "secret": "{SECRET}"}}')
    (box / "outside" / ".ipynb_checkpoints").mkdir()
    (box / "outside" / ".ipynb_checkpoints" / "secret-checkpoint.ipynb").write_text(
        (box / "outside" / "secret.ipynb").read_text())
    (notebooks / "nb.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    monkeypatch.setenv("PIPULATE_HOME", str(home))
    monkeypatch.setenv("PIPULATE_NOTEBOOKS_DIR", str(notebooks))
    # Something for the routes to find: a job, a workflow job, kernel state with two versions.
    from pipulate import Pipulate
    from pipulate.kernel_state import KernelStateStore
    from pipulate.kernel_state.saving import Saver

    pip = Pipulate(home)
    pip.set("hello", "first_name", "Mike", app="hello")
    pip.set("job", "step", {"a": [1, 2]})
    pip.close()
    ks = KernelStateStore(home)
    saver = Saver(ks, "nb.ipynb", "nb.ipynb")
    saver.save({"x": 1})
    saver.save({"x": 2, "y": "two"})
    ks.close()
    return box, home


def run_fuzz(sandbox, tmp_path, examples: int):
    box, home = sandbox
    watched = {"sandbox": (box, home), "tmp": (tmp_path, box), "repo data": (REPO / "data", None),
               "repo notebooks": (REPO / "notebooks", None)}
    before = {name: tree_snapshot(root, skip) for name, (root, skip) in watched.items()}
    seen: dict[tuple[str, str], int] = {}
    statuses: dict[int, int] = {}
    with app_client(home) as (app, client):
        table = routes(app)
        assert len(table) > 30, table  # every app's routes are here

        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        @given(route=st.sampled_from(table), values=st.lists(param_value, min_size=1, max_size=3),
               raw=st.lists(st.booleans(), min_size=1, max_size=3),
               query=st.dictionaries(st.sampled_from(PARAM_NAMES), param_value, max_size=4),
               body=st.one_of(st.none(), st.dictionaries(st.sampled_from(PARAM_NAMES), param_value, max_size=4),
                              json_value, st.binary(max_size=200)),
               htmx=st.booleans())
        def check(route, values, raw, query, body, htmx):
            method, template = route
            url = fill(template, values, raw)
            headers = {"HX-Request": "true"} if htmx else {}
            kwargs = {}
            if method != "GET":
                if isinstance(body, dict) and all(isinstance(v, str) for v in body.values()) and not htmx:
                    kwargs["data"] = body
                elif isinstance(body, bytes):
                    kwargs["content"] = body
                elif body is not None:
                    # Sent as text, so NaN and Infinity (not JSON, but what a browser's or
                    # Python's JSON may send) reach the server too: it must refuse them cleanly.
                    kwargs["content"] = json.dumps(body).encode()
                    headers["Content-Type"] = "application/json"
            r = client.request(method, url, params=query, headers=headers, **kwargs)
            seen[route] = seen.get(route, 0) + 1
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (method, url, query, body, r.status_code, r.text[:300])
            assert SECRET not in r.text, (method, url, query, "leaked a file outside data/")
            assert "Traceback" not in r.text, (method, url, r.text[:300])

        check()
    after = {name: tree_snapshot(root, skip) for name, (root, skip) in watched.items()}
    for name in watched:
        changed = {p for p in set(before[name]) | set(after[name])
                   if before[name].get(p) != after[name].get(p)}
        if name == "tmp":  # IPython's folder (IPYTHONDIR) is read through copies, never written
            changed = {p for p in changed if not p.startswith("sandbox")}
        assert not changed, f"{name}: touched outside data/: {sorted(changed)[:10]}"
    assert sorted(p.name for p in box.iterdir()) == ["data", "notebooks", "outside", "secret.txt"]
    assert statuses.get(200, 0) > examples // 20, statuses  # not only refusals: the handlers ran
    return seen, statuses


@pytest.mark.parametrize("examples", [pytest.param(1500, id="1500-requests"),
                                      pytest.param(5000, id="5000-requests", marks=pytest.mark.slow)])
def test_every_route_answers_bad_input_without_a_5xx_or_touching_anything_outside_data(
        sandbox, tmp_path, examples):
    seen, statuses = run_fuzz(sandbox, tmp_path, examples)
    print(f"\n{sum(seen.values())} fuzzed requests over {len(seen)} (method, route) pairs; "
          f"statuses {dict(sorted(statuses.items()))}; no 5xx")


def test_every_route_refuses_json_fields_that_are_not_strings(sandbox):
    """A JSON body may give any field a number, a boolean, null, a list or an object: each
    route answers with a 4xx (or takes it), never a 5xx. Found by the long fuzz run:
    ``{"id": false}`` to /kernel-state/clear made the 400's own message fail."""
    failures = []
    with app_client(sandbox[1]) as (app, client):
        for method, template in routes(app):
            if method == "GET":
                continue
            url = fill(template, ["nb.ipynb"], [False])
            for odd in (False, True, 0, -1, 1.5, None, [], ["nb.ipynb"], {}, {"a": 1}):
                r = client.request(method, url, content=json.dumps({p: odd for p in PARAM_NAMES}).encode(),
                                   headers={"Content-Type": "application/json"})
                if server_error(r):
                    failures.append((method, url, odd, r.status_code))
    assert not failures, failures


def test_every_route_refuses_numbers_too_big_for_the_database(sandbox):
    """A version or id past SQLite's 64-bit integers made the query itself raise
    (OverflowError): a 500. Found by the long fuzz run: /recovery/version.ipynb?id=2**63.
    Every route, with every parameter in the query, the path and a JSON body, answers 4xx."""
    failures = []
    with app_client(sandbox[1]) as (app, client):
        for method, template in routes(app):
            for n in (2**63, -(2**63) - 1, 10**30):
                url = fill(template, ["nb.ipynb", str(n)], [False])
                query = {p: str(n) for p in PARAM_NAMES if p not in ("notebook", "nb", "nb_id")}
                body = None if method == "GET" else json.dumps({"version": n, "id": str(n)}).encode()
                r = client.request(method, url, params=query, content=body,
                                   headers={"Content-Type": "application/json"} if body else {})
                if server_error(r):
                    failures.append((method, url, n, r.status_code))
                if "{" in template and server_error(r := client.request(method, fill(template, [str(n)], [False]))):
                    failures.append((method, template, n, r.status_code))
    assert not failures, failures


# --- without the token ------------------------------------------------------------------------

def header_text(value: str) -> bytes:
    """``value``'s UTF-8 bytes, as a header value can carry them (no control characters)."""
    return bytes(b for b in value.encode() if b >= 0x20 or b == 0x09)


credentials = st.one_of(
    st.just({}),
    st.builds(lambda t: {"headers": {"Authorization": header_text(f"token {t}")}}, text | nasty),
    st.builds(lambda t: {"headers": {"Authorization": header_text(t)}}, text | nasty),
    st.builds(lambda t: {"headers": {"Authorization": header_text(f"token {TOKEN[:-1]}{t[:1]}")}},
              text.filter(lambda t: not t.startswith(TOKEN[-1]))),  # nearly right
    st.builds(lambda n, t: {"headers": {"Cookie": header_text(f"{n}={t}")}},
              st.sampled_from(["pipulate-token-5001", "pipulate-token-5002", "token", "key", "_xsrf"]),
              text | nasty | st.just(TOKEN + "x")),
    # Our token, but in the cookie of another port's workstation, or JupyterLab's.
    st.builds(lambda n: {"headers": {"Cookie": f"{n}={TOKEN}"}},
              st.sampled_from(["pipulate-token-5002", "pipulate-token-", "token", "username-127-0-0-1-8888"])),
    st.builds(lambda t: {"params": {"token": t}}, text | nasty | st.just(TOKEN.upper())),
)


def test_without_the_token_every_route_answers_401_never_a_5xx(sandbox):
    """Every route and method, fuzzed as above, with no credential, a wrong one (nearly right,
    odd headers, another program's cookie, a cookie of another port, a wrong ?token=): a 401 and
    nothing else, but /healthz (200, ``{"ok": true}`` only); nothing in the store changes."""
    box, home = sandbox
    statuses: dict[int, int] = {}
    with app_client(home, token=None, follow_redirects=False) as (app, client):
        before = tree_snapshot(home)
        table = routes(app) + [("GET", "/static/htmx.min.js"), ("GET", "/static/{path}")]

        @settings(max_examples=600, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        @given(route=st.sampled_from(table), values=st.lists(param_value, min_size=1, max_size=2),
               query=st.dictionaries(st.sampled_from(PARAM_NAMES), param_value, max_size=3),
               credential=credentials, body=st.one_of(st.none(), st.binary(max_size=100)))
        def check(route, values, query, credential, body):
            method, template = route
            url = fill(template, values, [False])
            params = {**query, **credential.get("params", {})}
            r = client.request(method, url, params=params, headers=credential.get("headers", {}),
                               content=None if method == "GET" else body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if template == "/healthz" and method == "GET":
                assert r.status_code == 200 and r.json() == {"ok": True}, r.text
            else:
                assert r.status_code == 401, (method, url, credential, r.status_code, r.text[:200])
                assert "pipulate up" in r.text and "set-cookie" not in r.headers
            assert SECRET not in r.text and "Mike" not in r.text

        check()
        assert tree_snapshot(home) == before, "a refused request changed the store"
    assert set(statuses) <= {200, 401}, statuses
