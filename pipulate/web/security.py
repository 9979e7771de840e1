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
                message = f"Refused: a change requested by another site ({origin[:80]})."
                if scope["path"].startswith("/api/"):
                    response = JSONResponse({"error": message, "status": 403}, status_code=403)
                else:
                    response = PlainTextResponse(message, status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _same_origin(origin: str, host: str) -> bool:
    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return bool(parts.netloc) and parts.netloc.lower() == host.lower()
