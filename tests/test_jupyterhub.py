"""JupyterHub in front of the workstation, for real: JupyterHub from PyPI, configurable-http-proxy
from npm (``npm ci --prefix deploy/jupyterhub``, which install.sh's test step runs), the shipped
deploy/jupyterhub/jupyterhub_config.py, two users on loopback with free ports.

Users log in with the shared-password authenticator; their servers run as this unix user, each
in a home folder of its own (``PIPULATE_HUB_SPAWNER=same-user``: SimpleLocalProcessSpawner), as
the test cannot make unix accounts. Everything goes through the hub's proxy: the hub's REST API
starts each server, the Jupyter REST and websocket APIs behind ``/user/NAME/`` run the cells.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from .conftest import REPO
from .kernel_helpers import AUTOLOAD
from .test_browser import browser  # noqa: F401  (a fixture)
from .test_lab_server import run_notebook
from .test_up import free_ports, get_json, run_cells, text_of

pytestmark = [pytest.mark.timeout(900),
              pytest.mark.backends("embedded", reason="the hub's users get the team store it sets up (team_store)")]

CONFIG = REPO / "deploy" / "jupyterhub" / "jupyterhub_config.py"
PROXY = REPO / "deploy" / "jupyterhub" / "node_modules" / ".bin" / "configurable-http-proxy"
PASSWORD = "correct horse battery"
USERS = ("alice", "bob")
DEADLINE = 240  # a first start of JupyterLab on a busy machine


@dataclass
class TeamStore:
    """The store settings every hub user gets: ``backend`` says which store they share."""
    backend: str            # "embedded" (one shared PIPULATE_HOME) or "team" (PostgreSQL + S3)
    env: dict[str, str]     # PIPULATE_HUB_* / PIPULATE_* settings of the hub


@pytest.fixture(scope="module")
def team_store(tmp_path_factory, postgres_server, s3_server):
    """THE place the store settings of the hub test come from: the team backend, as
    docs/jupyterhub.md sets it up. Each user's kernels connect to one PostgreSQL database with
    that user's own role and to one bucket, from their own env file (mode 600); their
    PIPULATE_HOME stays their own (a cache of the bucket, and local things)."""
    database = postgres_server.make_database()
    blobs = f"s3://{s3_server.make_bucket()}/blobs"
    env_dir = tmp_path_factory.mktemp("user-env")
    env_dir.chmod(0o700)
    for user in USERS:
        settings = {**s3_server.env, "PIPULATE_DATABASE_URL": postgres_server.user_url(database, user),
                    "PIPULATE_BLOBS_URL": blobs}
        env_file = env_dir / f"{user}.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        env_file.chmod(0o600)
    return TeamStore("team", {"PIPULATE_HUB_USER_ENV_DIR": str(env_dir)})


@dataclass
class Hub:
    url: str
    proc: subprocess.Popen
    log: Path
    data: Path  # PIPULATE_HUB_DATA: the users' home folders are in users/
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, user: str, method: str, route: str, body=None):
        return get_json(f"{self.url}/hub/api/{route}", self.tokens[user], method, body)

    def lab(self, user: str) -> str:
        return f"{self.url}/user/{user}/"

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def start_server(self, user: str) -> str:
        """Start ``user``'s server through the hub's REST API; wait until it is ready."""
        model = self.api(user, "GET", f"users/{user}")
        if not (model["servers"].get("") or {}).get("ready"):
            self.api(user, "POST", f"users/{user}/server", {})
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the hub exited:\n{self.log_tail()}"
            server = self.api(user, "GET", f"users/{user}")["servers"].get("")
            if server and server["ready"]:
                return self.lab(user)
            time.sleep(0.5)
        raise AssertionError(f"{user}'s server was not ready within {DEADLINE} s:\n{self.log_tail()}")

    def stop_server(self, user: str) -> None:
        self.api(user, "DELETE", f"users/{user}/server")
        deadline = time.monotonic() + DEADLINE
        while self.api(user, "GET", f"users/{user}")["servers"]:
            assert time.monotonic() < deadline, f"{user}'s server did not stop:\n{self.log_tail()}"
            time.sleep(0.5)


def hub_env(tmp: Path, store: TeamStore) -> dict[str, str]:
    """The hub's environment: nothing of this process's Jupyter or pipulate settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PIPULATE_", "IPYTHONDIR"))}
    port, api, proxy_api = free_ports(3)
    (tmp / "hub-home").mkdir()
    env.update(HOME=str(tmp / "hub-home"), PIPULATE_HUB_PORT=str(port), PIPULATE_HUB_API_PORT=str(api),
               PIPULATE_HUB_PROXY_API_PORT=str(proxy_api), PIPULATE_HUB_DATA=str(tmp / "hub"),
               PIPULATE_HUB_AUTHENTICATOR="shared-password", PIPULATE_HUB_PASSWORD=PASSWORD,
               PIPULATE_HUB_USERS=",".join(USERS), PIPULATE_HUB_SPAWNER="same-user", **store.env)
    return env


def hub_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "jupyterhub", *args, "-f", str(CONFIG)]


@pytest.fixture(scope="module")
def hub(tmp_path_factory, team_store):
    assert PROXY.exists(), (f"no configurable-http-proxy at {PROXY}: run `npm ci --prefix deploy/jupyterhub` "
                            "(./install.sh test does)")
    tmp = tmp_path_factory.mktemp("hub")
    env = hub_env(tmp, team_store)
    tokens = {}
    for user in USERS:  # an API token per user, as an admin hands them out (before the hub runs)
        made = subprocess.run(hub_command("token", user), env=env, cwd=tmp, capture_output=True, text=True,
                              timeout=120)
        assert made.returncode == 0, made.stderr
        tokens[user] = made.stdout.split()[-1]
    log = tmp / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(hub_command(), env=env, cwd=tmp, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{env['PIPULATE_HUB_PORT']}"
    running = Hub(url, proc, log, Path(env["PIPULATE_HUB_DATA"]), tokens)
    try:
        wait_for_hub(running)
        yield running
    finally:
        stop_hub(running)


def wait_for_hub(hub: Hub) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        assert hub.proc.poll() is None, f"the hub exited:\n{hub.log_tail()}"
        try:
            with urllib.request.urlopen(f"{hub.url}/hub/api/", timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"the hub did not answer within {DEADLINE} s:\n{hub.log_tail()}")


def stop_hub(hub: Hub) -> None:
    """SIGTERM, as Ctrl-C would: the hub stops the proxy and every user's server, whose web app
    and kernels stop with it. Nothing may be left running, and nothing may have failed."""
    try:
        started = psutil.Process(hub.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    hub.proc.terminate()
    try:
        hub.proc.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        hub.proc.kill()
        hub.proc.wait()
    _, left = psutil.wait_procs(started, timeout=60)
    names = []
    for p in left:
        try:
            names.append(" ".join(p.cmdline()))
            p.kill()
        except psutil.Error:
            pass
    assert not left, f"still running after the hub stopped: {names}"
    log = hub.log.read_text(errors="replace")
    assert "Traceback" not in log, log[max(0, log.index("Traceback") - 2000):log.index("Traceback") + 4000]


def run(lab: str, token: str, kernel_id: str, *cells: str) -> list[str]:
    """Run ``cells`` in a running kernel over the proxy; their text outputs (none may fail)."""
    results = asyncio.run(run_cells(lab, token, kernel_id, list(cells)))
    assert [r["status"] for r in results] == ["ok"] * len(cells), results
    return [text_of(r) for r in results]


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url: str, token: str | None) -> tuple[int, str]:
    """(status, body) of a GET, redirects not followed (a redirect to the hub's log-in is an answer)."""
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.build_opener(NoRedirects).open(request, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def kernel_of(lab: str, token: str, notebook: str) -> str:
    sessions = get_json(lab + "api/sessions", token)
    return next(s["kernel"]["id"] for s in sessions if s["path"] == notebook)


def restart(lab: str, token: str, kernel_id: str) -> None:
    """Kernel > Restart Kernel, through the REST API: a new kernel process, same kernel id."""
    get_json(lab + f"api/kernels/{kernel_id}/restart", token, "POST", {})


ALICE = ["import os, sys\nimport numpy as np\nfrom pipulate import pip\nsecret = 41 + 1\nbig = np.arange(2_000_000)\n"
         "pip.set('team-report', 'draft', {'by': os.environ['PIPULATE_USER']})",
         "print(os.environ['PIPULATE_USER'], os.environ['JUPYTERHUB_USER'], "
         "'pipulate.kernel_state.extension' in sys.modules)"]
PID = "print(__import__('os').getpid())"  # an expression: it assigns no variable
BOB = ["from pipulate import pip\nshared = pip.get('team-report', 'draft')\nmine = 'bob was here'",
       "print(shared, 'secret' in dir())"]


def test_two_users_share_a_job_and_keep_their_kernel_state(hub, team_store):
    alice, bob = (hub.tokens[u] for u in USERS)
    lab_a = hub.start_server("alice")
    lab_b = hub.start_server("bob")

    # Each JupyterLab has the workstation's kernel spec (the extension loaded at kernel start).
    specs = get_json(lab_a + "api/kernelspecs", alice)
    assert specs["default"] == "python3", specs
    spec = specs["kernelspecs"]["python3"]["spec"]
    assert spec["display_name"] == "Python 3 (pipulate)" and AUTOLOAD in spec["argv"], spec
    # Each found their copy of the shipped notebooks in the folder JupyterLab opens.
    for lab, token in ((lab_a, alice), (lab_b, bob)):
        listed = {item["name"] for item in get_json(lab + "api/contents", token)["content"]}
        assert {p.name for p in (REPO / "notebooks").glob("*.ipynb")} <= listed, listed

    # Alice runs a notebook: a workflow job for the team, a variable for herself.
    results = run_notebook(lab_a, alice, "analysis.ipynb", ALICE)
    assert text_of(results[1]).split() == ["alice", "alice", "True"], results[1]
    # The server extension answers behind the proxy, for her notebook.
    state = get_json(lab_a + "pipulate/state?path=analysis.ipynb", alice)
    assert "secret" in {v["name"] for v in state["current"]["variables"]}, state

    # Her own web app runs beside her JupyterLab, on her store, behind the hub's proxy under her
    # server: it shows the job she wrote. The JupyterLab extension's "Pipulate Web App" opens this
    # address; the hub lets her in (the proxy adds the web app's own token).
    web = get_json(lab_a + "pipulate/info", alice)["web_app_url"]
    assert web == "/user/alice/pipulate-web/", web
    job = get_json(hub.url + web + "api/jobs/team-report", alice)
    assert "alice" in json.dumps(job), job
    assert get_json(lab_b + "pipulate/info", bob)["web_app_url"] == "/user/bob/pipulate-web/"  # his own
    # Bob's token does not open hers, and no token opens it: the hub answers, not her web app.
    for token in (bob, None):
        status, body = fetch(hub.url + web + "api/jobs/team-report", token)
        assert status in (302, 401, 403) and "team-report" not in body, (token == bob, status, body[:300])
    # Her web app's own port, on loopback, still wants its token from anyone else on the machine.
    port = run(lab_a, alice, kernel_of(lab_a, alice, "analysis.ipynb"), "print(os.environ['PIPULATE_PORT'])")[0]
    status, body = fetch(f"http://127.0.0.1:{port.strip()}/api/jobs/team-report", None)
    assert status == 401 and "team-report" not in body, (status, body[:300])

    # Bob runs his own notebook of the same name: he reads Alice's job.
    results = run_notebook(lab_b, bob, "analysis.ipynb", BOB)
    shared, sees_secret = text_of(results[1]).rsplit(" ", 1)
    assert shared == "{'by': 'alice'}", results[1]
    if team_store.backend == "team":
        # NEEDS THE TEAM BACKEND: kernel state is the user's own there (row-level security);
        # the embedded store shared by both users in this branch's fixture has no owners.
        assert sees_secret.strip() == "False", "bob's kernel restored alice's kernel state"

    # Neither one's own token opens the other's server.
    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(lab_b + "api/sessions", alice)
    assert refused.value.code == 403

    # After a restart each kernel has its own variables back.
    for lab, token, check, expected in [(lab_a, alice, "print(secret)", "42"),
                                        (lab_b, bob, "print(mine)", "bob was here")]:
        kernel = kernel_of(lab, token, "analysis.ipynb")
        pid_before = run(lab, token, kernel, PID)[0]
        restart(lab, token, kernel)
        first, out, pid_after = run(lab, token, kernel, "pass", check, PID)
        assert "pipulate: restored" in first, first
        assert out.strip() == expected, (first, out)
        assert pid_after != pid_before  # a new kernel process

    # Alice's machine is thrown away (her server and her whole home folder): on a new one, her
    # notebook's kernel state comes back from the store.
    hub.stop_server("alice")
    home = hub.data / "users" / "alice"
    shutil.rmtree(home)
    lab_a = hub.start_server("alice")
    results = run_notebook(lab_a, alice, "analysis.ipynb", ["print(secret, int(big.sum()))"])
    # ``big`` is a blob: it came back from the bucket, not from her (deleted) home.
    assert "pipulate: restored" in text_of(results[0]), results[0]
    assert text_of(results[0]).split()[-2:] == ["42", str(sum(range(2_000_000)))], results[0]


def log_in(browser, hub: Hub, user: str):  # noqa: F811
    """A browser context logged in to the hub as ``user``, and its page (on their JupyterLab)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(DEADLINE * 1000)
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", PASSWORD)
    page.click("#login_submit")
    page.wait_for_url(f"{hub.url}/user/{user}/lab**")
    # JupyterLab started: its status bar is drawn once every plugin has its settings. Leaving
    # the page before that aborts requests in flight, and the server logs their closed
    # streams as tracebacks, which the hub fixture's check of the log then reports.
    page.locator("#jp-main-statusbar").wait_for()
    page.wait_for_load_state("networkidle")
    return context, page


def test_a_user_logs_in_through_the_hub_and_reaches_jupyterlab(hub, browser, tmp_path):  # noqa: F811
    context, page = log_in(browser, hub, "alice")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The launcher offers the workstation's kernel; a new notebook runs on it, as alice.
    page.locator(".jp-LauncherCard", has_text="Python 3 (pipulate)").first.click()
    page.locator("#jp-main-statusbar").filter(has_text="Python 3 (pipulate) | Idle").wait_for()
    page.locator(".jp-NotebookPanel .jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.type("import os; print(os.environ['PIPULATE_USER'], "
                       "'pipulate' in get_ipython().extension_manager.loaded)")
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-NotebookPanel .jp-OutputArea").first
    output.filter(has_text="alice").wait_for()
    assert output.inner_text().split() == ["alice", "True"], output.inner_text()
    # The JupyterLab extension and its server side work behind the proxy: the cell's state was saved.
    page.locator("#jp-main-statusbar").filter(has_text=re.compile(r"State v\d+ · 1 var")).wait_for()
    page.screenshot(path=str(tmp_path / "hub-lab.png"))
    context.close()
    assert not errors, f"JavaScript errors in JupyterLab: {errors}"


def test_a_user_opens_her_web_app_through_the_hub_and_only_she_does(hub, browser, tmp_path):  # noqa: F811
    """The web app at /user/alice/pipulate-web/ on the proxy's public port, in Chromium: its CSS and
    htmx load from there, a workflow step runs end to end; bob and a stranger get nothing."""
    context, lab = log_in(browser, hub, "alice")
    web = f"{hub.url}/user/alice/pipulate-web/"
    page = context.new_page()
    page.set_default_timeout(DEADLINE * 1000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    statuses: dict[str, int] = {}
    page.on("response", lambda response: statuses.__setitem__(response.url, response.status))
    page.goto(web)
    page.get_by_role("heading", name="Pipulate workstation").wait_for()
    assert [statuses.get(web + f"static/{name}") for name in ("pico.min.css", "htmx.min.js")] == [200, 200], statuses
    assert page.evaluate("[...document.styleSheets].some(s => (s.href || '').endsWith('/user/alice/pipulate-web/"
                         "static/pico.min.css') && s.cssRules.length > 100)")
    assert page.evaluate("typeof htmx") == "object"
    # A workflow through the proxy: htmx posts, swaps, and pushes the job's address.
    page.locator("header nav").get_by_role("link", name="Hello").click()
    page.wait_for_url(web + "hello")
    page.fill("#key-input", "via-the-hub")
    page.click("text=Start or resume")
    page.fill("#input-first_name", "Alice")
    page.locator("#step-first_name button[type=submit]").click()
    page.locator("#step-first_name.done").wait_for()
    page.locator("#input-last_name").wait_for()
    assert page.url == web + "hello?key=via-the-hub", page.url
    job = get_json(web + "api/jobs/via-the-hub", hub.tokens["alice"])
    assert "Alice" in json.dumps(job), job
    shot = Path("/work/artifacts/hubweb") if Path("/work/artifacts").is_dir() else tmp_path
    shot.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot / "alice-web-app-through-the-hub.png"), full_page=True)
    assert not errors, f"JavaScript errors in the web app: {errors}"
    context.close()

    # Bob, logged in to the hub, is refused at her web app: no page of hers, no job.
    context, lab = log_in(browser, hub, "bob")
    answer = lab.goto(web + "jobs")
    assert answer.status in (403, 404) and "via-the-hub" not in lab.content(), (answer.status, lab.url)
    context.close()
    # Nobody logged in is sent to the hub's log-in page.
    context = browser.new_context()
    page = context.new_page()
    page.goto(web + "jobs")
    assert page.url.startswith(f"{hub.url}/hub/login"), page.url
    assert "via-the-hub" not in page.content()
    context.close()
