"""Refuse changes requested by other web sites (CSRF): the workstation listens on loopback,
and any page the user visits could otherwise POST a form to it.

Refuse every request whose ``Host`` is not a name of this machine's loopback (DNS
rebinding): a site can point its own name at 127.0.0.1, and the browser then takes
the workstation for that site, sends its pages' requests there and lets them read
the answers; ``Origin`` and ``Host`` agree, so only the name gives it away. Allowed:
``localhost`` (and ``*.localhost``), ``127.0.0.1``, ``[::1]`` and the address the
server listens on. Listening on every address (``PIPULATE_HOST=0.0.0.0``) means the
workstation is meant to be reached by other names: then any ``Host`` is taken, as
JupyterLab does with ``allow_remote_access``.

When the app is served under a root path (behind a proxy: ``PIPULATE_ROOT_PATH``), a request
that carried the token in its ``Authorization`` header may name any ``Host``: that is how the
hub's proxy (jupyter-server-proxy, ``pipulate.jupyter.hub_singleuser``) forwards a
user's requests, with the hub's public name as ``Host``. It opens nothing to DNS rebinding: a
browser never adds that header by itself, so a page of another site (rebound name or not)
would have to know the token, and a token-less request is refused before this check anyway
(``pipulate.web.auth``). The direct port still takes only loopback names from browsers
(the query string's token and the cookie). Such requests still pass the ``Origin`` check
below, against the ``Host`` they name: the proxy defers CSRF checks to the app it proxies,
so a form that another site posts through the hub (with the user's hub cookie) is refused
here.

A browser sends ``Origin`` with every cross-origin POST/DELETE; a change is
accepted when there is no ``Origin`` (curl, scripts, the test client) or when
it names this server's own host and port. Reads are never refused.

Cookies are dropped before the app sees a request: the web app keeps no
session, and FastHTML fills a handler's parameters from cookies before the
query string and the form, so a cookie that another program on localhost set
(JupyterLab's, say) must never stand in for a ``key`` or a ``value``. The one
cookie of our own, the token's, is read before this by ``pipulate.web.auth``
(which runs first) and dropped here like every other.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import JSONResponse, PlainTextResponse

from .auth import BY_HEADER
from .urls import route_path

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
EVERY_ADDRESS = frozenset({"", "0.0.0.0", "::"})
MAX_BODY_BYTES = 32 * 1024 * 1024  # a pasted list of 5,000 long URLs is ~10 MB


class SameOriginMiddleware:
    def __init__(self, app, listen_host: str = "127.0.0.1"):
        self.app = app
        listen = listen_host.strip().strip("[]").lower()
        self.any_host = listen in EVERY_ADDRESS
        self.hosts = LOOPBACK_NAMES | {listen}

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and any(k == b"cookie" for k, _ in scope["headers"]):
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"cookie"]}
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        proxied = bool(scope.get("root_path")) and scope.get(BY_HEADER)
        if not self.any_host and not self.local_name(host) and not proxied:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _refuse(scope, receive, send, 403,
                              f"Refused: {host[:80]!r} is not a name of this workstation; open it as "
                              "http://localhost or http://127.0.0.1.")
            return
        if scope["type"] == "http" and scope["method"] in UNSAFE:
            origin = headers.get("origin")
            if origin is not None and not _same_origin(origin, host):
                await _refuse(scope, receive, send, 403, f"Refused: a change requested by another site ({origin[:80]}).")
                return
            length = headers.get("content-length", "0")
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                await _refuse(scope, receive, send, 413,
                              f"The request body is too large (at most {MAX_BODY_BYTES // 2**20} MB).")
                return
        await self.app(scope, receive, send)

    def local_name(self, host: str) -> bool:
        """``host`` (a Host header: name and port) names this machine's loopback or the listen address."""
        name = host.strip().lower()
        if name.startswith("["):  # [::1]:5001
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        return name in self.hosts or name.endswith(".localhost")


async def _refuse(scope, receive, send, status: int, message: str) -> None:
    if route_path(scope).startswith("/api/"):
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
