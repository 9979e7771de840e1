"""A hub user's server: JupyterLab (``jupyterhub-singleuser``) with the web app beside it, both
behind the hub's proxy.

JupyterHub runs ``python -m pipulate.jupyter.hub_singleuser`` as each user's server
(``pipulate.jupyter.hub`` sets it as ``Spawner.cmd``). When the workstation's checkout is there
(server.py), it first starts the user's own web app on a free loopback port with a token made
for this start, on the user's store settings, and under the root path
``/user/NAME/pipulate-web`` (``JUPYTERHUB_SERVICE_PREFIX`` + ``pipulate-web``:
PIPULATE_ROOT_PATH, so every address it emits starts there). The web app stops with this process: it watches its
parent. Like ``pipulate up``, it also gives the user a copy of every shipped notebook they lack
(``user_notebooks``), in the folder JupyterLab opens (PIPULATE_NOTEBOOKS_DIR: their home
folder). Both run as the user, so what they write is the user's.

How a browser reaches the web app: ``https://HUB/user/NAME/pipulate-web/``. The hub's proxy sends
``/user/NAME/`` to this server, where jupyter-server-proxy (a Jupyter server extension) serves
``pipulate-web/`` by forwarding to the web app's port (``ServerProxy.servers``, written per start
into a config folder on ``JUPYTER_CONFIG_PATH``, mode 0600: it holds the token). Its handlers
let in only who the hub lets into this server (the user, or whoever the hub grants
``access:servers`` on it), as for JupyterLab itself; it forwards the whole path
(``absolute_url``: the web app strips its root path) and adds ``Authorization: token ...``, so
the web app's own token is neither a hole nor a second log-in: the browser never sees it, and
the direct loopback port still wants it from everyone else (other users of the machine
included). JupyterLab's launcher and Help menu open ``/user/NAME/pipulate-web/``
(PIPULATE_WEB_APP_URL); docs/jupyterhub.md says more.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

from ..access import check_root_path, new_token
from ..home import checkout_root

WEB_HOST = "127.0.0.1"
# server.py's switch that makes it stop when its parent is gone (server.SUPERVISED_ENV).
PARENT_ENV = "PIPULATE_SERVER_PARENT"
# The web app's path under the user's server (/user/NAME/pipulate/ is the server extension's).
PROXY_NAME = "pipulate-web"


def free_port(host: str = WEB_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def root_path(environ=os.environ) -> str:
    """Where the hub's proxy serves this user's web app: under their server's prefix."""
    prefix = unquote(environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")).rstrip("/")
    return check_root_path(f"{prefix}/{PROXY_NAME}")


def proxy_config(port: int, token: str) -> dict:
    """jupyter-server-proxy's settings: ``/user/NAME/pipulate-web/...`` goes to the web app, whole
    (it strips its root path itself), with the token added; no launcher card of its own
    (the JupyterLab extension's "Pipulate Web App" opens the same address)."""
    return {"ServerProxy": {"servers": {PROXY_NAME: {
        "port": port, "absolute_url": True, "timeout": 60,
        "request_headers_override": {"Authorization": f"token {token}"},
        "launcher_entry": {"enabled": False}}}}}


def start_web_app(root: Path, folder: Path) -> subprocess.Popen:
    """The web app of this user on a free loopback port, behind the hub's proxy; its address
    and token go into this process's environment, which JupyterLab and its kernels inherit."""
    port, token, prefix = free_port(), new_token(), root_path()
    web_url = prefix + "/"
    os.environ.update(PIPULATE_PORT=str(port), PIPULATE_HOST=WEB_HOST, PIPULATE_TOKEN=token,
                      PIPULATE_ROOT_PATH=prefix, PIPULATE_WEB_APP_URL=web_url)
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "web.log", "ab") as log:
        web = subprocess.Popen(
            [sys.executable, str(root / "server.py"), "--no-reload", "--host", WEB_HOST, "--port", str(port),
             "--log-level", "warning"],
            env={**os.environ, PARENT_ENV: str(os.getpid())}, cwd=root, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT)
    from .links import write_link_config, write_private_json

    links = write_link_config(folder, web_url)
    write_private_json(links / "jupyter_server_config.json", proxy_config(port, token))
    os.environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        [str(links)] + [p for p in os.environ.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p])
    return web


def main() -> int:
    root = checkout_root()
    web = None
    if root is not None and (root / "notebooks").is_dir():
        from ..user_notebooks import hand_over

        hand_over(root / "notebooks", Path(os.environ.get("PIPULATE_NOTEBOOKS_DIR") or Path.home()))
    if root is not None and (root / "server.py").is_file():
        web = start_web_app(root, Path.home() / ".pipulate")
    try:
        from jupyterhub.singleuser import main as singleuser

        return singleuser()
    finally:
        if web is not None:
            web.terminate()
            try:
                web.wait(15)
            except subprocess.TimeoutExpired:
                web.kill()


if __name__ == "__main__":
    sys.exit(main())
