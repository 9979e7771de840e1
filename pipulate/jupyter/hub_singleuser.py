"""A hub user's server: JupyterLab (``jupyterhub-singleuser``) with the web app beside it.

JupyterHub runs ``python -m pipulate.jupyter.hub_singleuser`` as each user's server
(``pipulate.jupyter.hub`` sets it as ``Spawner.cmd``). When the workstation's checkout is there
(server.py), it first starts the user's own web app on a free loopback port with a token made
for this start, on the user's store settings, and hands both to JupyterLab the way ``pipulate
up`` does (PIPULATE_PORT and PIPULATE_TOKEN: the launcher's "Pipulate Web App" and the Help menu
open it logged in). The web app stops with this process: it watches its parent. Like ``pipulate
up``, it also gives the user a copy of every shipped notebook they lack (``user_notebooks``), in
the folder JupyterLab opens (PIPULATE_NOTEBOOKS_DIR: their home folder). Both run as the user,
so what they write is the user's.

Why beside JupyterLab and not behind the hub's proxy: the proxy serves each user under a path
(``/user/NAME/``), and the web app's pages and HTMX calls use absolute paths, so it has to own
the root of its host. It is reachable where the browser runs on the hub's machine (or through
an SSH tunnel to its port); docs/jupyterhub.md says so.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from ..access import new_token, with_token
from ..home import checkout_root

WEB_HOST = "127.0.0.1"
# server.py's switch that makes it stop when its parent is gone (server.SUPERVISED_ENV).
PARENT_ENV = "PIPULATE_SERVER_PARENT"


def free_port(host: str = WEB_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_web_app(root: Path, folder: Path) -> subprocess.Popen:
    """The web app of this user on a free loopback port; its address and token go into this
    process's environment, which JupyterLab and its kernels inherit."""
    port, token = free_port(), new_token()
    os.environ.update(PIPULATE_PORT=str(port), PIPULATE_HOST=WEB_HOST, PIPULATE_TOKEN=token)
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "web.log", "ab") as log:
        web = subprocess.Popen(
            [sys.executable, str(root / "server.py"), "--no-reload", "--host", WEB_HOST, "--port", str(port),
             "--log-level", "warning"],
            env={**os.environ, PARENT_ENV: str(os.getpid())}, cwd=root, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT)
    from .links import write_link_config

    links = write_link_config(folder, with_token(f"http://{WEB_HOST}:{port}/", token))
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
