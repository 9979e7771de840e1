"""`pipulate up` in Chromium, as the user meets it: the printed JupyterLab URL, then JupyterLab's
Help menu to the web app and the web app's link back, each landing logged in."""
from __future__ import annotations

import json
import re
import stat

import pytest

from pipulate.jupyter.links import LINK_TEXT

from .test_browser import browser  # noqa: F401  (fixture)
from .test_up import checkout, free_ports, running  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_jupyterlab_and_the_web_app_link_to_each_other_logged_in(running, browser, isolated_home):  # noqa: F811
    web_port, lab_port = free_ports(2)
    up = running("--port", str(web_port), "--jupyter-port", str(lab_port))
    web_url = up.wait_for("web app:").split()[-1]
    lab_url = up.wait_for("JupyterLab:").split()[-1]
    token = lab_url.split("token=", 1)[1]

    # The per-start settings that hold the link (and so the token) are the user's alone.
    overrides = isolated_home / "jupyter" / "per-start" / "labconfig" / "default_setting_overrides.json"
    assert stat.S_IMODE(overrides.stat().st_mode) == 0o600
    assert stat.S_IMODE(overrides.parent.stat().st_mode) == 0o700
    assert web_url in json.dumps(json.loads(overrides.read_text()))

    context = browser.new_context()
    try:
        lab = context.new_page()
        lab.set_default_timeout(90_000)  # JupyterLab's first load on a busy machine
        lab.goto(lab_url)
        lab.get_by_role("menuitem", name="Help", exact=True).click()
        item = lab.get_by_role("menuitem", name=LINK_TEXT)
        item.wait_for()
        with context.expect_page() as opened:
            item.click()
        web = opened.value
        web.wait_for_load_state()
        # Logged in by the link: the cookie is set, the token is gone from the address bar.
        assert web.url == f"http://127.0.0.1:{web_port}/"
        assert "Pipulate workstation" in web.locator("h1").inner_text()
        cookies = {c["name"]: c for c in context.cookies(web.url)}
        ours = cookies[f"pipulate-token-{web_port}"]
        assert ours["httpOnly"] and ours["sameSite"] == "Strict" and ours["path"] == "/"
        assert web.evaluate("document.cookie").find(token) == -1  # HttpOnly: no script reads it
        assert web.goto(f"http://127.0.0.1:{web_port}/jobs").status == 200

        # ... and back: the home page's JupyterLab link, in a fresh browser, lands logged in.
        fresh = browser.new_context()
        try:
            home = fresh.new_page()
            home.set_default_timeout(90_000)
            home.goto(web_url)
            with fresh.expect_page() as opened_lab:
                home.locator("#jupyterlab-link").click()
            back = opened_lab.value
            back.get_by_role("menuitem", name="Help", exact=True).wait_for()
            assert re.match(rf"http://127\.0\.0\.1:{lab_port}/lab", back.url)
        finally:
            fresh.close()
    finally:
        context.close()
