"""The kernel-state endpoints: the same ``KernelStateStore`` calls as ``%state`` and
``pipulate state``."""
from __future__ import annotations

import os

from tornado import web

from .base import BadRequest, PipulateHandler

# The status bar warns when a notebook's saved state is larger than this (docs/jupyterlab.md).
LARGE_STATE_BYTES = 1024**3


def large_state_bytes() -> int:
    raw = os.environ.get("PIPULATE_LARGE_STATE_BYTES", "")
    try:
        return max(1, int(raw)) if raw.strip() else LARGE_STATE_BYTES
    except ValueError:
        return LARGE_STATE_BYTES


def _missing(exc: KeyError) -> BadRequest:
    return BadRequest(404, str(exc.args[0]) if exc.args else "not found")


class StateHandler(PipulateHandler):
    @web.authenticated
    def get(self):
        from pipulate.kernel_state.notes import cell_lines

        nb, name = self.notebook_id(self.get_query_argument("path", ""))
        version = self.version(self.get_query_argument("version", ""))
        store = self.store
        summary = store.summary(nb)
        if version is not None and not summary["has_saved_state"]:
            raise BadRequest(404, f"notebook {name!r} has no saved state")
        lines = cell_lines(store, nb)
        versions = [{**v, "cell": lines.get(v["version"], "")} for v in summary.pop("versions")]
        current = None
        if summary["has_saved_state"]:
            try:
                current = store.variables(nb, version)
            except KeyError as exc:
                raise _missing(exc) from None
        selected = store.db.rows("SELECT restore_version FROM kernel_notebooks WHERE id = ?", (nb,))
        self.finish({"notebook": nb, "name": name, **summary, "versions": versions, "current": current,
                     "next_restore": selected[0][0] if selected else None,
                     "large_state_bytes": large_state_bytes()})

    @web.authenticated
    def delete(self):
        nb, name = self.notebook_id(self.get_query_argument("path", ""))
        had = self.store.clear(nb)
        self.finish({"notebook": nb, "name": name, "cleared": had})


class DiffHandler(PipulateHandler):
    @web.authenticated
    def get(self):
        nb, _ = self.notebook_id(self.get_query_argument("path", ""))
        a = self.version(self.get_query_argument("a", ""), "a")
        b = self.version(self.get_query_argument("b", ""), "b")
        if a is None or b is None:
            raise BadRequest(400, "a and b are required: the two versions to compare")
        try:
            self.finish(self.store.diff(nb, a, b))
        except KeyError as exc:
            raise _missing(exc) from None


class SelectHandler(PipulateHandler):
    @web.authenticated
    def post(self):
        data = self.body()
        nb, _ = self.notebook_id(data.get("path"))
        try:
            self.finish(self.store.select_restore(nb, self.version(data.get("version"))))
        except KeyError as exc:
            raise _missing(exc) from None


class SkipRestoreHandler(PipulateHandler):
    @web.authenticated
    def post(self):
        from pipulate.kernel_state.notes import request_skip_restore

        nb, name = self.notebook_id(self.body().get("path"))
        request_skip_restore(self.store, nb)
        self.finish({"notebook": nb, "name": name, "applies": "next kernel start"})


class InfoHandler(PipulateHandler):
    """What the front end needs once: the web app's address and the large-state threshold."""

    @web.authenticated
    def get(self):
        self.finish({"web_app_url": web_app_url(), "large_state_bytes": large_state_bytes()})


def web_app_url() -> str | None:
    """Where "Pipulate Web App" goes: under JupyterHub, the hub's proxied path (the hub logs
    the user in: PIPULATE_WEB_APP_URL, set by hub_singleuser); else the loopback port, with
    the token."""
    proxied = os.environ.get("PIPULATE_WEB_APP_URL", "").strip()
    if proxied:
        return proxied
    port = os.environ.get("PIPULATE_PORT", "").strip()
    host = os.environ.get("PIPULATE_HOST", "127.0.0.1").strip() or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{host}:{port}/" if port.isdigit() else None
    token = os.environ.get("PIPULATE_TOKEN", "").strip()
    if url and token:  # the one secret of the workstation: the link logs the user in
        from pipulate.access import with_token

        url = with_token(url, token)
    return url


HANDLERS = [
    (r"info", InfoHandler),
    (r"state", StateHandler),
    (r"state/diff", DiffHandler),
    (r"state/select", SelectHandler),
    (r"state/skip-restore", SkipRestoreHandler),
]
