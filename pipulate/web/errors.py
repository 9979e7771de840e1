"""Every failure becomes a clear answer: JSON under /api, a #flash message for HTMX, else a page.

No traceback ever reaches the browser; unexpected errors are logged here and
answered with a short message.
"""
from __future__ import annotations

import json
import logging
import traceback

from fasthtml.common import H1, A, Body, Head, Html, P, Title, to_xml
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse

from ..errors import IntegrityError, PipulateError, StoreUnavailableError
from .components import body_wrap, flash, headers
from .urls import ROOT_PATH, app_url, route_path

log = logging.getLogger("pipulate.web")

_TITLES = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 409: "Conflict",
           413: "Too large", 422: "Cannot process", 500: "Internal error", 503: "Unavailable"}


def error_response(request, status: int, message: str):
    # A 500 is answered outside the app's middleware (Starlette's ServerErrorMiddleware), after
    # the request's root path was put away: take it again from the scope.
    reset = ROOT_PATH.set(request.scope.get("root_path", ""))
    try:
        return _error_response(request, status, message)
    finally:
        ROOT_PATH.reset(reset)


def _error_response(request, status: int, message: str):
    if route_path(request.scope).startswith("/api/") or "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"error": message, "status": status}, status_code=status)
    if "hx-request" in request.headers:
        return HTMLResponse(to_xml(flash(message)), status_code=status,
                            headers={"HX-Retarget": "#flash", "HX-Reswap": "outerHTML"})
    title = _TITLES.get(status, "Error")
    content = (H1(title), P(message, cls="flash-error", role="alert"), P(A("Back to the home page", href=app_url("/"))))
    doc = Html(Head(Title(f"{title} · Pipulate"), *headers()), Body(*body_wrap(content, request)))
    return HTMLResponse(to_xml(doc), status_code=status)


def _message(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


async def http_exception(request, exc: HTTPException):
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
    if exc.status_code == 404 and detail in ("Not Found", "404 Not Found"):
        detail = f"Nothing here: {request.url.path}"
    return error_response(request, exc.status_code, detail)


async def value_error(request, exc: ValueError):
    return error_response(request, 400, _message(exc))


async def pipulate_error(request, exc: PipulateError):
    if isinstance(exc, StoreUnavailableError):
        return error_response(request, 503, _message(exc))
    if isinstance(exc, IntegrityError):
        return error_response(request, 409, f"Stored data cannot be read: {_message(exc)}")
    return error_response(request, 400, _message(exc))


def _while_binding_parameters(exc: BaseException) -> bool:
    """True when FastHTML failed turning the request's fields into a handler's arguments
    (e.g. a JSON body giving ``[]`` for a ``str`` parameter): bad input, not our bug."""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "_find_p" and code.co_filename.replace("\\", "/").endswith("fasthtml/core.py"):
            return True
        tb = tb.tb_next
    return False


async def bad_field(request, exc: Exception):
    if _while_binding_parameters(exc):
        return error_response(request, 400, "a request field has the wrong shape "
                                            f"({type(exc).__name__}: {_message(exc)})")
    raise exc  # a bug of ours: answered by ``unexpected``


async def unexpected(request, exc: Exception):
    log.error("error handling %s %s:\n%s", request.method, request.url.path,
              "".join(traceback.format_exception(exc)))
    return error_response(request, 500, f"Something went wrong ({type(exc).__name__}); "
                                        "it was logged by the server.")


def install(app) -> None:
    """Hook the handlers into a Starlette/FastHTML app (before its first request)."""
    for code in (400, 404, 405, 409, 413, 422):
        app.exception_handlers[code] = http_exception
    app.add_exception_handler(HTTPException, http_exception)
    app.add_exception_handler(ValueError, value_error)
    app.add_exception_handler(PipulateError, pipulate_error)
    for kind in (IndexError, KeyError, TypeError):
        app.add_exception_handler(kind, bad_field)
    app.add_exception_handler(Exception, unexpected)
