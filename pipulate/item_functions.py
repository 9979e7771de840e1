"""Per-item functions for lists: the same ones in a notebook (``pip.map``) and on the web
page List to spreadsheet, and the place where users add their own.

Built in: ``fetch_title`` (httpx: status, title, final URL), ``text_stats`` and
``scrape`` (``pip.scrape`` in the system's Chromium). A user adds one in a ``.py``
file in ``<PIPULATE_HOME>/item_functions/`` (the web app loads them at start)::

    from pipulate.item_functions import item_function

    @item_function("shout", "Upper-case each line")
    def shout(item: str) -> dict:
        return {"shouted": item.upper()}

``polite(func, per_host=2, delay=0.0)`` wraps a function of URLs so that at most
``per_host`` calls run at once against one host, ``delay`` seconds apart.
"""
from __future__ import annotations

import html
import importlib.util
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

FETCH_TIMEOUT = 10.0
FETCH_MAX_BYTES = 512 * 1024
USER_FOLDER = "item_functions"


@dataclass(frozen=True)
class ItemFunction:
    name: str
    label: str
    func: Callable[[str], dict]
    urls: bool = False  # its items are URLs: per-host politeness applies


FUNCTIONS: dict[str, ItemFunction] = {}


def item_function(name: str, label: str, *, urls: bool = False):
    """Register ``func(item) -> dict of columns`` under ``name`` (shown as ``label``)."""
    def deco(func):
        FUNCTIONS[name] = ItemFunction(name, label, func, urls)
        return func
    return deco


def load_user_functions(home) -> list[str]:
    """Import every ``.py`` file of ``<home>/item_functions/``; returns the problems (one line each)."""
    problems = []
    folder = Path(home) / USER_FOLDER
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        name = f"pipulate_user_item_functions.{path.stem}"
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except Exception as exc:  # one broken file must not take the web app down
            sys.modules.pop(name, None)
            problems.append(f"{path}: {type(exc).__name__}: {exc}")
    return problems


# --- politeness ----------------------------------------------------------------------------------

class polite:  # noqa: N801 - used like a function: polite(pip.scrape, per_host=2)
    """``func`` of URLs, at most ``per_host`` calls at once per host, starts ``delay`` s apart."""

    def __init__(self, func: Callable, per_host: int = 2, delay: float = 0.0):
        if per_host < 1 or delay < 0:
            raise ValueError(f"per_host must be at least 1 and delay at least 0, got {per_host}, {delay}")
        self.func, self.per_host, self.delay = func, per_host, delay
        self.__name__ = getattr(func, "__name__", "polite")
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)
        self._lock = threading.Lock()
        self._hosts: dict[str, tuple[threading.Semaphore, list[float]]] = {}

    def _host(self, url) -> tuple[threading.Semaphore, list[float]]:
        host = (urlsplit(str(url)).hostname or "") if isinstance(url, str) else ""
        with self._lock:
            if host not in self._hosts:
                self._hosts[host] = (threading.Semaphore(self.per_host), [0.0])
            return self._hosts[host]

    def __call__(self, url):
        slots, last = self._host(url)
        with slots:
            if self.delay:
                with self._lock:
                    start = max(time.monotonic(), last[0] + self.delay)
                    last[0] = start
                time.sleep(max(0.0, start - time.monotonic()))
            return self.func(url)


# --- the built-in functions ------------------------------------------------------------------

_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_CHARSET_RE = re.compile(rb"<meta[^>]+charset=[\"']?([\w-]+)", re.I)
_client_lock = threading.Lock()
_shared_client = None


def shared_client():
    """One connection pool for every fetch of this process (httpx.Client is thread-safe)."""
    import httpx

    global _shared_client
    with _client_lock:
        if _shared_client is None:
            _shared_client = httpx.Client(follow_redirects=True, timeout=FETCH_TIMEOUT,
                                          headers={"User-Agent": "Pipulate-workstation/0.1 (list to spreadsheet)"})
        return _shared_client


@item_function("fetch_title", "Fetch each URL: HTTP status and page title", urls=True)
def fetch_title(item: str) -> dict:
    import httpx

    url = item.strip()
    if "://" not in url:
        url = "https://" + url
    if not url.lower().startswith(("http://", "https://")):
        return {"status": None, "title": "", "final_url": url, "error": "only http and https URLs can be fetched"}
    try:
        with shared_client().stream("GET", url) as resp:
            body = b""
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) >= FETCH_MAX_BYTES:
                    break
            status, final = resp.status_code, str(resp.url)
            encoding = resp.charset_encoding
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return {"status": None, "title": "", "final_url": url, "error": f"{type(exc).__name__}: {exc}"[:300]}
    title = ""
    match = _TITLE_RE.search(body)
    if match:
        if not encoding:
            meta = _CHARSET_RE.search(body[:4096])
            encoding = meta.group(1).decode("ascii", "replace") if meta else "utf-8"
        try:
            text = match.group(1).decode(encoding, "replace")
        except LookupError:
            text = match.group(1).decode("utf-8", "replace")
        title = " ".join(html.unescape(text).split())[:300]
    return {"status": status, "title": title, "final_url": final, "error": ""}


@item_function("text_stats", "Count the characters and words of each line")
def text_stats(item: str) -> dict:
    return {"characters": len(item), "words": len(item.split())}


@item_function("scrape", "Render each URL in the browser (Chromium): title, headings, links, files", urls=True)
def scrape(item: str) -> dict:
    from .scrape import scrape as render  # the data folder of this process: the server's own

    url = item.strip()
    return render(url if "://" in url else "https://" + url)
