"""The web app through Starlette's test client: routes, HTMX fragments, resume, revert, lock, bad input."""
from __future__ import annotations

import os

import re
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import server  # noqa: E402

from .conftest import web_client  # noqa: E402

HX = {"HX-Request": "true"}
APPS = {"hello", "jobs", "kernel-state", "list-to-sheet"}


@pytest.fixture
def app(isolated_home):
    app = server.create_app(home=isolated_home)
    yield app
    runner = getattr(app.state, "list_runner", None)
    if runner is not None:
        for key in list(runner.runs):
            runner.stop(key)
    app.state.pip.close()


@pytest.fixture
def client(app):
    # Server exceptions are raised, not turned into pages: any bug is a failing test.
    with web_client(app) as c:
        yield c


@pytest.fixture
def pip(app):
    return app.state.pip


def walk(client, key, *values, app="hello"):
    """Start ``key`` and submit ``values`` to the Hello steps in order; returns the last response."""
    r = client.post(f"/{app}/start", data={"key": key}, headers=HX)
    assert r.status_code == 200, r.text
    for step, value in zip(("first_name", "last_name", "greeting"), values):
        r = client.post(f"/{app}/step/{step}", data={"key": key, "value": value}, headers=HX)
        assert r.status_code == 200, r.text
    return r


# --- pages, static files, health ---------------------------------------------------------------

def test_home_lists_every_app(client):
    r = client.get("/")
    assert r.status_code == 200
    for path in ("/hello", "/jobs", "/kernel-state", "/list-to-sheet"):
        assert f'href="{path}"' in r.text


def test_the_footer_says_where_the_data_is(client, isolated_home, backend):
    footer = client.get("/").text.split("<footer", 1)[1]
    if backend == "team":  # the database and the bucket, never the password
        url = os.environ["PIPULATE_DATABASE_URL"]
        assert "postgresql://tester@127.0.0.1:" in footer and os.environ["PIPULATE_BLOBS_URL"] in footer
        assert url.split(":")[2].split("@")[0] not in footer and str(isolated_home) not in footer
    else:
        assert f"data in {isolated_home}" in footer


def test_healthz(client, isolated_home):
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True and APPS <= set(body["apps"])  # other apps may join
    assert Path(body["home"]) == isolated_home.resolve()


@pytest.mark.parametrize("path", ["/", "/hello", "/jobs", "/kernel-state", "/list-to-sheet", "/nope"])
def test_pages_load_nothing_from_a_cdn(client, path):
    html = client.get(path).text
    srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/htmx.min.js" in srcs and "/static/pico.min.css" in srcs
    assert not [s for s in srcs if s.startswith(("http:", "https:", "//"))]


def test_static_files_are_served(client):
    js = client.get("/static/htmx.min.js")
    assert js.status_code == 200 and "htmx" in js.text[:2000]
    assert client.get("/static/pico.min.css").status_code == 200
    assert client.get("/static/../server.py").status_code == 404


def test_no_session_key_file_written(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server.create_app(home=tmp_path / "h").state.pip.close()
    assert not (tmp_path / ".sesskey").exists()


# --- the Hello workflow ------------------------------------------------------------------------------

def test_landing_and_start(client):
    r = client.get("/hello")
    assert r.status_code == 200 and 'name="key"' in r.text and "<datalist" in r.text
    r = client.post("/hello/start", data={"key": "job1"}, headers=HX)
    assert r.status_code == 200
    assert r.headers["HX-Push-Url"] == "/hello?key=job1"
    assert 'id="workflow"' in r.text and 'hx-post="/hello/step/first_name"' in r.text
    assert "<html" not in r.text  # a fragment, not a page


def test_start_without_htmx_redirects_to_the_key_url(client):
    r = client.post("/hello/start", data={"key": "job1"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/hello?key=job1"


def test_hello_chain_reveals_each_step(client, pip):
    r = walk(client, "hello", "Mike")
    assert "Mike" in r.text and 'hx-post="/hello/step/last_name"' in r.text
    r = client.post("/hello/step/last_name", data={"key": "hello", "value": "Levin"}, headers=HX)
    # The greeting is suggested from the earlier steps.
    assert 'hx-post="/hello/step/greeting"' in r.text and "Hello, Mike Levin!" in r.text
    r = client.post("/hello/step/greeting", data={"key": "hello", "value": "Hello, Mike Levin!"}, headers=HX)
    assert 'hx-post="/hello/finalize"' in r.text
    assert pip.read("hello") == {"first_name": "Mike", "last_name": "Levin", "greeting": "Hello, Mike Levin!"}
    assert pip.info("hello")["app"] == "hello"


def test_step_fragment_routes(client):
    walk(client, "k", "Ada")
    r = client.get("/hello/step/first_name", params={"key": "k"}, headers=HX)
    assert r.status_code == 200 and "Ada" in r.text and "step-card done" in r.text
    r = client.get("/hello/step/last_name", params={"key": "k"}, headers=HX)
    assert r.status_code == 200 and 'name="value"' in r.text
    assert client.get("/hello/step/greeting", params={"key": "k"}, headers=HX).status_code == 409
    r = client.get("/hello/chain", params={"key": "k"}, headers=HX)
    assert r.status_code == 200 and r.text.lstrip().startswith('<div data-key="k" id="workflow">')


def test_resume_by_key(client):
    walk(client, "resume-me", "Grace", "Hopper")
    page = client.get("/hello", params={"key": "resume-me"})
    assert page.status_code == 200
    assert "Grace" in page.text and "Hopper" in page.text
    assert 'hx-post="/hello/step/greeting"' in page.text  # the next step is the form
    assert 'value="resume-me"' in page.text  # the key field is filled in
    # The datalist offers earlier keys.
    assert '<option value="resume-me"></option>' in client.get("/hello").text


def test_two_keys_do_not_interfere(client, pip):
    client.post("/hello/start", data={"key": "tab-a"}, headers=HX)
    client.post("/hello/start", data={"key": "tab-b"}, headers=HX)
    client.post("/hello/step/first_name", data={"key": "tab-a", "value": "Alice"}, headers=HX)
    client.post("/hello/step/first_name", data={"key": "tab-b", "value": "Bob"}, headers=HX)
    client.post("/hello/step/last_name", data={"key": "tab-a", "value": "A"}, headers=HX)
    assert pip.read("tab-a") == {"first_name": "Alice", "last_name": "A"}
    assert pip.read("tab-b") == {"first_name": "Bob"}


def test_revert_drops_that_step_and_later_ones(client, pip):
    walk(client, "rev", "Mike", "Levin", "Hi!")
    r = client.post("/hello/revert/last_name", data={"key": "rev"}, headers=HX)
    assert r.status_code == 200 and 'hx-post="/hello/step/last_name"' in r.text
    assert pip.read("rev") == {"first_name": "Mike"}
    r = client.post("/hello/step/last_name", data={"key": "rev", "value": "Smith"}, headers=HX)
    assert r.status_code == 200 and pip.get("rev", "last_name") == "Smith"


def test_revert_of_a_step_not_done_is_refused(client):
    walk(client, "rev2", "Mike")
    r = client.post("/hello/revert/greeting", data={"key": "rev2"}, headers=HX)
    assert r.status_code == 409


def test_finalize_locks_and_unfinalize_unlocks(client, pip):
    walk(client, "fin", "Mike", "Levin", "Hello!")
    r = client.post("/hello/finalize", data={"key": "fin"}, headers=HX)
    assert r.status_code == 200 and "Finalized" in r.text and "Revert" not in r.text
    assert pip.get("fin", "finalized") is True
    assert list(pip.read("fin")) == ["first_name", "last_name", "greeting", "finalized"]
    # Locked: no step can change, no revert, no second finalize.
    for url, data in [("/hello/revert/first_name", {"key": "fin"}),
                      ("/hello/step/greeting", {"key": "fin", "value": "x"}),
                      ("/hello/finalize", {"key": "fin"})]:
        r = client.post(url, data=data, headers=HX)
        assert r.status_code == 409, url
        assert "finalized" in r.text
    assert pip.get("fin", "greeting") == "Hello!"
    r = client.post("/hello/unfinalize", data={"key": "fin"}, headers=HX)
    assert r.status_code == 200 and "Revert" in r.text
    assert "finalized" not in pip.read("fin")
    assert client.post("/hello/revert/greeting", data={"key": "fin"}, headers=HX).status_code == 200


def test_finalize_before_the_end_is_refused(client, pip):
    walk(client, "early", "Mike")
    assert client.post("/hello/finalize", data={"key": "early"}, headers=HX).status_code == 409
    assert client.post("/hello/unfinalize", data={"key": "early"}, headers=HX).status_code == 409
    assert "finalized" not in pip.read("early")


def test_steps_out_of_order_are_refused(client, pip):
    walk(client, "order")
    r = client.post("/hello/step/greeting", data={"key": "order", "value": "Hi"}, headers=HX)
    assert r.status_code == 409 and "comes later" in r.text
    walk(client, "order", "Mike")
    r = client.post("/hello/step/first_name", data={"key": "order", "value": "Again"}, headers=HX)
    assert r.status_code == 409 and "already done" in r.text
    assert pip.read("order") == {"first_name": "Mike"}


def test_validation_message_goes_to_the_flash_slot(client, pip):
    walk(client, "val")
    r = client.post("/hello/step/first_name", data={"key": "val", "value": "1234"}, headers=HX)
    assert r.status_code == 400
    assert r.headers["HX-Retarget"] == "#flash" and 'id="flash"' in r.text and "letter" in r.text
    assert pip.read("val") == {}


@pytest.mark.parametrize("value", ["", "   ", None, "x" * 201])
def test_bad_step_values_are_refused(client, pip, value):
    walk(client, "bad-value")
    data = {"key": "bad-value"} if value is None else {"key": "bad-value", "value": value}
    r = client.post("/hello/step/first_name", data=data, headers=HX)
    assert r.status_code == 400
    assert pip.read("bad-value") == {}


def test_a_key_of_another_app_is_refused(client, pip):
    pip.set("urls", "items", ["a"], app="list-to-sheet")
    r = client.post("/hello/start", data={"key": "urls"}, headers=HX)
    assert r.status_code == 409 and "list-to-sheet" in r.text
    assert client.post("/hello/step/first_name", data={"key": "urls", "value": "x"}, headers=HX).status_code == 409
    assert pip.read("urls") == {"items": ["a"]}


BAD_KEYS = ["", "   ", "x" * 101, "..", "../etc", "a/b", "/etc/passwd", "a\\b", "..\\x", "bad<key>",
            "nul\x00key", "line\nbreak", "-leading-dash"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused_everywhere(client, pip, isolated_home, key):
    before = sorted(p.name for p in isolated_home.iterdir())
    calls = [client.post("/hello/start", data={"key": key}, headers=HX),
             client.post("/hello/start", data={"key": key}),
             client.post("/hello/step/first_name", data={"key": key, "value": "Mike"}, headers=HX),
             client.post("/hello/revert/first_name", data={"key": key}, headers=HX),
             client.post("/hello/finalize", data={"key": key}, headers=HX),
             client.get("/hello/chain", params={"key": key}),
             client.post("/list-to-sheet/run", data={"key": key}, headers=HX),
             client.get("/list-to-sheet/download", params={"key": key})]
    if key.strip():
        calls.append(client.get("/hello", params={"key": key}))
    for r in calls:
        assert r.status_code == 400, (r.request.url, r.status_code, r.text[:200])
        assert "Traceback" not in r.text
    assert pip.jobs() == []
    assert sorted(p.name for p in isolated_home.iterdir()) == before


def test_bad_key_message_is_clear(client):
    r = client.post("/hello/start", data={"key": "x" * 500})
    assert r.status_code == 400 and "at most 100" in r.text and "<html>" in r.text
    r = client.post("/hello/start", data={"key": ""}, headers=HX)
    assert r.status_code == 400 and "Enter a key" in r.text


def test_unknown_workflow_step_and_route(client):
    walk(client, "k")
    assert client.post("/hello/step/nope", data={"key": "k", "value": "x"}, headers=HX).status_code == 404
    assert client.get("/hello/step/nope", params={"key": "k"}).status_code == 404
    assert client.post("/hello/revert/nope", data={"key": "k"}, headers=HX).status_code == 404
    assert client.post("/nope/step/first_name", data={"key": "k", "value": "x"}).status_code in (404, 405)
    r = client.get("/nope")
    assert r.status_code == 404 and "Nothing here" in r.text
    assert client.get("/hello/start").status_code == 405  # changes are POST only
    assert client.get("/hello/step/first_name/extra", params={"key": "k"}).status_code == 404


def test_a_json_field_of_the_wrong_shape_is_a_400(client):
    # Found by the fuzzer: FastHTML failed binding `[]` to a str parameter (IndexError -> 500).
    r = client.post("/hello/step/", content=b'{"key": []}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "wrong shape" in r.text and "Traceback" not in r.text


def test_errors_never_show_a_traceback(client):
    for r in (client.get("/nope"), client.post("/hello/step/x"), client.get("/api/nope"),
              client.get("/jobs/view"), client.get("/kernel-state/notebook", params={"id": "../x"})):
        assert 400 <= r.status_code < 500
        assert "Traceback" not in r.text and 'File "' not in r.text


# --- the HTTP API ----------------------------------------------------------------------------------

def test_api_jobs(client, pip):
    assert client.get("/api/jobs").json() == {"jobs": []}
    walk(client, "hello", "Mike")
    pip.set("nb-job", "x", 1)
    jobs = client.get("/api/jobs").json()["jobs"]
    assert [j["job"] for j in jobs] == ["nb-job", "hello"]
    assert jobs[1]["app"] == "hello" and jobs[1]["steps"] == 1 and jobs[0]["app"] is None


def test_api_job_values_of_any_type(client, pip):
    import numpy as np
    import pandas as pd
    pip.set("mixed", "text", "hi")
    pip.set("mixed", "frame", pd.DataFrame({"a": range(100), "b": ["x"] * 100}))
    pip.set("mixed", "array", np.zeros((3, 4), dtype="float32"))
    pip.set("mixed", "when", __import__("datetime").date(2024, 1, 2))
    pip.set("mixed", "obj", object())
    body = client.get("/api/jobs/mixed").json()
    steps = {s["step"]: s for s in body["steps"]}
    assert steps["text"]["value"] == "hi" and steps["text"]["format"] == "json"
    assert steps["frame"]["value"]["shape"] == [100, 2] and len(steps["frame"]["value"]["head"]["data"]) == 5
    assert steps["array"]["value"] == {"type": "ndarray", "shape": [3, 4], "dtype": "float32"}
    assert steps["when"]["value"] == "2024-01-02"
    assert steps["obj"]["value"]["type"] == "object"


def test_api_job_names_with_slashes_are_just_names(client, pip):
    pip.set("a/b/../c", "s", 1)
    r = client.get("/api/jobs/a/b/%2E%2E/c")
    assert r.status_code in (200, 404)  # never a path: only the store is consulted
    assert client.get("/api/jobs/no-such-job").status_code == 404
    assert client.get("/api/jobs/no-such-job").json()["error"].startswith("No job")


def test_api_unknown_endpoint_is_json_404(client):
    r = client.get("/api/nope")
    assert r.status_code == 404 and r.json()["status"] == 404
    assert client.post("/api/jobs").status_code in (404, 405)


# --- the Jobs page ------------------------------------------------------------------------------------

def test_jobs_page_shows_values_sensibly(client, pip):
    import numpy as np
    import pandas as pd
    pip.set("data", "frame", pd.DataFrame({"col": range(1000)}))
    pip.set("data", "array", np.arange(10_000).reshape(100, 100))
    pip.set("data", "long", "y" * 100_000)
    assert 'href="/jobs/view?job=data"' in client.get("/jobs").text
    r = client.get("/jobs/view", params={"job": "data"})
    assert r.status_code == 200
    assert "DataFrame 1000 rows × 1 columns" in r.text
    assert "ndarray shape (100, 100) dtype int64" in r.text
    assert "more characters" in r.text and len(r.text) < 60_000


def test_jobs_page_revert_and_delete(client, pip):
    for step in ("a", "b", "c"):
        pip.set("j", step, step)
    r = client.post("/jobs/revert", data={"job": "j", "step": "b"}, headers=HX)
    assert r.status_code == 200 and pip.read("j") == {"a": "a"}
    assert client.post("/jobs/revert", data={"job": "j", "step": "zzz"}, headers=HX).status_code == 404
    r = client.post("/jobs/delete", data={"job": "j"}, headers=HX)
    assert r.status_code == 200 and pip.jobs() == []
    assert client.post("/jobs/delete", data={"job": "j"}, headers=HX).status_code == 404
    assert client.get("/jobs/view", params={"job": "j"}).status_code == 404
    assert client.get("/jobs/view").status_code == 400


def test_jobs_page_respects_the_finalize_lock(client, pip):
    walk(client, "locked", "A", "B", "C")
    client.post("/hello/finalize", data={"key": "locked"}, headers=HX)
    assert client.post("/jobs/revert", data={"job": "locked", "step": "first_name"}, headers=HX).status_code == 409
    assert client.post("/jobs/revert", data={"job": "locked", "step": "finalized"}, headers=HX).status_code == 200
    assert "finalized" not in pip.read("locked")


def test_a_damaged_value_is_shown_not_a_500(client, pip):
    pip.set("dmg", "ok", 1)
    pip.set("dmg", "bad", {"x": 1})
    with pip.db.write() as conn:
        conn.execute("UPDATE steps SET format = 'pickle', value = ? WHERE job = 'dmg' AND step = 'bad'", (b"\x00",))
    r = client.get("/jobs/view", params={"job": "dmg"})
    assert r.status_code == 200 and "Cannot read this value" in r.text
    body = client.get("/api/jobs/dmg").json()
    assert {s["step"]: s["value"] for s in body["steps"]}["bad"]["type"] == "damaged"


def test_changes_from_another_site_are_refused(client, pip):
    evil = {**HX, "Origin": "http://evil.example"}
    assert client.post("/hello/start", data={"key": "k"}, headers=evil).status_code == 403
    walk(client, "k", "Mike")
    assert client.post("/jobs/delete", data={"job": "k"}, headers=evil).status_code == 403
    assert client.delete("/api/notebooks/x/state", headers={"Origin": "null"}).status_code == 403
    assert pip.read("k") == {"first_name": "Mike"}
    same = {**HX, "Origin": "http://127.0.0.1:5001"}
    assert client.post("/hello/step/last_name", data={"key": "k", "value": "L"}, headers=same).status_code == 200
    assert client.get("/hello", params={"key": "k"}, headers={"Origin": "http://evil.example"}).status_code == 200



def test_requests_naming_another_host_are_refused(client, pip):
    """DNS rebinding: a site that points its name at 127.0.0.1 gets its requests refused,
    even when its Origin and Host agree."""
    walk(client, "k", "Mike")
    rebound = {"Host": "evil.example:5001", "Origin": "http://evil.example:5001"}
    r = client.get("/api/jobs/k", headers=rebound)
    assert r.status_code == 403 and "evil.example" in r.json()["error"]
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 403
    assert client.post("/jobs/delete", data={"job": "k"}, headers={**HX, **rebound}).status_code == 403
    assert client.get("/", headers={"Host": ""}).status_code == 403
    assert pip.read("k") == {"first_name": "Mike"}
    for host in ("localhost:5001", "127.0.0.1:5001", "[::1]:5001", "LOCALHOST", "lab.localhost:5001"):
        assert client.get("/api/jobs/k", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize("listen, host, status", [
    ("0.0.0.0", "evil.example:5001", 200),  # listening everywhere: meant to be reached by any name
    ("192.168.1.5", "192.168.1.5:5001", 200),
    ("192.168.1.5", "evil.example:5001", 403),
    ("::1", "[::1]:5001", 200),
])
def test_the_listen_address_is_an_allowed_host(isolated_home, listen, host, status):
    app = server.create_app(home=isolated_home, listen_host=listen)
    try:
        with web_client(app) as c:
            assert c.get("/healthz", headers={"Host": host}).status_code == status
    finally:
        app.state.pip.close()

def test_open_in_its_app_link_only_for_mounted_apps(client, pip):
    walk(client, "k", "Mike")
    pip.set("nb", "x", 1)
    assert 'href="/hello?key=k"' in client.get("/jobs/view", params={"job": "k"}).text
    assert "Open in its app" not in client.get("/jobs/view", params={"job": "nb"}).text


def test_cookies_never_fill_parameters(client, pip):
    # Another program on localhost (JupyterLab...) may set cookies the browser also sends here.
    client.cookies.set("key", "hijacked")
    client.cookies.set("value", "hijacked")
    walk(client, "mine", "Mike")
    assert pip.read("mine") == {"first_name": "Mike"} and "hijacked" not in pip.jobs()


def test_landing_refuses_a_key_of_another_app(client, pip):
    pip.set("sheet", "items", ["a"], app="list-to-sheet")
    assert client.get("/hello", params={"key": "sheet"}).status_code == 409


def test_unicode_keys_work(client, pip):
    r = client.post("/hello/start", data={"key": "café 1"}, headers=HX)
    assert r.status_code == 200 and r.headers["HX-Push-Url"] == "/hello?key=caf%C3%A9%201"
    walk(client, "café 1", "Zoë")
    assert pip.read("café 1") == {"first_name": "Zoë"}
    assert "Zoë" in client.get("/hello", params={"key": "café 1"}).text


def test_an_oversized_body_is_refused(client, pip):
    r = client.post("/hello/start", content=b"x", headers={"Content-Length": str(64 * 2**20),
                                                          "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_route_and_option_is_documented(app):
    doc = (REPO / "docs" / "web.md").read_text()
    documented = {_shape(p) for p in re.findall(r"`(?:GET|POST|DELETE) (/[^ `?]*)", doc)}
    # The workflow routes are documented once, for /hello; every workflow has them.
    documented |= {"/list-to-sheet" + p[len("/hello"):] for p in documented if p.startswith("/hello")}
    ours = ("/", "/healthz", "/api/", "/hello", "/jobs", "/kernel-state", "/list-to-sheet")
    missing = []
    for route in app.routes:
        path = getattr(route, "path", "")
        if path in ("/static", "/api/{rest:path}") or not path.startswith(ours):
            continue
        if path != "/" and not any(path == p or path.startswith(p + "/") for p in ours if p != "/"):
            continue
        if _shape(path) not in documented:
            missing.append(path)
    assert not missing, f"routes missing from docs/web.md: {missing}"
    for option in ("--no-reload", "--port", "--host", "--log-level", "--jupyterlab", "PIPULATE_PORT",
                   "PIPULATE_HOST", "PIPULATE_HOME", "PIPULATE_TOKEN"):
        assert option in doc, option


def test_any_key_and_value_get_an_answer_never_a_5xx(client, pip):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = st.text(st.characters(codec="utf-8"), max_size=120)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(key=text, value=text, step=st.sampled_from(["first_name", "last_name", "greeting", "nope", ".."]))
    def check(key, value, step):
        for r in (client.post("/hello/start", data={"key": key}, headers=HX),
                  client.post(f"/hello/step/{step}", data={"key": key, "value": value}, headers=HX),
                  client.get("/hello", params={"key": key}),
                  client.get("/api/jobs/" + (quote(key, safe="") or "x"))):
            assert 200 <= r.status_code < 500, (key, value, r.status_code, r.text[:200])

    check()
    for job in pip.jobs():  # whatever was accepted is a valid key
        assert len(job) <= 100 and "/" not in job and ".." not in job
