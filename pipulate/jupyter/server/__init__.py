"""The workstation's jupyter_server extension: JSON endpoints under ``/pipulate/`` for the
JupyterLab extension (``labextension/``), over the same modules the CLI and the web app use.

    GET    /pipulate/info                      the web app's URL, the large-state threshold
    GET    /pipulate/state?path=P[&version=V]  the notebook's state: latest (or V) variables,
                                               skipped ones, versions with their cell's first line
    DELETE /pipulate/state?path=P              forget the notebook's saved state
    GET    /pipulate/state/diff?path=P&a=A&b=B added / modified / deleted between two versions
    POST   /pipulate/state/select              {"path": P, "version": V}: what the next start restores
    POST   /pipulate/state/skip-restore        {"path": P}: the next start restores nothing (once)
    GET    /pipulate/recover?path=P            history sessions (the likeliest for P first),
                                               saved notebook versions, checkpoints
    POST   /pipulate/recover/open              {"source": "session"|"version"|"checkpoint",
                                               "ref": R, "path": P}: a new notebook, its path

Jupyter's own authentication and XSRF checks apply (``APIHandler``); bad input is a 4xx
with a message.
"""
from __future__ import annotations

NAME = "pipulate.jupyter.server"


def _jupyter_server_extension_points():
    return [{"module": NAME}]


def _load_jupyter_server_extension(server_app) -> None:
    from jupyter_server.utils import url_path_join

    from . import recover, state

    base = url_path_join(server_app.web_app.settings["base_url"], "pipulate")
    handlers = [(url_path_join(base, pattern), handler)
                for pattern, handler in state.HANDLERS + recover.HANDLERS]
    server_app.web_app.add_handlers(".*$", handlers)
    server_app.log.info("pipulate: JupyterLab endpoints under %s", base)


# jupyter_server < 2 names
load_jupyter_server_extension = _load_jupyter_server_extension
