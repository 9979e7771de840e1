"""The workstation's web app: the workflow apps in apps/, the store's pages and the HTTP API.

    python server.py                  serve on 127.0.0.1:$PIPULATE_PORT (5001), restart on source changes
    python server.py --no-reload      serve without watching the sources
    python server.py --port 5002      override the port (also --host)
    python server.py --root-path /user/alice/pipulate-web   serve under a path, behind a proxy

Every request needs the token (PIPULATE_TOKEN, else one made at start and printed in the
URL): see pipulate/web/auth.py.

It uses the same store as the notebooks (PIPULATE_HOME, see config.py), so a
job begun in a notebook continues here and the other way round. Tests build the
app with ``create_app(home=tmp_path)``. See docs/web.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `config` lives beside this file
    sys.path.insert(0, str(ROOT))

from fasthtml.common import A, Div, FastHTML, H1, H2, Li, P, Small, Strong, Ul  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402

import pipulate  # noqa: E402
from config import WorkstationConfig  # noqa: E402
from pipulate import Pipulate  # noqa: E402
from pipulate.access import (RootPathError, check_root_path, exposure_warning, new_token, url_host,  # noqa: E402
                             with_token)
from pipulate.web import api, errors  # noqa: E402
from pipulate.web.apps import mount_apps  # noqa: E402
from pipulate.web.components import body_wrap, headers, page  # noqa: E402
from pipulate.web.auth import AUTHENTICATED, TokenMiddleware  # noqa: E402
from pipulate.web.security import SameOriginMiddleware  # noqa: E402
from pipulate.web.urls import RootPathMiddleware, app_url  # noqa: E402

APPS_DIR = ROOT / "apps"
STATIC_DIR = Path(pipulate.__file__).resolve().parent / "static"
WATCHED = [ROOT / "apps", Path(pipulate.__file__).resolve().parent, ROOT / "server.py", ROOT / "config.py"]
SUPERVISED_ENV = "PIPULATE_SERVER_PARENT"

log = logging.getLogger("pipulate.web")


def home_page(apps, broken, pip, lab_url: str | None = None):
    """GET /: the apps, JupyterLab (logged in) when it was started beside us, and any app that
    failed to load."""
    items = [Li(A(Strong(a.title), href=app_url(a.path)), " ", Small(a.description, cls="muted")) for a in apps]
    if lab_url:
        items.append(Li(A(Strong("JupyterLab"), href=lab_url, id="jupyterlab-link", target="_blank"), " ",
                        Small("the notebooks, started beside this app", cls="muted")))
    failed = ""
    if broken:
        failed = Div(H2("Apps that failed to load"),
                     Ul(*[Li(Strong(name), ": ", err) for name, err in broken]), cls="flash-error")
    return page("Home", H1("Pipulate workstation"),
                P("Step-by-step workflows and the state your notebooks keep, in one store: ",
                  Small(str(pip.home), cls="muted")),
                Ul(*items), failed)


def create_app(home: str | os.PathLike | None = None, apps_dir: str | os.PathLike | None = None,
               pip: Pipulate | None = None, listen_host: str | None = None, token: str | None = None,
               port: int | None = None, jupyterlab: str | None = None,
               root_path: str | None = None) -> FastHTML:
    """The app on ``home`` (default: PIPULATE_HOME / config), with the apps found in ``apps_dir``.

    ``listen_host``: the address the server listens on (default PIPULATE_HOST / config);
    requests naming another host are refused (``pipulate.web.security``).
    ``token``: the secret every request must carry (default PIPULATE_TOKEN, else a new one:
    ``app.state.token``); ``port`` names its cookie (default PIPULATE_PORT / config).
    ``jupyterlab``: the URL of a JupyterLab that takes the same token (``pipulate up``'s):
    the home page links there, logged in.
    ``root_path``: the path it is served under behind a proxy (default PIPULATE_ROOT_PATH /
    config): every address it emits starts with it (``pipulate.web.urls``).
    """
    cfg = WorkstationConfig.from_env()
    if pip is None:
        pip = Pipulate(home)  # the engine's own settings (and home) come from the environment
    pip.signer  # make or read the signing key now, before requests arrive on many threads
    # No CDN headers, no sessions (and so no .sesskey file): the key lives in the URL or the form.
    app = FastHTML(hdrs=headers(), default_hdrs=False, sess_cls=None, secret_key="unused",
                   body_wrap=body_wrap, title="Pipulate", canonical=False)
    errors.install(app)
    if listen_host is None:
        listen_host = cfg.host
    token = token or cfg.token or new_token()
    app.add_middleware(SameOriginMiddleware, listen_host=listen_host)
    # Added last, so it runs first: it reads its cookie before SameOriginMiddleware drops them all.
    app.add_middleware(TokenMiddleware, token=token, port=cfg.port if port is None else port)
    # Outermost: every layer inside sees the root path in the scope.
    # (checked now: Starlette builds its middleware at the first request)
    app.add_middleware(RootPathMiddleware, root_path=check_root_path(cfg.root_path if root_path is None else root_path))
    app.state.token = token
    app.state.pip = pip
    app.state.home = pip.home
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.route("/healthz", methods=["get"], name="healthz")
    def healthz(request: Request):
        if not request.scope.get(AUTHENTICATED):  # open to all, so it tells nothing
            return JSONResponse({"ok": True})
        return JSONResponse({"ok": True, "home": str(pip.home), "apps": [a.name for a in apps],
                             "pid": os.getpid()})

    api.register(app, pip)
    apps, broken = mount_apps(app, pip, Path(apps_dir) if apps_dir is not None else APPS_DIR)
    app.state.apps = apps
    app.state.nav = [(a.title, a.path) for a in apps]
    app.state.broken_apps = broken

    @app.route("/", methods=["get"], name="home")
    def index():
        return home_page(apps, broken, pip, with_token(jupyterlab, token) if jupyterlab else None)

    return app


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, bad address), or None."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return str(exc)
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _exit_with_parent(parent: int) -> None:
    """Under the reloader: stop when it is gone (killed without passing on the signal)."""
    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), 2)  # SIGINT: uvicorn shuts down gracefully
                return
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv=None) -> int:
    try:
        cfg = WorkstationConfig.from_env()
    except ValueError as exc:
        print(f"pipulate server: bad setting: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description="The Pipulate workstation's web app.")
    parser.add_argument("--host", default=cfg.host, help=f"address to listen on (default {cfg.host})")
    parser.add_argument("--port", type=int, default=cfg.port, help=f"port (default {cfg.port}, PIPULATE_PORT)")
    parser.add_argument("--no-reload", action="store_true", help="do not restart when a source file changes")
    parser.add_argument("--jupyterlab", metavar="URL",
                        help="a JupyterLab that takes the same token (pipulate up's): the home page links to it")
    parser.add_argument("--root-path", default=cfg.root_path, metavar="PATH",
                        help="the path it is served under behind a proxy (PIPULATE_ROOT_PATH), "
                             "e.g. /user/alice/pipulate-web")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        args.root_path = check_root_path(args.root_path)
    except RootPathError as exc:
        print(f"pipulate server: bad --root-path: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per fetched URL
    if not os.environ.get(SUPERVISED_ENV):  # the reloader's child re-binds a port its parent checked
        problem = port_problem(args.host, args.port)
        if problem:
            print(f"pipulate server: cannot listen on {args.host}:{args.port}: {problem}. "
                  "Stop what uses it, or choose another port (--port or PIPULATE_PORT).", file=sys.stderr)
            return 2

    # A token made here goes into the environment, so the reloader's child, and every child
    # it starts again after a change, keeps it: a reload must not log the user out.
    made = not cfg.token
    token = cfg.token or new_token()
    os.environ["PIPULATE_TOKEN"] = token
    if made:
        warning = exposure_warning(args.host, token_explicit=False)
        if warning:
            print(f"pipulate server: {warning}", file=sys.stderr, flush=True)
        url = f"http://{url_host(args.host)}:{args.port}{args.root_path}/"
        print(f"pipulate server: open {with_token(url, token)}",
              flush=True)

    if not args.no_reload:
        # The reloader runs the server as a child and starts a new one when a .py file changes.
        # The store is on disk and every write is durable when its request returns, so a
        # restart loses nothing; uvicorn finishes requests in flight before it exits.
        import watchfiles

        cmd = [sys.executable, str(ROOT / "server.py"), "--no-reload", "--host", args.host,
               "--port", str(args.port), "--log-level", args.log_level, "--root-path", args.root_path]
        if args.jupyterlab:
            cmd += ["--jupyterlab", args.jupyterlab]
        os.environ[SUPERVISED_ENV] = str(os.getpid())
        print(f"pipulate server: http://{args.host}:{args.port}/ (restarts when a .py file changes)",
              flush=True)
        watchfiles.run_process(*[p for p in WATCHED if p.exists()], target=shlex.join(cmd), target_type="command",
                               watch_filter=watchfiles.PythonFilter(), callback=_log_changes)
        return 0

    import uvicorn

    parent = os.environ.pop(SUPERVISED_ENV, None)
    if parent and parent.isdigit():
        _exit_with_parent(int(parent))
    uvicorn.run(create_app(listen_host=args.host, token=token, port=args.port, jupyterlab=args.jupyterlab,
                           root_path=args.root_path),
                host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0


def _log_changes(changes) -> None:
    names = sorted({Path(path).name for _, path in changes})
    print(f"pipulate server: {', '.join(names)} changed; restarting", flush=True)


if __name__ == "__main__":
    sys.exit(main())
