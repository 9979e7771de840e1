"""Shared page pieces: plain functions returning FT, used by server.py and every app.

Nothing here loads from a CDN: the headers name the vendored files under
``/static`` (htmx and Pico CSS, see ``pipulate/static/VENDORED.txt``).
"""
from __future__ import annotations

import json

from fasthtml.common import (A, Div, Footer, Header, Li, Link, Main, Meta, Nav, P, Script, Strong,
                             Style, Title, Ul)

from .urls import AppUrl, app_url

# htmx 2 swaps only 2xx answers by default. The server answers bad input with a
# 4xx and a message (retargeted to #flash), so 4xx answers are swapped too.
HTMX_CONFIG = {
    "responseHandling": [
        {"code": "204", "swap": False},
        {"code": "[23]..", "swap": True},
        {"code": "4..", "swap": True, "error": False},
        {"code": "...", "swap": True, "error": True},
    ],
    "historyCacheSize": 0,
}

CSS = """
:root { --pico-font-size: 100%; }
#flash:empty { display: none; }
#flash { position: sticky; top: 0; z-index: 10; }
.flash-error { background: #fde8e8; color: #8a1c1c; border-left: 4px solid #c0392b;
               padding: .6rem 1rem; margin-bottom: 1rem; border-radius: 4px; }
.flash-ok { background: #e8f6ea; color: #1c5e2a; border-left: 4px solid #2e8b57;
            padding: .6rem 1rem; margin-bottom: 1rem; border-radius: 4px; }
.step-card { padding: .8rem 1rem; margin-bottom: .8rem; }
.step-card.done .step-actions { margin-top: .4rem; }
.step-card header { margin-bottom: .4rem; padding-bottom: .4rem; }
.value-text { white-space: pre-wrap; word-break: break-word; }
.step-card .value p, .step-card .value pre { margin-bottom: .4rem; }
.step-actions { display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }
.step-actions form { margin: 0; }
.step-actions button { margin: 0; padding: .25rem .7rem; font-size: .85rem; }
.muted { color: var(--pico-muted-color); font-size: .9em; }
.finalized-badge { color: #1c5e2a; font-weight: bold; }
table.compact td, table.compact th { padding: .25rem .5rem; font-size: .85rem; }
.value-box { max-height: 24rem; overflow: auto; }
.nav-apps { flex-wrap: wrap; }
.broken-app { color: #8a1c1c; }
progress { margin-bottom: .3rem; }
svg.chart text { font-size: 10px; fill: currentColor; }
"""


def headers() -> list:
    """The <head> contents every page gets: local htmx, local CSS, htmx config."""
    return [
        Meta(charset="utf-8"),
        Meta(name="viewport", content="width=device-width, initial-scale=1"),
        Meta(name="htmx-config", content=json.dumps(HTMX_CONFIG)),
        Link(rel="stylesheet", href=AppUrl("/static/pico.min.css")),
        Style(CSS),
        Script(src=AppUrl("/static/htmx.min.js")),
    ]


def nav_bar(nav: list[tuple[str, str]], broken: list[tuple[str, str]] = ()) -> Header:
    """The top bar: the workstation's name and one link per app (title, path)."""
    items = [Li(A(title, href=app_url(path))) for title, path in nav]
    items += [Li(A(f"{name} (failed to load)", href=app_url("/"), cls="broken-app")) for name, _ in broken]
    return Header(Nav(Ul(Li(A(Strong("Pipulate"), href=app_url("/")))), Ul(*items, cls="nav-apps")),
                  cls="container")


def body_wrap(body, req):
    """FastHTML's page wrapper: every full page gets the nav bar and the #flash slot."""
    state = req.app.state
    return (nav_bar(getattr(state, "nav", []), getattr(state, "broken_apps", [])),
            Main(Div(id="flash", role="status", aria_live="polite"), body, cls="container"),
            Footer(P("Pipulate workstation · data in ", store_place(getattr(state, "pip", None)), cls="muted"),
                   cls="container"))


def store_place(pip) -> str:
    """Where the store's data is, for the footer: the home folder, or the team's database and
    bucket (no password: ``where()`` leaves it out)."""
    if pip is None:
        return ""
    where = getattr(pip.db, "where", None)
    places = [where() if where else str(pip.home)]
    if getattr(pip.blobs, "url", None):
        places.append(pip.blobs.url)
    return " and ".join(places)


def page(title: str, *content):
    """A full page: its <title> and its content (FastHTML adds the headers and body_wrap)."""
    return Title(f"{title} · Pipulate"), *content


def flash(message: str, kind: str = "error", oob: bool = False) -> Div:
    """A message for the #flash slot; ``oob`` sends it alongside another swap."""
    kw = {"hx_swap_oob": "true"} if oob else {}
    return Div(Div(message, cls=f"flash-{kind}", role="alert" if kind == "error" else None),
               id="flash", **kw)


def clear_flash() -> Div:
    """Sent out of band with every successful partial update: the old message goes."""
    return Div(id="flash", hx_swap_oob="true")
