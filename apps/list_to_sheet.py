"""List to spreadsheet: paste a list, run a function on each item, download the table.

Steps of job KEY:  ``items`` (the list), ``function`` (which per-item function),
``run`` ({"status": "running" | "stopped" | "done", ...}); each item's result is
its own step, ``item-{i}`` = {"item": ..., <the function's columns>}, written as
it comes. So a run that stops (Stop button, server restart, crash) resumes
where it left off: the items already in the store are not done again, and a run
that was going when the server stopped starts again by itself.

Adding a function: decorate it with ``@item_function(name, label)``; it takes
one item (a string) and returns a dict of columns (the same keys every time).
Exceptions become an ``error`` column, so one bad item never stops the run.
"""
from __future__ import annotations

import datetime as dt
import html
import io
import json
import re
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

import httpx
from starlette.responses import Response

from pipulate.web import (A, Article, Button, Div, Header, HttpHeader, P, Progress, Small, Span, Step, Strong,
                          Table, Tbody, Td, Th, Thead, Tr, Workflow, check_key, fail, safe_read)

APP_NAME = "list-to-sheet"
TITLE = "List to spreadsheet"
ORDER = 40
DESCRIPTION = ("Paste a list (URLs, names), run a function on each item with a live progress bar, "
               "download the table as CSV or Excel. Results are saved item by item.")

MAX_ITEMS = 5000
MAX_ITEM_CHARS = 2048
WORKERS = 8          # items processed at once
FETCH_TIMEOUT = 10.0
FETCH_MAX_BYTES = 512 * 1024


# --- per-item functions ---------------------------------------------------------------

@dataclass(frozen=True)
class ItemFunction:
    name: str
    label: str
    func: Callable[[str], dict]


FUNCTIONS: dict[str, ItemFunction] = {}


def item_function(name: str, label: str):
    """Register ``func(item) -> dict of columns`` under ``name`` (shown as ``label``)."""
    def deco(func):
        FUNCTIONS[name] = ItemFunction(name, label, func)
        return func
    return deco


_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_CHARSET_RE = re.compile(rb"<meta[^>]+charset=[\"']?([\w-]+)", re.I)


def _client() -> httpx.Client:
    return httpx.Client(follow_redirects=True, timeout=FETCH_TIMEOUT,
                        headers={"User-Agent": "Pipulate-workstation/0.1 (list to spreadsheet)"})


_client_lock = threading.Lock()
_shared_client: httpx.Client | None = None


def shared_client() -> httpx.Client:
    """One connection pool for every fetch of this process (httpx.Client is thread-safe)."""
    global _shared_client
    with _client_lock:
        if _shared_client is None:
            _shared_client = _client()
        return _shared_client


@item_function("fetch_title", "Fetch each URL: HTTP status and page title")
def fetch_title(item: str) -> dict:
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


# --- the runs -----------------------------------------------------------------------------

def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def item_step(i: int) -> str:
    return f"item-{i}"


def done_count(pip, key: str) -> int:
    return pip.db.rows("SELECT count(*) FROM steps WHERE job = ? AND step LIKE 'item-%'", (key,))[0][0]


class Runner:
    """The background runs of one server: at most one thread per key."""

    def __init__(self, pip):
        self.pip = pip
        self.lock = threading.Lock()
        self.runs: dict[str, tuple[threading.Thread, threading.Event]] = {}

    def running(self, key: str) -> bool:
        with self.lock:
            run = self.runs.get(key)
            return run is not None and run[0].is_alive()

    def start(self, key: str) -> bool:
        state = safe_read(self.pip, key)
        items, fname = state.get("items"), state.get("function")
        if not isinstance(items, list) or fname not in FUNCTIONS:
            return False
        with self.lock:
            run = self.runs.get(key)
            if run is not None and run[0].is_alive():
                return False
            stop = threading.Event()
            self.pip.set(key, "run", {"status": "running", "total": len(items), "function": fname,
                                      "started": _now()}, app=APP_NAME)
            thread = threading.Thread(target=self._work, args=(key, items, FUNCTIONS[fname], stop),
                                      name=f"list-to-sheet:{key}", daemon=True)
            self.runs[key] = (thread, stop)
            thread.start()
        return True

    def stop(self, key: str, wait_seconds: float = 30.0) -> None:
        with self.lock:
            run = self.runs.get(key)
        if run is not None:
            run[1].set()
            run[0].join(wait_seconds)

    def resume_all(self) -> list[str]:
        """Start again every run that was going when the server stopped."""
        resumed = []
        for (key,) in self.pip.db.rows("SELECT job FROM jobs WHERE app = ?", (APP_NAME,)):
            try:
                run = self.pip.get(key, "run")
            except Exception:
                continue
            if isinstance(run, dict) and run.get("status") == "running" and self.start(key):
                resumed.append(key)
        return resumed

    def _still_wanted(self, key: str) -> bool:
        # The job may have been reverted or deleted meanwhile: then write nothing more.
        run = self.pip.get(key, "run")
        return isinstance(run, dict) and run.get("status") == "running"

    def _work(self, key: str, items: list, fn: ItemFunction, stop: threading.Event) -> None:
        have = set(self.pip.db.rows("SELECT step FROM steps WHERE job = ? AND step LIKE 'item-%'", (key,)))
        todo = [i for i in range(len(items)) if (item_step(i),) not in have]
        errors = 0
        try:
            with ThreadPoolExecutor(WORKERS, thread_name_prefix=f"item:{key}") as pool:
                pending = {}
                queue = iter(todo)
                while True:
                    while len(pending) < WORKERS and not stop.is_set():
                        i = next(queue, None)
                        if i is None:
                            break
                        pending[pool.submit(self._one, fn, items[i])] = i
                    if not pending:
                        break
                    finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        i = pending.pop(fut)
                        row = fut.result()
                        errors += bool(row.get("error"))
                        if not self._still_wanted(key):
                            stop.set()
                            continue
                        self.pip.set(key, item_step(i), row, app=APP_NAME)
            if not self._still_wanted(key):
                return
            done = done_count(self.pip, key)
            status = "done" if done >= len(items) else "stopped"
            self.pip.set(key, "run", {"status": status, "total": len(items), "done": done,
                                      "function": fn.name, "finished": _now()}, app=APP_NAME)
        except Exception as exc:  # the store failed (disk full...): leave a stopped run to resume
            try:
                self.pip.set(key, "run", {"status": "stopped", "total": len(items), "error": repr(exc)[:300],
                                          "function": fn.name}, app=APP_NAME)
            except Exception:
                pass

    @staticmethod
    def _one(fn: ItemFunction, item: str) -> dict:
        try:
            result = fn.func(item)
            if not isinstance(result, dict):
                result = {"result": result}
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        return {"item": item, **result}


# --- the table --------------------------------------------------------------------------------

def result_rows(state: dict) -> list[dict]:
    items = state.get("items") or []
    rows = []
    for i, item in enumerate(items):
        got = state.get(item_step(i))
        row = {"#": i + 1, "item": item}
        if isinstance(got, dict):
            row.update({k: v for k, v in got.items() if k != "item"})
        rows.append(row)
    return rows


def result_frame(state: dict):
    import pandas as pd

    rows = result_rows(state)
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    frame = pd.DataFrame(rows, columns=columns or ["#", "item"])
    for col in frame.columns:  # whole numbers with gaps (a status where a fetch failed) stay whole
        values = [r[col] for r in rows if r.get(col) is not None]
        if values and all(type(v) is int for v in values) and frame[col].dtype != "int64":
            frame[col] = frame[col].astype("Int64")
    return frame


def safe_filename(key: str) -> str:
    return re.sub(r"[^\w.-]+", "_", key, flags=re.ASCII).strip("._") or "table"


# --- the workflow -----------------------------------------------------------------------------

def parse_list(text: str, state: dict) -> list[str]:
    items = [line.strip() for line in text.splitlines() if line.strip()]
    if not items:
        raise ValueError("paste at least one item, one per line.")
    if len(items) > MAX_ITEMS:
        raise ValueError(f"{len(items)} items is too many (at most {MAX_ITEMS}).")
    long = next((x for x in items if len(x) > MAX_ITEM_CHARS), None)
    if long is not None:
        raise ValueError(f"an item is {len(long)} characters long (at most {MAX_ITEM_CHARS}).")
    return items


class ListToSheet(Workflow):
    APP_NAME = APP_NAME
    TITLE = TITLE
    DESCRIPTION = DESCRIPTION
    KEY_PLACEHOLDER = "e.g. my-urls"
    steps = [
        Step("items", "List", kind="textarea", help=f"One item per line (at most {MAX_ITEMS}).",
             placeholder="https://example.com/\nhttps://example.org/", transform=parse_list,
             max_chars=MAX_ITEMS * (MAX_ITEM_CHARS + 2)),
        Step("function", "Function", kind="select",
             options=lambda: [(f.name, f.label) for f in FUNCTIONS.values()]),
        Step("run", "Run", kind="custom"),
    ]

    def __init__(self, pip):
        super().__init__(pip)
        self.runner = Runner(pip)

    def is_done(self, step, state):
        if step.id == "run":
            run = state.get("run")
            return isinstance(run, dict) and run.get("status") == "done"
        return super().is_done(step, state)

    def render_value(self, step, value):
        if step.id == "items" and isinstance(value, list):
            shown = ", ".join(value[:5]) + (f" … and {len(value) - 5} more" if len(value) > 5 else "")
            return Div(Small(f"{len(value)} items: "), shown)
        if step.id == "function" and value in FUNCTIONS:
            return Span(FUNCTIONS[value].label)
        return super().render_value(step, value)

    def results_view(self, key, state, limit=10):
        rows = result_rows(state)
        columns = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        table = Table(Thead(Tr(*[Th(c) for c in columns])),
                      Tbody(*[Tr(*[Td(str(r.get(c, ""))[:120]) for c in columns]) for r in rows[:limit]]),
                      cls="compact")
        more = Small(f"First {limit} of {len(rows)} rows.") if len(rows) > limit else ""
        q = quote(key, safe="")
        links = Div(A("Download CSV", href=f"{self.base}/download?key={q}&format=csv", role="button", id="download-csv"),
                    A("Download Excel (.xlsx)", href=f"{self.base}/download?key={q}&format=xlsx", role="button",
                      cls="secondary", id="download-xlsx"), cls="step-actions")
        return Div(Div(table, cls="value-box"), more, links, id="results")

    def render_card(self, step, key, state, locked):
        if step.id != "run":
            return super().render_card(step, key, state, locked)
        run = state.get("run") or {}
        errors = sum(1 for r in result_rows(state) if r.get("error"))
        return Article(Header(Strong(step.label), Span(" ✓", cls="muted")),
                       P(f"{run.get('done', run.get('total'))} of {run.get('total')} items done"
                         f"{f', {errors} with errors' if errors else ''}.", cls="muted"),
                       self.results_view(key, state), self.card_actions(step, key, locked),
                       id="step-run", cls="step-card done")

    def progress_view(self, key, state):
        items = state.get("items") or []
        done = done_count(self.pip, key)
        return Div(Progress(value=str(done), max=str(max(len(items), 1))),
                   P(Strong(f"{done} / {len(items)}"), " items done; results are saved as they come."),
                   Button("Stop", cls="secondary", hx_post=f"{self.base}/stop", hx_vals=json.dumps({"key": key}),
                          hx_target="#workflow", hx_swap="outerHTML"),
                   hx_get=f"{self.base}/progress?key={quote(key, safe='')}", hx_trigger="every 1s",
                   hx_swap="outerHTML", id="progress")

    def render_custom_run(self, step, key, state):
        run = state.get("run")
        items = state.get("items") or []
        vals = json.dumps({"key": key})
        if self.runner.running(key):
            return self.progress_view(key, state)
        done = done_count(self.pip, key)
        label = "Resume" if done else "Start"
        note = (f"{done} of {len(items)} items are done; resume to do the rest." if done
                else f"{len(items)} items are ready.")
        if isinstance(run, dict) and run.get("error"):
            note += f" The last run stopped: {run['error']}"
        return Div(P(note), Button(label, id="run-button", hx_post=f"{self.base}/run", hx_vals=vals,
                                   hx_target="#workflow", hx_swap="outerHTML"),
                   self.results_view(key, state, limit=5) if done else "")

    def revert(self, key, step_id):
        self.runner.stop(key)  # a run must not write into a job being reverted
        super().revert(key, step_id)

    def register_extra(self, app, route):
        wf = self

        @route("/run", ["post"])
        def run(key: str = ""):
            key = check_key(key)
            wf.check_owner(key)
            state = wf.unlocked_state(key)
            nxt = wf.next_step(state)
            if nxt is None or nxt.id != "run":
                fail(409, "Nothing to run: " + ("the run is done." if nxt is None else f"{nxt.label} comes first."))
            wf.runner.start(key)
            return wf.chain_response(key)

        @route("/stop", ["post"])
        def stop(key: str = ""):
            key = check_key(key)
            wf.runner.stop(key)
            return wf.chain_response(key)

        @route("/progress", ["get"])
        def progress(key: str = ""):
            key = check_key(key)
            state = wf.state(key)
            if wf.runner.running(key):
                return wf.progress_view(key, state)
            # Finished (or stopped): swap the whole chain so the results card shows.
            return (wf.render_chain(key, state), HttpHeader("HX-Retarget", "#workflow"),
                    HttpHeader("HX-Reswap", "outerHTML"))

        @route("/download", ["get"])
        def download(key: str = "", format: str = "csv"):
            key = check_key(key)
            state = wf.state(key)
            if not isinstance(state.get("items"), list):
                fail(404, f"The job {key!r} has no list yet.")
            frame = result_frame(state)
            name = safe_filename(key)
            if format == "csv":
                return Response(frame.to_csv(index=False), media_type="text/csv; charset=utf-8",
                                headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
            if format == "xlsx":
                buf = io.BytesIO()
                wf.pip.to_excel(frame, buf, title=key)
                return Response(buf.getvalue(),
                                media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                                headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'})
            fail(400, f"format must be csv or xlsx, got {format[:20]!r}")


def register(app, rt, pip):
    workflow = ListToSheet(pip)
    workflow.register(app)
    app.state.list_runner = workflow.runner
    # The Jobs page calls these before it reverts or deletes a job: no run writes into it afterwards.
    app.state.job_stoppers = [*getattr(app.state, "job_stoppers", []), workflow.runner.stop]
    workflow.runner.resume_all()
