"""pip.scrape against the local test site, in the system's Chromium: what the browser sees
(JavaScript pages), the files, the cache, redirects, error statuses, a non-UTF-8 page, pages
that hang, pages in parallel, and the message when there is no Chromium."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from pipulate.scrape import HOW_TO_GET_CHROMIUM

from .conftest import REPO
from .site_server import TestSite

pytestmark = pytest.mark.browser


@pytest.fixture
def site():
    with TestSite() as s:
        yield s


def test_the_browser_sees_what_javascript_made(store, site):
    url = site.url("/js1.html")
    assert "<title>Loading...</title>" in httpx.get(url).text  # a plain fetch does not run the script
    got = store.scrape(url)
    assert got["title"] == "Rendered 1" and got["h1"] == "Made by script 1"
    assert got["status"] == 200 and got["final_url"] == url and got["words"] == 9
    dom = open(got["dom_path"], encoding="utf-8").read()
    source = open(got["source_path"]).read()
    assert '<h1 id="h">Made by script 1</h1>' in dom and '<h1 id="h"></h1>' in source
    assert open(got["screenshot_path"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    tree = json.load(open(got["accessibility_path"]))
    assert any((n.get("name") or {}).get("value") == "Made by script 1" for n in tree)
    assert got["dom_path"].startswith(str(store.home / "scrape"))


def test_fields_of_a_plain_page(store, site):
    got = store.scrape(site.url("/p3.html"))
    assert got["title"] == "Page 3" and got["description"] == "Description of page 3"
    assert got["canonical"] == site.url("/p3.html") and got["headings"] == 1
    assert (got["links_internal"], got["links_external"]) == (1, 1)


def test_a_second_call_is_served_from_the_cache_until_refresh(store, site):
    url = site.url("/p1.html")
    first = store.scrape(url)
    hits = len(site.hits)
    again = store.scrape(url)
    assert len(site.hits) == hits and again == first  # the site was not touched
    store.scrape(url, refresh=True)
    assert len(site.hits) > hits


def test_redirects_statuses_and_encodings(store, site):
    got = store.scrape(site.url("/redirect/3"))
    assert got["final_url"] == site.url("/p0.html") and got["redirects"] == 3 and got["title"] == "Page 0"
    assert store.scrape(site.url("/status/404"))["status"] == 404
    failed = store.scrape(site.url("/status/500"))
    assert failed["status"] == 500 and failed["title"] == "Error 500"
    latin = store.scrape(site.url("/latin1.html"))
    assert latin["title"] == "Café crème"
    assert "Déjà vu" in open(latin["dom_path"], encoding="utf-8").read()
    assert "Déjà vu" in open(latin["source_path"], encoding="utf-8").read()  # Chromium hands it over as UTF-8


def test_a_hanging_page_times_out_and_the_others_in_the_run_finish(store, site):
    urls = [site.url("/p1.html"), site.url("/hang"), site.url("/js2.html"), site.url("/slow1.html?ms=200")]
    started = time.monotonic()
    frame = store.map("with-a-hang", urls, lambda u: store.scrape(u, timeout=3), workers=4, progress=False)
    assert time.monotonic() - started < 60
    assert frame["error"].tolist()[1] == f"TimeoutError: {urls[1]}: the page did not load within 3 s"
    assert frame["title"].tolist()[0::2] == ["Page 1", "Rendered 2"] and frame.loc[3, "title"] == "Slow 1"
    assert not list((store.home / "scrape").glob("*/result.json.tmp"))


def test_pages_render_in_parallel_in_one_browser(store, site):
    from pipulate import scrape as module

    # Each page answers only once all six are requested at the same time (or after 60 s).
    urls = [site.url(f"/together{i}.html?n=6") for i in range(6)]
    frame = store.map("parallel", urls, store.scrape, workers=6, progress=False)
    assert frame["title"].tolist() == [f"Together {i}" for i in range(6)]
    assert site.max_together == 6
    assert len(module._browsers) == 1


def test_bad_urls_are_refused(store):
    with pytest.raises(ValueError, match="only http and https"):
        store.scrape("file:///etc/passwd")
    with pytest.raises(ValueError, match="non-empty"):
        store.scrape("")


@pytest.mark.parametrize("env", [{"PIPULATE_CHROMIUM": "/nonexistent/chromium"}, {"PATH": "/nonexistent"}])
def test_without_chromium_the_error_says_how_to_get_one(isolated_home, env):
    code = ("from pipulate import pip\n"
            "try:\n    pip.scrape('http://127.0.0.1:9/')\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    base = {k: v for k, v in os.environ.items() if k != "PIPULATE_CHROMIUM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**base, "PIPULATE_HOME": str(isolated_home), **env}, timeout=120).stdout
    assert out.startswith("ChromiumNotFound") and HOW_TO_GET_CHROMIUM in out
    assert "apt-get install chromium" in out
