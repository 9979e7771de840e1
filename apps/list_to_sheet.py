"""List to spreadsheet: paste a list, run a function on each item, download the table.

The job is the one ``pip.map`` makes (``pipulate.mapping``), so a notebook and this
page share it: ``items`` (the list), ``function`` (which per-item function), ``run``
({"status": "running" | "stopped" | "done", ...}) and one step per item
(``item:<the item>``) written as it comes. A run that stops (Stop button, server
restart, crash) resumes where it left off; a run that was going when the server
stopped starts again by itself; a run going on in a notebook shows here live.

Per-item functions live in ``pipulate.item_functions`` (fetch, browser scrape, text
stats), and users add their own in ``<PIPULATE_HOME>/item_functions/*.py``. URL
functions are polite: at most ``PIPULATE_LIST_PER_HOST`` (default 2) requests at once
to one host, ``PIPULATE_LIST_DELAY`` seconds (default 0) apart.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import sys
import threading
from urllib.parse import quote

from starlette.responses import Response

from pipulate.item_functions import FUNCTIONS, load_user_functions, polite
from pipulate.mapping import done_steps, item_step, job_rows, rows_frame, run_is_live, run_map
from pipulate.web import (A, Article, Button, Div, Header, HttpHeader, P, Progress, Small, Span, Step, Strong,
                          Table, Tbody, Td, Th, Thead, Tr, Workflow, check_key, fail, safe_read)

APP_NAME = "list-to-sheet"
TITLE = "List to spreadsheet"
ORDER = 40
DESCRIPTION = ("Paste a list (URLs, names), run a function on each item (fetch, a real browser, your own) "
               "with a live progress bar, download the table as CSV or a styled Excel workbook. "
               "Results are saved item by item; runs from notebooks (pip.map) show here too.")

MAX_ITEMS = 5000
MAX_ITEM_CHARS = 2048
WORKERS = 8          # items processed at once


def politeness() -> tuple[int, float]:
    """(at most this many requests at once per host, seconds between starts), from the environment."""
    try:
        per_host = int(os.environ.get("PIPULATE_LIST_PER_HOST", "2"))
        delay = float(os.environ.get("PIPULATE_LIST_DELAY", "0"))
    except ValueError as exc:
        raise ValueError(f"PIPULATE_LIST_PER_HOST / PIPULATE_LIST_DELAY: {exc}") from None
    if per_host < 1 or delay < 0:
        raise ValueError(f"PIPULATE_LIST_PER_HOST must be >= 1 and PIPULATE_LIST_DELAY >= 0, "
                         f"got {per_host} and {delay}")
    return per_host, delay


# --- the runs -----------------------------------------------------------------------------

def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def done_count(pip, key: str, items: list | None = None) -> int:
    done = set(done_steps(pip, key))
    if items is None:
        return len(done)
    return len({item_step(it) for it in items} & done)


class Runner:
    """The background runs of one server (``pip.map`` in a thread): at most one per key."""

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
        if not isinstance(items, list) or fname not in FUNCTIONS or run_is_live(state.get("run")):
            return False
        fn = FUNCTIONS[fname]
        func = polite(fn.func, *politeness()) if fn.urls else fn.func
        with self.lock:
            run = self.runs.get(key)
            if run is not None and run[0].is_alive():
                return False
            stop = threading.Event()
            # Marked running before the thread starts, so the page shows progress at once.
            self.pip.set(key, "run", {"status": "running", "total": len(set(map(item_step, items))),
                                      "function": fname, "started": _now()}, app=APP_NAME)
            thread = threading.Thread(target=self._work, args=(key, items, fn.name, func, stop),
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
        """Start again every run of this page's functions that was going when the server stopped."""
        resumed = []
        for (key,) in self.pip.db.rows("SELECT job FROM jobs WHERE app = ?", (APP_NAME,)):
            try:
                run = self.pip.get(key, "run")
            except Exception:
                continue
            if isinstance(run, dict) and run.get("status") == "running" and self.start(key):
                resumed.append(key)
        return resumed

    def _work(self, key: str, items: list, name: str, func, stop: threading.Event) -> None:
        try:
            run_map(self.pip, key, items, func, workers=WORKERS, app=APP_NAME, function=name, owner="web",
                    stop=stop, progress=False)
        except Exception as exc:  # the store failed (disk full...): leave a stopped run to resume
            try:
                self.pip.set(key, "run", {"status": "stopped", "total": len(items), "error": repr(exc)[:300],
                                          "function": name}, app=APP_NAME)
            except Exception:
                pass


# --- the table --------------------------------------------------------------------------------

def result_rows(pip, key: str, state: dict) -> list[dict]:
    items = state.get("items") or []
    return [{"#": i, **row} for i, row in enumerate(job_rows(pip, key, items), start=1)]


def result_frame(pip, key: str, state: dict):
    return rows_frame(result_rows(pip, key, state))


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
            # A notebook's list may hold any values, not only lines of text.
            shown = ", ".join(str(v)[:200] for v in value[:5]) + (
                f" … and {len(value) - 5} more" if len(value) > 5 else "")
            return Div(Small(f"{len(value)} items: "), shown)
        if step.id == "function" and value in FUNCTIONS:
            return Span(FUNCTIONS[value].label)
        return super().render_value(step, value)

    def results_view(self, key, state, limit=10):
        rows = result_rows(self.pip, key, state)
        columns = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        table = Table(Thead(Tr(*[Th(c) for c in columns])),
                      Tbody(*[Tr(*[Td("" if r.get(c) is None else str(r[c])[:120]) for c in columns])
                            for r in rows[:limit]]),
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
        errors = sum(1 for r in result_rows(self.pip, key, state) if r.get("error"))
        return Article(Header(Strong(step.label), Span(" ✓", cls="muted")),
                       P(f"{run.get('done', run.get('total'))} of {run.get('total')} items done"
                         f"{f', {errors} with errors' if errors else ''}.", cls="muted"),
                       self.results_view(key, state), self.card_actions(step, key, locked),
                       id="step-run", cls="step-card done")

    def progress_view(self, key, state):
        items = state.get("items") or []
        done = done_count(self.pip, key, items)
        total = len({item_step(it) for it in items})
        run = state.get("run") if isinstance(state.get("run"), dict) else {}
        if self.runner.running(key):
            control = Button("Stop", cls="secondary", hx_post=f"{self.base}/stop", hx_vals=json.dumps({"key": key}),
                             hx_target="#workflow", hx_swap="outerHTML")
        else:  # pip.map in a notebook (or another process): shown live, stopped where it runs
            control = Small(f"Running in {run.get('owner', 'another process')} (process {run.get('pid')}, "
                            f"function {run.get('function')}); stop it there.", id="run-elsewhere")
        return Div(Progress(value=str(done), max=str(max(total, 1))),
                   P(Strong(f"{done} / {total}"), " items done; results are saved as they come."),
                   control, self.results_view(key, state, limit=5) if done else "",
                   hx_get=f"{self.base}/progress?key={quote(key, safe='')}", hx_trigger="every 1s",
                   hx_swap="outerHTML", id="progress")

    def render_custom_run(self, step, key, state):
        run = state.get("run")
        items = state.get("items") or []
        vals = json.dumps({"key": key})
        if self.running(key, state):
            return self.progress_view(key, state)
        done = done_count(self.pip, key, items)
        label = "Resume" if done else "Start"
        note = (f"{done} of {len(items)} items are done; resume to do the rest." if done
                else f"{len(items)} items are ready.")
        if isinstance(run, dict) and run.get("error"):
            note += f" The last run stopped: {run['error']}"
        return Div(P(note), Button(label, id="run-button", hx_post=f"{self.base}/run", hx_vals=vals,
                                   hx_target="#workflow", hx_swap="outerHTML"),
                   self.results_view(key, state, limit=5) if done else "")

    def running(self, key, state) -> bool:
        """A run of this server's, or a live one of another process (a notebook's pip.map)."""
        return self.runner.running(key) or run_is_live(state.get("run"))

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
            if run_is_live(state.get("run")) and not wf.runner.running(key):
                fail(409, f"The job {key!r} is being run by process {state['run'].get('pid')}; wait for it.")
            if state.get("function") not in FUNCTIONS:
                fail(409, f"The function {state.get('function')!r} is not one of this page's; run it where it "
                          "is defined (pip.map in a notebook), or revert the Function step.")
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
            if wf.running(key, state):
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
            frame = result_frame(wf.pip, key, state)
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
    for problem in load_user_functions(pip.home):
        print(f"list-to-sheet: a user item function did not load: {problem}", file=sys.stderr)
    workflow.runner.resume_all()
