"""Step-by-step workflows a user can leave and resume: one class, routes made for each app.

A workflow is a list of ``Step``s. Its state is a job in the store: the key the
user types is the job's name, each step's value is ``pip.set(key, step.id, value)``.
So a notebook sees (and can write) exactly what the browser does, and the
other way round.

Routes, under ``/{APP_NAME}`` (the key travels in the query string or the form,
never in a server-wide variable, so two tabs on two keys do not interfere)::

    GET  /hello?key=K               landing page; with a key, the job resumed where it stopped
    POST /hello/start               key -> the chain for that key (HX-Push-Url: /hello?key=K)
    GET  /hello/chain?key=K         the chain alone: completed steps as cards, next step as a form
    GET  /hello/step/{step}?key=K   one step: its card if done, its form if it is the next one
    POST /hello/step/{step}         key, value -> validate, transform, pip.set, the chain again
    POST /hello/revert/{step}       key -> drop that step and every later one
    POST /hello/finalize            key -> lock the job (step "finalized" = True)
    POST /hello/unfinalize          key -> unlock it

Finalizing writes one extra step, ``finalized`` (value ``True``), after the
user's steps; ``pip.read(key)`` in a notebook shows it last. A workflow may not
use that name for a step of its own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import quote

from fasthtml.common import (H1, A, Article, Button, Datalist, Div, Form, Header, HttpHeader, Input, Label,
                             Option, P, Select, Small, Span, Strong, Textarea)
from starlette.responses import RedirectResponse

from .components import clear_flash, page
from .render import Damaged, value_view
from .state import check_key, fail, job_app, keys_for_app, safe_read
from .urls import app_url

FINALIZED = "finalized"
INPUT_KINDS = ("text", "textarea", "number", "select", "custom")


@dataclass
class Step:
    """One step of a workflow.

    Args:
        id: the step's name in the store (``pip.get(key, id)``).
        label: what the user reads.
        kind: ``text``, ``textarea``, ``number``, ``select``, or ``custom`` (the
            workflow renders and saves it itself, e.g. a long-running task).
        help: a line under the field.
        placeholder: the empty field's hint.
        options: choices for ``select``: a list of strings or of (value, label), or a
            function returning one.
        validate: ``validate(text, state) -> message or None``; a message refuses the input.
        transform: ``transform(text, state) -> value`` stored instead of the text.
        suggest: ``suggest(state) -> text`` prefilled from earlier steps.
        show: ``show(value) -> FT`` for the step's card (default: a bounded view of the value).
        max_chars: longest input accepted.
    """

    id: str
    label: str
    kind: str = "text"
    help: str = ""
    placeholder: str = ""
    options: Sequence | Callable[[], Sequence] = ()
    validate: Callable[[str, dict], str | None] | None = None
    transform: Callable[[str, dict], Any] | None = None
    suggest: Callable[[dict], str] | None = None
    show: Callable[[Any], Any] | None = None
    max_chars: int = 10_000

    def __post_init__(self):
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"step {self.id!r}: kind must be one of {INPUT_KINDS}, got {self.kind!r}")
        if self.id == FINALIZED:
            raise ValueError(f"{FINALIZED!r} is reserved for the finalize lock; name the step otherwise")

    def choices(self) -> list[tuple[str, str]]:
        opts = self.options() if callable(self.options) else self.options
        return [(o, o) if isinstance(o, str) else (str(o[0]), str(o[1])) for o in opts]


class Workflow:
    """Subclass with ``APP_NAME``, ``TITLE`` and ``steps``; override the ``render_*`` hooks as needed.

    ``Workflow(pip).register(app)`` adds the routes listed in the module docstring.
    """

    APP_NAME: str = ""
    TITLE: str = ""
    DESCRIPTION: str = ""
    KEY_PLACEHOLDER: str = "a name for this job"
    steps: list[Step] = []

    def __init__(self, pip):
        if not self.APP_NAME or not self.steps:
            raise TypeError(f"{type(self).__name__} needs APP_NAME and steps")
        ids = [s.id for s in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{type(self).__name__}: step ids must be unique, got {ids}")
        self.pip = pip
        self.by_id = {s.id: s for s in self.steps}

    # --- urls ---------------------------------------------------------------------------

    @property
    def base(self) -> str:
        """Where this workflow's pages are, as the browser asks for them (under the root path)."""
        return app_url("/" + self.APP_NAME)

    def url(self, key: str | None = None) -> str:
        return self.base if key is None else f"{self.base}?key={quote(key, safe='')}"

    # --- state --------------------------------------------------------------------------

    def state(self, key: str) -> dict[str, Any]:
        return safe_read(self.pip, key)

    def is_done(self, step: Step, state: dict) -> bool:
        """Whether ``step`` counts as completed (override for steps that finish later)."""
        return step.id in state and not isinstance(state[step.id], Damaged)

    def next_step(self, state: dict) -> Step | None:
        for step in self.steps:
            if not self.is_done(step, state):
                return step
        return None

    def finalized(self, state: dict) -> bool:
        return state.get(FINALIZED) is True

    def check_owner(self, key: str) -> None:
        """A key that another app made is refused, so a workflow never writes into a foreign job."""
        owner = job_app(self.pip, key)
        if owner is not None and owner != self.APP_NAME:
            fail(409, f"The key {key!r} belongs to the {owner!r} app; choose another key.")

    def save(self, key: str, step_id: str, value: Any) -> None:
        self.pip.set(key, step_id, value, app=self.APP_NAME)

    # --- rendering hooks ----------------------------------------------------------------

    def render_value(self, step: Step, value: Any):
        if step.show is not None and not isinstance(value, Damaged):
            return step.show(value)
        return value_view(value)

    def card_actions(self, step: Step, key: str, locked: bool):
        """The buttons under a completed step: Revert, unless the job is finalized."""
        if locked:
            return ""
        return Div(Button("Revert", cls="secondary outline", title=f"Redo {step.label} and every later step",
                          hx_post=f"{self.base}/revert/{step.id}", hx_vals=json.dumps({"key": key}),
                          hx_target="#workflow", hx_swap="outerHTML"), cls="step-actions")

    def render_card(self, step: Step, key: str, state: dict, locked: bool):
        return Article(Header(Strong(step.label), Span(" ✓", cls="muted")),
                       Div(self.render_value(step, state.get(step.id)), cls="value"),
                       self.card_actions(step, key, locked),
                       id=f"step-{step.id}", cls="step-card done")

    def render_input(self, step: Step, state: dict):
        suggested = step.suggest(state) if step.suggest else ""
        current = state.get(step.id)
        text = current if isinstance(current, str) else suggested
        common = dict(name="value", id=f"input-{step.id}", placeholder=step.placeholder or None,
                      aria_label=step.label)
        if step.kind == "textarea":
            return Textarea(text or "", rows=6, **common)
        if step.kind == "select":
            return Select(*[Option(label, value=value, selected=(value == text)) for value, label in step.choices()],
                          **common)
        kind = "number" if step.kind == "number" else "text"
        return Input(type=kind, value=text or "", autofocus=True, required=True, **common)

    def render_form(self, step: Step, key: str, state: dict):
        """The form for the next step; ``custom`` steps call ``render_custom_<id>``."""
        if step.kind == "custom":
            body = getattr(self, f"render_custom_{step.id}")(step, key, state)
        else:
            body = Form(Label(step.label, fr=f"input-{step.id}"), self.render_input(step, state),
                        Small(step.help) if step.help else "",
                        Input(type="hidden", name="key", value=key),
                        Button("Save and continue", type="submit"),
                        hx_post=f"{self.base}/step/{step.id}", hx_target="#workflow", hx_swap="outerHTML")
        return Article(Header(Strong(step.label)), body, id=f"step-{step.id}", cls="step-card next")

    def render_finish(self, key: str, state: dict):
        vals = json.dumps({"key": key})
        if self.finalized(state):
            return Article(P(Span("🔒 Finalized.", cls="finalized-badge"),
                             " The job is locked; unfinalize to change a step."),
                           Button("Unfinalize", cls="secondary", hx_post=f"{self.base}/unfinalize", hx_vals=vals,
                                  hx_target="#workflow", hx_swap="outerHTML"),
                           id="finalize", cls="step-card")
        return Article(P("Every step is done."),
                       Button("Finalize", hx_post=f"{self.base}/finalize", hx_vals=vals,
                              hx_target="#workflow", hx_swap="outerHTML"),
                       id="finalize", cls="step-card")

    def render_chain(self, key: str, state: dict | None = None):
        """Completed steps as cards, then the first incomplete one as a form (or the finish card)."""
        state = self.state(key) if state is None else state
        locked = self.finalized(state)
        parts = [P("Job ", Strong(key), Span(f" · {self.TITLE}", cls="muted"),
                   " · ", A("link to resume", href=self.url(key)))]
        nxt = self.next_step(state)
        for step in self.steps:
            if step is nxt:
                parts.append(self.render_form(step, key, state))
                break
            parts.append(self.render_card(step, key, state, locked))
        if nxt is None:
            parts.append(self.render_finish(key, state))
        return Div(*parts, id="workflow", data_key=key)

    def render_landing(self, key: str | None):
        known = keys_for_app(self.pip, self.APP_NAME, self.steps[0].id)
        listid = f"keys-{self.APP_NAME}"
        start = Form(
            Label("Key", fr="key-input"),
            Div(Input(name="key", id="key-input", list=listid, value=key or "", placeholder=self.KEY_PLACEHOLDER,
                      required=True, maxlength=200, autocomplete="off"),
                Button("Start or resume", type="submit"), role="group"),
            Datalist(*[Option(value=k) for k in known], id=listid),
            Small("Enter a new key to start a job, or an earlier one to resume it."),
            hx_post=f"{self.base}/start", hx_target="#workflow", hx_swap="outerHTML")
        recent = ""
        if known:
            recent = Div(Small("Earlier keys: "), *[Span(A(k, href=self.url(k)), " ") for k in known[:12]])
        chain = self.render_chain(key) if key else Div(id="workflow")
        return page(self.TITLE, H1(self.TITLE), Div(P(self.DESCRIPTION) if self.DESCRIPTION else "", start, recent), chain)

    # --- the operations ---------------------------------------------------------------------

    def step_or_404(self, step_id: str) -> Step:
        step = self.by_id.get(step_id)
        if step is None:
            fail(404, f"{self.TITLE} has no step {step_id!r}; its steps are: "
                      f"{', '.join(s.id for s in self.steps)}.")
        return step

    def unlocked_state(self, key: str) -> dict:
        state = self.state(key)
        if self.finalized(state):
            fail(409, f"The job {key!r} is finalized; unfinalize it to make changes.")
        return state

    def submit(self, key: str, step_id: str, raw: Any) -> dict:
        """Validate, transform and save one step's input; returns the new state."""
        step = self.step_or_404(step_id)
        self.check_owner(key)
        state = self.unlocked_state(key)
        if step.kind == "custom":
            fail(409, f"{step.label} is not filled in with a form; use its buttons.")
        nxt = self.next_step(state)
        if nxt is None or nxt.id != step.id:
            if self.is_done(step, state):
                fail(409, f"{step.label} is already done for {key!r}; revert to it to change it.")
            fail(409, f"{step.label} comes later: finish {nxt.label if nxt else 'the earlier steps'} first.")
        if isinstance(raw, list):
            raw = raw[-1] if raw else ""
        text = raw if isinstance(raw, str) else ""
        if step.kind != "textarea":
            text = text.strip()
        if not text.strip():
            fail(400, f"{step.label}: enter a value.")
        if len(text) > step.max_chars:
            fail(400, f"{step.label}: {len(text)} characters is too long (at most {step.max_chars}).")
        if step.kind == "select" and text not in {v for v, _ in step.choices()}:
            fail(400, f"{step.label}: {text[:60]!r} is not one of the choices.")
        value: Any = text
        if step.kind == "number":
            try:
                value = float(text) if any(c in text for c in ".eE") else int(text)
            except ValueError:
                fail(400, f"{step.label}: {text[:60]!r} is not a number.")
        if step.validate is not None:
            message = step.validate(text, state)
            if message:
                fail(400, f"{step.label}: {message}")
        if step.transform is not None:
            try:
                value = step.transform(text, state)
            except ValueError as exc:
                fail(400, f"{step.label}: {exc}")
        self.save(key, step.id, value)
        state[step.id] = value
        return state

    def revert(self, key: str, step_id: str) -> None:
        """Drop ``step_id`` and every later step of the workflow (and whatever was set after them)."""
        step = self.step_or_404(step_id)
        self.check_owner(key)
        state = self.unlocked_state(key)
        if step.id not in state:
            fail(409, f"{step.label} is not done for {key!r}; nothing to revert.")
        later = [s.id for s in self.steps[self.steps.index(step):]]
        self.pip.clear(key, from_step=step.id)
        # Steps set in another order (e.g. from a notebook) can sit before it: drop them too.
        for sid in later:
            if sid in self.state(key):
                self.pip.clear(key, from_step=sid)

    def finalize(self, key: str) -> None:
        self.check_owner(key)
        state = self.unlocked_state(key)
        nxt = self.next_step(state)
        if nxt is not None:
            fail(409, f"The job {key!r} cannot be finalized yet: {nxt.label} is not done.")
        self.save(key, FINALIZED, True)

    def unfinalize(self, key: str) -> None:
        self.check_owner(key)
        if not self.finalized(self.state(key)):
            fail(409, f"The job {key!r} is not finalized.")
        self.pip.clear(key, from_step=FINALIZED)

    # --- routes ---------------------------------------------------------------------------

    def chain_response(self, key: str, push: bool = False):
        parts = [self.render_chain(key), clear_flash()]
        if push:
            parts.append(HttpHeader("HX-Push-Url", self.url(key)))
        return tuple(parts)

    def register(self, app) -> None:
        """Add this workflow's routes to ``app``; subclasses add theirs with ``register_extra``."""
        wf, base, name = self, "/" + self.APP_NAME, self.APP_NAME  # routes see paths without the root

        def route(path, methods):
            return app.route(base + path, methods=methods, name=f"{name}:{path or 'landing'}")

        @route("", ["get"])
        def landing(key: str = ""):
            if key:
                key = check_key(key)
                wf.check_owner(key)
            return wf.render_landing(key or None)

        @route("/start", ["post"])
        def start(htmx, key: str = ""):
            key = check_key(key)
            wf.check_owner(key)
            if not htmx.request:
                return RedirectResponse(wf.url(key), status_code=303)
            return wf.chain_response(key, push=True)

        @route("/chain", ["get"])
        def chain(key: str = ""):
            return wf.render_chain(check_key(key))

        @route("/step/{step_id}", ["get"])
        def step_view(step_id: str, key: str = ""):
            key = check_key(key)
            step = wf.step_or_404(step_id)
            state = wf.state(key)
            if wf.is_done(step, state):
                return wf.render_card(step, key, state, wf.finalized(state))
            nxt = wf.next_step(state)
            if nxt is not step:
                fail(409, f"{step.label} comes later: finish {nxt.label if nxt else 'the earlier steps'} first.")
            return wf.render_form(step, key, state)

        @route("/step/{step_id}", ["post"])
        def step_submit(step_id: str, key: str = "", value: str = ""):
            key = check_key(key)
            wf.submit(key, step_id, value)
            return wf.chain_response(key)

        @route("/revert/{step_id}", ["post"])
        def revert(step_id: str, key: str = ""):
            key = check_key(key)
            wf.revert(key, step_id)
            return wf.chain_response(key)

        @route("/finalize", ["post"])
        def finalize(key: str = ""):
            key = check_key(key)
            wf.finalize(key)
            return wf.chain_response(key)

        @route("/unfinalize", ["post"])
        def unfinalize(key: str = ""):
            key = check_key(key)
            wf.unfinalize(key)
            return wf.chain_response(key)

        self.register_extra(app, route)

    def register_extra(self, app, route) -> None:
        """Hook for a subclass's own routes; ``route(path, methods)`` prefixes ``/{APP_NAME}``."""
