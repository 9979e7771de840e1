"""List to spreadsheet on pip.map's engine: the browser function, user functions, per-host
politeness, a notebook's run shown live on the page (in headless Chromium), and a web run
finished from a notebook."""
from __future__ import annotations

import threading
import time

import pytest

from pipulate.item_functions import FUNCTIONS, polite

from .site_server import TestSite
from .test_browser import browser, live_server, page  # noqa: F401  (fixtures)
from .test_map import gated_run, wait_until
from .test_web import HX, app, client, pip  # noqa: F401  (fixtures)
from .test_web_apps import prepare_list, wait_done


@pytest.fixture
def test_site():
    with TestSite() as s:
        yield s


@pytest.mark.browser
def test_the_browser_function_on_the_page(client, pip, test_site):
    urls = [test_site.url(f"/js{i}.html") for i in range(3)] + [test_site.url("/status/404")]
    prepare_list(client, "rendered", urls, function="scrape")
    client.post("/list-to-sheet/run", data={"key": "rendered"}, headers=HX)
    r = wait_done(client, "rendered", timeout=120)
    assert "Rendered 2" in r.text
    frame_csv = client.get("/list-to-sheet/download", params={"key": "rendered", "format": "csv"}).text
    assert "Made by script 0" in frame_csv and ",404," in frame_csv
    assert pip.get("rendered", "item:" + urls[1])["screenshot_path"].endswith("screenshot.png")


def test_a_user_function_from_the_data_folder(isolated_home):
    folder = isolated_home / "item_functions"
    folder.mkdir(parents=True)
    (folder / "shout.py").write_text(
        "from pipulate.item_functions import item_function\n\n"
        "@item_function('shout', 'Upper-case each line')\n"
        "def shout(item):\n    return {'shouted': item.upper()}\n")
    (folder / "broken.py").write_text("raise RuntimeError('oops')\n")
    import server

    from .conftest import web_client

    try:
        app = server.create_app(home=isolated_home)
        with web_client(app) as c:
            prepare_list(c, "loud", ["abc", "Hello there"], function="shout")
            c.post("/list-to-sheet/run", data={"key": "loud"}, headers=HX)
            wait_done(c, "loud")
            assert app.state.pip.get("loud", "item:abc")["shouted"] == "ABC"
        app.state.pip.close()
    finally:
        FUNCTIONS.pop("shout", None)


def test_politeness_caps_requests_per_host_and_spaces_them(store, test_site):
    lock = threading.Lock()
    now_by_host: dict[str, int] = {}
    peak: dict[str, int] = {}
    # Calls of one host meet in pairs, so two are in flight at once whatever the machine's load;
    # a cap that let more through would show a peak above 2.
    pairs = {"127.0.0.1": threading.Barrier(2, timeout=120), "localhost": threading.Barrier(2, timeout=120)}

    def fetch(url):
        host = url.split("/")[2].split(":")[0]
        with lock:
            now_by_host[host] = now_by_host.get(host, 0) + 1
        pairs[host].wait()
        with lock:
            peak[host] = max(peak.get(host, 0), now_by_host[host])
        pairs[host].wait()  # both have looked before either leaves
        with lock:
            now_by_host[host] -= 1
        return {"host": host}

    port = test_site.base.rsplit(":", 1)[1]
    urls = [f"http://127.0.0.1:{port}/p{i}.html" for i in range(8)] + \
           [f"http://localhost:{port}/p{i}.html" for i in range(8)]
    store.map("polite", urls, polite(fetch, per_host=2), workers=8, progress=False)
    assert peak == {"127.0.0.1": 2, "localhost": 2}

    # Spaced: the k-th call cannot start before k delays after the run began (a lower bound
    # only, so a slow machine cannot fail it).
    starts: list[float] = []
    began = time.monotonic()
    store.map("spaced", urls[:4], polite(lambda url: starts.append(time.monotonic()) or {"ok": 1}, per_host=4, delay=0.2),
              workers=4, progress=False)
    assert all(t >= began + k * 0.2 for k, t in enumerate(sorted(starts))), [t - began for t in sorted(starts)]
    with pytest.raises(ValueError, match="per_host"):
        polite(fetch, per_host=0)


def test_a_web_run_is_read_resumed_and_exported_from_a_notebook(client, pip, tmp_path):
    prepare_list(client, "words", ["a b", "c d e"], function="text_stats")
    client.post("/list-to-sheet/run", data={"key": "words"}, headers=HX)
    wait_done(client, "words")
    from pipulate.item_functions import text_stats

    calls = []
    frame = pip.map("words", ["a b", "c d e", "f"], lambda s: calls.append(s) or text_stats(s), progress=False)
    assert calls == ["f"] and frame["words"].tolist() == [2, 3, 1]
    pip.to_excel("words", tmp_path / "words.xlsx")
    assert (tmp_path / "words.xlsx").stat().st_size > 0


@pytest.mark.browser
def test_a_notebook_run_shows_live_on_the_page(page, live_server, isolated_home, tmp_path):  # noqa: F811
    with gated_run(tmp_path, isolated_home) as (open_the_rest, reader):
        wait_until(lambda: reader.get("live", "run", {}).get("status") == "running"
                   and len(reader.step_names("live", "item")) >= 4, what="the notebook's run")
        page.goto(live_server + "/list-to-sheet?key=live")
        page.locator("#run-elsewhere").wait_for()
        assert "notebook" in page.inner_text("#run-elsewhere")
        page.wait_for_function("document.querySelector('#progress progress').value >= 3", timeout=30_000)
        open_the_rest()
        page.locator("#step-run.done").wait_for(timeout=60_000)  # polled until the results card
        assert "8 of 8 items done" in page.inner_text("#step-run")
