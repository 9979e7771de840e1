"""Only the user who holds the workstation's token gets in (``pipulate.access`` makes it).

Loopback is not a wall: every user and program of the machine can reach 127.0.0.1, so
every request must carry the token, as JupyterLab's do, in one of three ways:

- ``?token=...`` in the URL (what ``pipulate up`` prints and opens). A GET or HEAD with it
  answers 303 to the same URL without it and sets the cookie, so the token does not stay
  in the address bar, the history or a copied link;
- ``Authorization: token ...`` (the HTTP API; ``Bearer`` works too);
- the cookie ``pipulate-token-<port>`` (HttpOnly, SameSite=Strict, Path= the root path, else
  /): cookies are not kept apart by port, so two workstations on one host each have their own.

Behind JupyterHub the hub's proxy adds the header (``pipulate.jupyter.hub_singleuser``): the
hub has let the user in, and the browser never sees the token.

Anything else gets a 401 that says how to get in, but ``GET /healthz``, which then answers
only ``{"ok": true}``. The comparison takes the same time however much of a guess is right.

This middleware runs first: it reads its own cookie and takes the token out of the query
string before anything else sees the request. The query string is changed in the very
scope the server passed in, because uvicorn's access log prints that scope's query string
once the answer is sent: the token never reaches a log line or a handler. Every cookie is
then still dropped by ``pipulate.web.security`` (which runs next), so none, ours included,
can stand in for a form field.
"""
from __future__ import annotations

from urllib.parse import unquote_plus

from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse

from ..access import same_token
from .urls import route_path

AUTHENTICATED = "pipulate.authenticated"  # scope key: did this request carry the token?
# scope key: did it carry the token in its Authorization header (which a browser never adds on
# its own: a proxy in front of the app, a script)? pipulate.web.security relies on it.
BY_HEADER = "pipulate.token_in_header"
OPEN_PATHS = frozenset({"/healthz"})
HOW_TO_GET_IN = ("Open the URL that `pipulate up` printed (it ends in ?token=...); "
                 "`pipulate url` prints it again while the workstation runs.")


def cookie_name(port: int) -> str:
    return f"pipulate-token-{port}"


class TokenMiddleware:
    def __init__(self, app, token: str, port: int):
        self.app = app
        self.token = token
        self.cookie = cookie_name(port)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        from_query, rest = split_token(scope.get("query_string", b""))
        if from_query is not None:
            scope["query_string"] = rest  # in place: see the module's docstring
        headers = scope["headers"]
        by_query = same_token(from_query, self.token)
        by_header = same_token(header_token(headers), self.token)
        allowed = by_query or by_header or same_token(cookie_token(headers, self.cookie), self.token)
        scope[AUTHENTICATED] = allowed
        scope[BY_HEADER] = by_header
        if scope["type"] == "websocket":
            if allowed:
                await self.app(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        if by_query and scope["method"] in ("GET", "HEAD"):
            await self.log_in(scope, rest, receive, send)
        elif allowed or route_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
        else:
            await refuse(scope, receive, send)

    async def log_in(self, scope, rest: bytes, receive, send) -> None:
        """Set the cookie and send the browser to the same address without the token."""
        path = scope.get("raw_path") or scope["path"].encode()  # the root path included
        # One leading slash: "//evil.example" would be another site's address.
        location = "/" + path.decode("latin-1").lstrip("/\\")
        if rest:
            location += "?" + rest.decode("latin-1")
        response = RedirectResponse(location, status_code=303)
        response.set_cookie(self.cookie, self.token, path=scope.get("root_path") or "/", httponly=True,
                            samesite="strict")
        await response(scope, receive, send)


async def refuse(scope, receive, send) -> None:
    message = "This workstation's web app lets in only its own user. " + HOW_TO_GET_IN
    headers = {"WWW-Authenticate": "token"}
    if route_path(scope).startswith("/api/"):
        response = JSONResponse({"error": message, "status": 401}, status_code=401, headers=headers)
    else:
        response = HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>Pipulate: log in</title>"
            "<h1>Pipulate workstation</h1>"
            "<p>This workstation's web app lets in only its own user.</p>"
            "<p>Open the URL that <code>pipulate up</code> printed (it ends in <code>?token=...</code>); "
            "<code>pipulate url</code> prints it again while the workstation runs.</p>",
            status_code=401, headers=headers)
    await response(scope, receive, send)


def split_token(query: bytes) -> tuple[str | None, bytes]:
    """(the last ``token`` parameter's value or None, the query string without any ``token``)."""
    found, kept = None, []
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if unquote_plus(name.decode("latin-1")) == "token":
            found = unquote_plus(value.decode("latin-1"))
        elif part:
            kept.append(part)
    return found, b"&".join(kept)


def header_token(headers) -> str | None:
    for key, value in headers:
        if key == b"authorization":
            scheme, _, credential = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() in ("token", "bearer"):
                return credential.strip()
    return None


def cookie_token(headers, name: str) -> str | None:
    for key, value in headers:
        if key != b"cookie":
            continue
        for pair in value.decode("latin-1").split(";"):
            cookie, _, content = pair.strip().partition("=")
            if cookie == name:
                return content.strip().strip('"')
    return None
