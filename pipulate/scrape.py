"""``pip.scrape``: a real headless Chromium renders a page; fields and files, cached per URL.

One browser per process, shared by every call (from any thread): Playwright's
asyncio API runs on a thread of its own with its own event loop, so a call works
from a Jupyter cell (whose thread already runs a loop, where Playwright's sync API
refuses to start) as from a script or from ``pip.map``'s worker threads. Each page
gets its own browser context (no cookies or cache shared), and pages render in
parallel. The browser is the system's Chromium (``PIPULATE_CHROMIUM``, else
``chromium`` on PATH): Playwright's own browser download is never used.

Files, under the data folder: ``scrape/<hash of the URL>/`` holds ``dom.html`` (the
rendered DOM), ``source.html`` (the HTML the server sent, before any
script ran; Chromium hands text over as UTF-8), ``screenshot.png``,
``accessibility.json`` (Chromium's accessibility tree) and ``result.json``, written
last: a folder without it is an unfinished scrape and is done again.
"""
from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

ENV_VAR = "PIPULATE_CHROMIUM"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage"]
DEFAULT_TIMEOUT = 30.0
MAX_PAGES = 8  # pages rendering at once in one browser; more wait their turn
SETTLE_MS = 1500  # after "load", how long to wait for the network to go quiet (scripts fetching data)
FILES = {"dom": "dom.html", "source": "source.html", "screenshot": "screenshot.png",
         "accessibility": "accessibility.json"}

HOW_TO_GET_CHROMIUM = (
    "pip.scrape needs Chromium. Install it (Debian/Ubuntu: `sudo apt-get install chromium`; "
    "Nix: `nix develop` with pkgs.chromium; macOS: install Chromium or Google Chrome), or set "
    f"{ENV_VAR} to the path of a Chromium or Chrome executable. Playwright's own browser "
    "download (`playwright install`) is not used.")

FIELDS_JS = """() => {
  const meta = (n) => { const m = document.querySelector(`meta[name="${n}" i]`); return m ? m.content : null; };
  const canon = document.querySelector('link[rel~="canonical" i]');
  const texts = (sel) => [...document.querySelectorAll(sel)].map(e => e.innerText.trim()).filter(Boolean);
  const links = [...document.querySelectorAll('a[href]')].filter(a => /^https?:$/.test(a.protocol));
  const internal = links.filter(a => a.host === location.host).length;
  const body = document.body ? document.body.innerText : '';
  return {title: document.title, description: meta('description'), canonical: canon ? canon.href : null,
          h1: texts('h1'), h2: texts('h2'), headings: document.querySelectorAll('h1,h2,h3,h4,h5,h6').length,
          links_internal: internal, links_external: links.length - internal,
          words: (body.match(/\\S+/g) || []).length};
}"""


class ChromiumNotFound(RuntimeError):
    """No Chromium to drive."""


class ScrapeError(RuntimeError):
    """The page could not be rendered (it did not load, the browser failed...)."""


def chromium_path() -> str:
    """The Chromium to drive: ``PIPULATE_CHROMIUM``, else the first on PATH."""
    named = os.environ.get(ENV_VAR, "").strip()
    if named:
        found = shutil.which(named)
        if found is None:
            raise ChromiumNotFound(f"{ENV_VAR}={named!r} is not an executable file. {HOW_TO_GET_CHROMIUM}")
        return found
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumNotFound(f"no Chromium on PATH (looked for {', '.join(CANDIDATES)}). {HOW_TO_GET_CHROMIUM}")


def cache_folder(home: Path, url: str) -> Path:
    return Path(home) / "scrape" / hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def check_url(url) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"url must be a non-empty string, got {url!r}")
    url = url.strip()
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"only http and https URLs can be scraped, got {url[:200]!r}")
    return url


# --- the shared browser ----------------------------------------------------------------------

class Browser:
    """One Chromium and the event-loop thread that drives it."""

    def __init__(self, executable: str, max_pages: int = MAX_PAGES):
        self.executable = executable
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="pip.scrape-browser")
        self.thread.start()
        self.max_pages = max_pages
        self._pw = self._browser = self._slots = None
        try:
            self.call(self._start(), timeout=60)
        except BaseException:
            self.close()
            raise

    async def _start(self):
        from playwright.async_api import async_playwright

        self._slots = asyncio.Semaphore(self.max_pages)
        self._pw = await async_playwright().start()
        try:
            self._browser = await self._pw.chromium.launch(executable_path=self.executable, args=LAUNCH_ARGS,
                                                           headless=True)
        except Exception as exc:
            raise ScrapeError(f"Chromium at {self.executable} did not start: {str(exc).splitlines()[0]}. "
                              f"{HOW_TO_GET_CHROMIUM}") from None

    def call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def alive(self) -> bool:
        return self._browser is not None and self._browser.is_connected() and self.thread.is_alive()

    def render(self, url: str, folder: Path, timeout: float, screenshot: bool) -> dict:
        # The page's own timeout fires first; this one only guards against a wedged browser.
        return self.call(self._render(url, folder, timeout, screenshot), timeout=timeout * 2 + 30)

    async def _render(self, url: str, folder: Path, timeout: float, screenshot: bool) -> dict:
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        async with self._slots:
            context = await self._browser.new_context()
            try:
                page = await context.new_page()
                page.set_default_timeout(timeout * 1000)
                try:
                    response = await page.goto(url, wait_until="load", timeout=timeout * 1000)
                except PlaywrightTimeout:
                    raise TimeoutError(f"{url}: the page did not load within {timeout:g} s") from None
                except PlaywrightError as exc:
                    raise ScrapeError(f"{url}: {str(exc).splitlines()[0]}") from None
                try:  # scripts that fetch their content after load: give them a moment
                    await page.wait_for_load_state("networkidle", timeout=min(SETTLE_MS, timeout * 1000))
                except PlaywrightTimeout:
                    pass
                fields = await page.evaluate(FIELDS_JS)
                source = b""
                redirects = 0
                if response is not None:
                    try:
                        source = await response.body()
                    except PlaywrightError:
                        source = b""  # no body (some redirects, downloads)
                    request = response.request.redirected_from
                    while request is not None:
                        redirects += 1
                        request = request.redirected_from
                folder.mkdir(parents=True, exist_ok=True)
                (folder / FILES["dom"]).write_text(await page.content(), encoding="utf-8")
                (folder / FILES["source"]).write_bytes(source)
                if screenshot:
                    await page.screenshot(path=str(folder / FILES["screenshot"]))
                cdp = await context.new_cdp_session(page)
                tree = await cdp.send("Accessibility.getFullAXTree")
                (folder / FILES["accessibility"]).write_text(json.dumps(tree.get("nodes", [])), encoding="utf-8")
                return {"url": url, "final_url": page.url, "status": response.status if response else None,
                        "redirects": redirects, **fields, "h1": " | ".join(fields["h1"])[:1000],
                        "h2": " | ".join(fields["h2"])[:1000]}
            finally:
                await context.close()

    def close(self) -> None:
        async def stop():
            if self._browser is not None:
                await self._browser.close()
            if self._pw is not None:
                await self._pw.stop()

        if self.thread.is_alive():
            try:
                self.call(stop(), timeout=30)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


_lock = threading.Lock()
_browsers: dict[str, Browser] = {}


def shared_browser() -> Browser:
    """This process's browser for the Chromium in use, started on first use (or again after a crash)."""
    executable = chromium_path()
    with _lock:
        browser = _browsers.get(executable)
        if browser is None or not browser.alive:
            if browser is not None:
                browser.close()
            browser = _browsers[executable] = Browser(executable)
        return browser


@atexit.register
def close_browsers() -> None:
    with _lock:
        for browser in _browsers.values():
            browser.close()
        _browsers.clear()


# --- the call ------------------------------------------------------------------------------------

def with_paths(result: dict, folder: Path) -> dict:
    out = dict(result)
    for name, file in FILES.items():
        path = folder / file
        out[f"{name}_path"] = str(path) if path.exists() else None
    return out


def scrape(url: str, refresh: bool = False, *, home=None, timeout: float = DEFAULT_TIMEOUT,
           screenshot: bool = True) -> dict:
    """Render ``url`` in headless Chromium; return its fields and the paths of its files.

    A second call for the same URL reads the cache (nothing is fetched) until ``refresh=True``.
    A page that does not load within ``timeout`` seconds raises ``TimeoutError``.
    """
    from .home import resolve_home

    url = check_url(url)
    folder = cache_folder(resolve_home(home), url)
    done = folder / "result.json"
    if not refresh and done.exists():
        try:
            return with_paths(json.loads(done.read_text(encoding="utf-8")), folder)
        except (OSError, ValueError):
            pass  # damaged: scrape again
    if done.exists():
        done.unlink()
    result = shared_browser().render(url, folder, float(timeout), screenshot)
    result["scraped_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, done)
    return with_paths(result, folder)
