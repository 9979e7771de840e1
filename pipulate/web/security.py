"""Refuse changes requested by other web sites (CSRF): the workstation listens on loopback,
and any page the user visits could otherwise POST a form to it.

A browser sends ``Origin`` with every cross-origin POST/DELETE; a change is
accepted when there is no ``Origin`` (curl, scripts, the test client) or when
it names this server's own host and port. Reads are never refused.

Cookies are dropped before the app sees a request: the web app keeps no
session, and FastHTML fills a handler's parameters from cookies before the
query string and the form, so a cookie that another program on localhost set
(JupyterLab's, say) must never stand in for a ``key`` or a ``value``.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import JSONResponse, PlainTextResponse

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
MAX_BODY_BYTES = 32 * 1024 * 1024  # a pasted list of 5,000 long URLs is ~10 MB


class SameOriginMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and any(k == b"cookie" for k, _ in scope["headers"]):
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"cookie"]}
        if scope["type"] == "http" and scope["method"] in UNSAFE:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            origin = headers.get("origin")
            if origin is not None and not _same_origin(origin, headers.get("host", "")):
                await _refuse(scope, receive, send, 403, f"Refused: a change requested by another site ({origin[:80]}).")
                return
            length = headers.get("content-length", "0")
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                await _refuse(scope, receive, send, 413,
                              f"The request body is too large (at most {MAX_BODY_BYTES // 2**20} MB).")
                return
        await self.app(scope, receive, send)


async def _refuse(scope, receive, send, status: int, message: str) -> None:
    if scope["path"].startswith("/api/"):
        response = JSONResponse({"error": message, "status": status}, status_code=status)
    else:
        response = PlainTextResponse(message, status_code=status)
    await response(scope, receive, send)


def _same_origin(origin: str, host: str) -> bool:
    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return bool(parts.netloc) and parts.netloc.lower() == host.lower()
