"""The recovery endpoints: what ``pipulate recover`` knows (history sessions, saved notebook
versions, checkpoints), listed for one notebook and opened as a new notebook beside it.

A recovered notebook is always a new file (``NAME-recovered-N.ipynb``): nothing the user has
is overwritten from JupyterLab.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from tornado import web

from .base import BadRequest, PipulateHandler

SOURCES = ("session", "version", "checkpoint")
MAX_SESSIONS = 50


def _time(t) -> str | None:
    return t.isoformat() if t is not None else None


def _sessions(full: Path) -> tuple[list[dict], list[str]]:
    """Sessions newest first, those that ran this notebook's code first of all."""
    from pipulate.recover import match
    from pipulate.recover.history import History, RecoveryError

    with History() as history:
        notes = history.problems()
        if not history.usable:
            return [], notes
        ranked = {}
        try:
            found, _ = match.rank(full, history, processes=[], top=5)
            ranked = {m.session.ref: (m.score, m.reasons()) for m in found}
        except RecoveryError:
            pass  # a new or empty notebook: nothing to rank by
        rows = []
        for s in history.sessions(include_empty=False):
            score, why = ranked.get(s.ref, (None, ""))
            rows.append({"ref": s.ref, "start": _time(s.start), "end": _time(s.end),
                         "cells": s.cell_count, "first_line": s.first_line,
                         "score": score, "why": why})
    rows.sort(key=lambda r: r["start"] or "", reverse=True)
    rows.sort(key=lambda r: r["score"] or 0, reverse=True)  # stable: likeliest, then newest
    return rows[:MAX_SESSIONS], notes


def _versions(full: Path) -> list[dict]:
    from pipulate.recover.versions import NotebookVersions

    store = NotebookVersions()
    try:
        return [{"ref": str(v.id), "saved_at": v.saved_at, "size": v.size} for v in store.list(full)]
    finally:
        store.close()


def _checkpoints(root: Path, full: Path) -> list[dict]:
    from pipulate.recover import checkpoints

    found = checkpoints.scan(root)
    found.sort(key=lambda c: c.notebook != full)  # this notebook's first (stable: newest first)
    return [{"ref": c.path.relative_to(root).as_posix(), "notebook": c.notebook.relative_to(root).as_posix(),
             "status": c.status, "detail": c.detail, "saved_at": c.saved} for c in found]


def listing(root: Path, full: Path) -> dict:
    sessions, notes = _sessions(full)
    return {"sessions": sessions, "versions": _versions(full), "checkpoints": _checkpoints(root, full),
            "notes": notes}


def recovered_bytes(root: Path, source: str, ref: str) -> tuple[bytes, str]:
    """The notebook a source holds, and what it was recovered from. RecoveryError if none."""
    from pipulate.recover.history import RecoveryError

    if source == "session":
        from pipulate.recover.export import to_notebook
        from pipulate.recover.history import History

        import nbformat

        with History() as history:
            s = history.session(ref)
            cells = s.cells()
            if not any(c.code.strip() for c in cells):
                raise RecoveryError(f"session {s.ref} ran no code; nothing to recover")
            what = f"history session {s.ref}"
            nb = to_notebook(cells, what)
        return nbformat.writes(nb, version=4).encode("utf-8"), what
    if source == "version":
        from pipulate.recover.versions import NotebookVersions

        if not ref.isdigit():
            raise BadRequest(400, f"a saved version is a number, got {ref[:40]!r}")
        store = NotebookVersions()
        try:
            v = store.get(int(ref))
            return store.data(v), f"saved version {v.id} of {v.notebook}"
        finally:
            store.close()
    from pipulate.recover.checkpoints import CHECKPOINT_DIR, notebook_for

    path = (root / ref).resolve()
    if root not in path.parents:
        raise BadRequest(403, f"checkpoint {ref[:80]!r} is outside the notebooks folder")
    if path.parent.name != CHECKPOINT_DIR or notebook_for(path) is None or not path.is_file():
        raise RecoveryError(f"{ref} is not a checkpoint")
    return path.read_bytes(), f"checkpoint {ref}"


def new_path(full: Path) -> Path:
    for n in range(1, 10_000):
        candidate = full.with_name(f"{full.stem}-recovered-{n}.ipynb")
        if not candidate.exists():
            return candidate
    raise BadRequest(409, f"too many recovered copies of {full.name} already")


def open_recovered(root: Path, full: Path, source: str, ref: str) -> dict:
    from pipulate.recover.export import write_atomic

    data, what = recovered_bytes(root, source, ref)
    if not full.parent.is_dir():
        full = root / full.name
    out = new_path(full)
    write_atomic(out, data)
    return {"path": out.relative_to(root).as_posix(), "recovered_from": what}


class RecoverHandler(PipulateHandler):
    @web.authenticated
    async def get(self):
        full = self.notebook_path(self.get_query_argument("path", ""))
        self.finish(await asyncio.to_thread(listing, self.root, full))


class OpenHandler(PipulateHandler):
    @web.authenticated
    async def post(self):
        from pipulate.recover.history import RecoveryError

        data = self.body()
        full = self.notebook_path(data.get("path"))
        source, ref = data.get("source"), data.get("ref")
        if source not in SOURCES:
            raise BadRequest(400, f"source must be one of {', '.join(SOURCES)}, got {str(source)[:40]!r}")
        if not isinstance(ref, (str, int)) or isinstance(ref, bool) or not str(ref).strip():
            raise BadRequest(400, "ref is required: a session (12 or 2:12), a version id or a checkpoint path")
        try:
            result = await asyncio.to_thread(open_recovered, self.root, full, source, str(ref).strip())
        except RecoveryError as exc:
            raise BadRequest(404, str(exc)) from None
        self.set_status(201)
        self.finish(result)


HANDLERS = [
    (r"recover", RecoverHandler),
    (r"recover/open", OpenHandler),
]
