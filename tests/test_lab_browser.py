"""JupyterLab as a user drives it: `pipulate up`, headless Chromium, Kernel > Restart Kernel.

The notebook's variables must come back after every restart from the menu, with cells
between the restarts that assign nothing. Needs Debian's ``chromium`` (.ci/run installs it).
"""
from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request

import pytest

from .test_browser import browser  # noqa: F401  (a fixture)
from .test_up import checkout, free_ports, running  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

CELLS = [
    'import pandas as pd\ndf = pd.DataFrame({"a": range(5)})\nn = 1',
    "df.shape",  # assigns nothing
    'print("CHECK", __import__("os").getpid(), sorted(get_ipython().run_line_magic("who_ls", "")), df["a"].sum(), n)',
]


def put_notebook(lab: str, token: str, name: str, sources: list[str]) -> None:
    """Create the notebook through JupyterLab's contents API (as File > New would)."""
    cells = [{"cell_type": "code", "source": src, "metadata": {}, "outputs": [], "execution_count": None,
              "id": f"cell-{i}"} for i, src in enumerate(sources)]
    content = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
               "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (pipulate)",
                                           "language": "python"}}}
    body = json.dumps({"type": "notebook", "format": "json", "content": content}).encode()
    request = urllib.request.Request(f"{lab}api/contents/{name}", data=body, method="PUT",
                                     headers={"Authorization": f"token {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201)


def open_notebook(browser, up, name: str, sources: list[str]):
    """A notebook of ``sources`` opened in JupyterLab (the URL `pipulate up` printed), its
    kernel idle; returns (context, page, JavaScript errors seen, JupyterLab's base URL, token)."""
    lab_url = up.wait_for("JupyterLab:").split()[-1]
    parsed = urllib.parse.urlparse(lab_url)
    token = urllib.parse.parse_qs(parsed.query)["token"][0]
    lab = f"{parsed.scheme}://{parsed.netloc}/"
    put_notebook(lab, token, name, sources)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{lab}lab/tree/{name}?token={token}")
    cell(page, len(sources) - 1).wait_for()
    page.locator("#jp-main-statusbar").filter(has_text="Idle").wait_for(timeout=120_000)
    return context, page, errors, lab, token


def cell(page, i):
    return page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(i)


def run_cell(page, i) -> None:
    cell(page, i).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def output_of(page, i, pattern: str, timeout: float = 120_000) -> str:
    """The text of cell ``i``'s output once it matches ``pattern``."""
    area = cell(page, i).locator(".jp-OutputArea")
    area.filter(has_text=re.compile(pattern)).wait_for(timeout=timeout)
    return area.inner_text()


def restart_from_menu(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Kernel$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Restart Kernel…?$")).click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("button.jp-mod-accept", has_text="Restart").click()
    dialog.wait_for(state="detached")


def test_variables_survive_three_restarts_from_the_kernel_menu(browser, running, tmp_path):  # noqa: F811
    web_port, lab_port = free_ports(2)
    up = running("--port", str(web_port), "--jupyter-port", str(lab_port))
    context, page, errors, _, _ = open_notebook(browser, up, "restarts.ipynb", CELLS)

    run_cell(page, 0)
    run_cell(page, 2)
    first = output_of(page, 2, "CHECK")
    pids = [first.split()[1]]
    assert "['df', 'n', 'pd'] 10 1" in first, first

    for restart in range(1, 4):
        restart_from_menu(page)
        run_cell(page, 1)  # the first cell after the restart assigns nothing
        restored = output_of(page, 1, "pipulate: restored")
        assert "restored 3 variables of restarts.ipynb" in restored and "df, n, pd" in restored, restored
        run_cell(page, 2)
        checked = output_of(page, 2, r"CHECK (?!%s\b)\d+" % pids[-1])
        assert "['df', 'n', 'pd'] 10 1" in checked, (restart, checked)
        pids.append(checked.split()[1])
        page.screenshot(path=str(tmp_path / f"after-restart-{restart}.png"))
    assert len(set(pids)) == 4, pids  # four kernel processes: each restart was real
    context.close()
    assert not errors, f"JavaScript errors in JupyterLab: {errors}"
