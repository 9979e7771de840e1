"""A real server process and headless Chromium: walk Hello as a user would, then List to spreadsheet.

Needs Debian's ``chromium`` (/usr/bin/chromium, or PIPULATE_CHROMIUM); skipped when it is absent.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_python, stop_process
from .test_web import REPO
from .test_web_apps import free_port, site, wait_health  # noqa: F401  (site is a fixture)

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("PIPULATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@pytest.fixture
def live_server(isolated_home):
    """``python server.py --no-reload`` on a free loopback port, with no PIPULATE_TOKEN: the
    token it makes is read from the URL it prints, as a user would. Yields the base URL; the
    login URL (with the token) is ``live_server.login``."""
    port = free_port()
    env = {**os.environ, "PIPULATE_HOME": str(isolated_home), "PIPULATE_PORT": str(port)}
    env.pop("PIPULATE_TOKEN")
    proc = subprocess.Popen([sys.executable, str(REPO / "server.py"), "--no-reload", "--log-level", "warning"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        printed = proc.stdout.readline()
        assert printed.startswith(f"pipulate server: open {url}/?token="), printed
        wait_health(url)
        yield LiveServer(url, printed.split()[-1])
    finally:
        stop_process(proc)
        err = proc.stderr.read()
        assert "Traceback" not in err, err


class LiveServer(str):
    def __new__(cls, url: str, login: str):
        self = super().__new__(cls, url)
        self.login = login
        return self


@pytest.fixture
def browser():
    assert Path(CHROMIUM).exists(), (
        f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    requests, errors = [], []
    pg.on("request", lambda req: requests.append(req.url))
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # Logged in as the user is: the printed URL once; the cookie it sets does the rest.
    assert pg.goto(live_server.login).url == live_server + "/"
    assert "Pipulate workstation" in pg.inner_text("h1")
    pg.requested = requests
    yield pg
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def submit_step(page, step, value):
    field = page.locator(f"#input-{step}")
    field.fill(value)
    page.locator(f"#step-{step} button[type=submit]").click()
    page.locator(f"#step-{step}.done").wait_for()


def test_walk_hello_leave_resume_revert_finalize(page, live_server, isolated_home):
    url = live_server
    page.goto(url + "/hello")
    page.fill("#key-input", "hello")
    page.click("text=Start or resume")
    page.locator("#input-first_name").wait_for()
    assert page.url == url + "/hello?key=hello"  # the key is in the URL: reload resumes

    # Bad input: a clear message in the page, nothing saved.
    page.fill("#input-first_name", "123")
    page.locator("#step-first_name button[type=submit]").click()
    page.locator("#flash .flash-error").wait_for()
    assert "letter" in page.inner_text("#flash")

    submit_step(page, "first_name", "Mike")
    assert page.inner_text("#flash") == ""  # the message went with the successful step
    submit_step(page, "last_name", "Levin")
    assert page.input_value("#input-greeting") == "Hello, Mike Levin!"

    # Reload: the job resumes where it stopped.
    page.reload()
    page.locator("#input-greeting").wait_for()
    assert "Mike" in page.inner_text("#step-first_name") and "Levin" in page.inner_text("#step-last_name")

    # Close the tab; come back later with the key.
    page.context.pages[0].close()
    tab = page.context.new_page()
    tab.goto(url + "/hello")
    tab.fill("#key-input", "hello")
    tab.click("text=Start or resume")
    tab.locator("#input-greeting").wait_for()
    assert "Levin" in tab.inner_text("#step-last_name")

    # Revert the last name: it and the greeting go; enter them again.
    tab.locator("#step-last_name").get_by_role("button", name="Revert").click()
    tab.locator("#input-last_name").wait_for()
    assert tab.locator("#step-greeting").count() == 0
    submit_step(tab, "last_name", "Smith")
    assert tab.input_value("#input-greeting") == "Hello, Mike Smith!"
    submit_step(tab, "greeting", "Hello, Mike Smith!")
    tab.get_by_role("button", name="Finalize").click()
    tab.locator(".finalized-badge").wait_for()
    assert tab.locator("text=Revert").count() == 0

    # A notebook reads the same job.
    out = run_python("from pipulate import pip; import json; print(json.dumps(pip.read('hello')))",
                     env={"PIPULATE_HOME": str(isolated_home)})
    assert json.loads(out.stdout) == {"first_name": "Mike", "last_name": "Smith",
                                      "greeting": "Hello, Mike Smith!", "finalized": True}
    # The other pages show the job too.
    tab.goto(url + "/jobs")
    tab.click('a[href="/jobs/view?job=hello"]')
    tab.locator("#job-detail").wait_for()
    assert "Hello, Mike Smith!" in tab.inner_text("#job-detail")
    tab.goto(url + "/kernel-state")
    assert "Kernel state" in tab.inner_text("h1")
    # Nothing was fetched from anywhere but the workstation.
    assert all(u.startswith(url) for u in page.requested), page.requested


def test_list_to_spreadsheet_in_the_browser(page, live_server, site, tmp_path):
    url = live_server
    base, handler = site
    urls = [f"{base}/p{i}.html" for i in range(8)] + [f"{base}/missing"]
    page.goto(url + "/list-to-sheet")
    page.fill("#key-input", "my-urls")
    page.click("text=Start or resume")
    page.locator("#input-items").fill("\n".join(urls))
    page.locator("#step-items button[type=submit]").click()
    page.locator("#input-function").wait_for()
    page.select_option("#input-function", "fetch_title")
    page.locator("#step-function button[type=submit]").click()
    page.click("#run-button")
    # The progress bar polls until the run is done, then the results card replaces it.
    page.locator("#download-csv").wait_for(timeout=30_000)
    assert "Page 7 & co" in page.inner_text("#step-run")
    assert "9 of 9 items done" in page.inner_text("#step-run")

    with page.expect_download() as info:
        page.click("#download-csv")
    path = tmp_path / "out.csv"
    info.value.save_as(path)
    lines = path.read_text().splitlines()
    assert lines[0] == "#,item,status,title,final_url,error" and len(lines) == 10
    assert lines[9].startswith(f"9,{base}/missing,404,")
    with page.expect_download() as info:
        page.click("#download-xlsx")
    assert info.value.suggested_filename == "my-urls.xlsx"

    # Reload: the finished run is still there.
    page.reload()
    page.locator("#download-csv").wait_for()
    assert sorted(handler.hits) == sorted(u[len(base):] for u in urls)  # each page fetched once
