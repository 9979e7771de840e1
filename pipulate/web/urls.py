"""The web app's own URLs, under its root path (``PIPULATE_ROOT_PATH``, ``server.py --root-path``).

Behind a proxy that serves the app under a path (JupyterHub: ``/user/NAME/pipulate-web``), every
address the app emits (links, ``src``, ``hx-*``, redirects, cookie paths, JSON links) must carry
that path: ``app_url("/jobs")`` gives ``/user/NAME/pipulate-web/jobs``, and with no root path exactly
``/jobs``. The root path is the request's ``scope["root_path"]``, which ``RootPathMiddleware``
(the app's outermost layer) sets and keeps in a context variable for the request, so plain
component functions need no request to build a URL. Starlette copies the context into the
thread a sync handler runs in.

A request may come with the root path in its path (the proxy forwards the whole address) or
without it (the direct loopback port): the middleware makes the path ``root + route`` either
way, as ASGI servers do, and routing strips the root again (``route_path``).
"""
from __future__ import annotations

from contextvars import ContextVar

from ..access import RootPathError, check_root_path  # noqa: F401  (re-exported)

ROOT_PATH: ContextVar[str] = ContextVar("pipulate_root_path", default="")


def app_url(path: str) -> str:
    """The address of the app's own ``path`` ("/..."), as the browser must ask for it."""
    return ROOT_PATH.get() + path


class AppUrl:
    """``app_url(path)`` when the page is rendered, not when it is built: for the <head> that
    the app builds once (FastHTML renders an attribute through its ``__html__``)."""

    def __init__(self, path: str):
        self.path = path

    def __html__(self) -> str:
        return app_url(self.path)

    __str__ = __html__


def route_path(scope) -> str:
    """The path the app's routes see: the request's path without the root path."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path


class RootPathMiddleware:
    """Give every request ``root_path`` and a path that starts with it; remember the root for
    ``app_url`` while the request runs."""

    def __init__(self, app, root_path: str = ""):
        self.app = app
        self.root = check_root_path(root_path)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        root = self.root or scope.get("root_path", "")
        if root:  # in the server's own scope, as pipulate.web.auth changes it (its access log)
            path = scope["path"]
            if not (path == root or path.startswith(root + "/")):
                raw = scope.get("raw_path") or path.encode()
                scope["path"], scope["raw_path"] = root + path, root.encode() + raw
            scope["root_path"] = root
        reset = ROOT_PATH.set(root)
        try:
            await self.app(scope, receive, send)
        finally:
            ROOT_PATH.reset(reset)
