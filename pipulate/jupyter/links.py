"""JupyterLab's way to the web app: a Help-menu item that opens it, logged in.

The item needs the token, which changes per start, so it cannot ship in the package:
``pipulate up`` writes it per start as JupyterLab *default setting overrides* in a folder
of its own under the data home (``labconfig/default_setting_overrides.json``, readable by
the user only) and puts that folder on ``JUPYTER_CONFIG_PATH``. JupyterLab layers these
over every other settings override (``overrides.json`` in its app settings folder included),
so static overrides shipped elsewhere keep working; the ones shipped in
``pipulate/jupyter/lab-settings/overrides.json``, if any, are merged in here too, so they apply
whichever folder JupyterLab takes as its app settings folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import HERE

MENU_PLUGIN = "@jupyterlab/mainmenu-extension:plugin"
HELP_MENU = "jp-mainmenu-help"
LINK_TEXT = "Pipulate web app"
STATIC_OVERRIDES = HERE / "lab-settings" / "overrides.json"


def link_settings(web_url: str) -> dict:
    """The settings overrides that add the Help-menu item opening ``web_url`` in a new tab."""
    item = {"command": "help:open", "rank": 1,
            "args": {"url": web_url, "text": LINK_TEXT, "newBrowserTab": True}}
    return {MENU_PLUGIN: {"menus": [{"id": HELP_MENU, "items": [item]}]}}


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + value
        else:
            out[key] = value
    return out


def write_link_config(home: Path, web_url: str) -> Path:
    """Write the overrides for ``web_url`` (which carries the token, or under JupyterHub is the
    proxied path ``/user/NAME/pipulate-web/``); return the folder to put on ``JUPYTER_CONFIG_PATH``."""
    folder = Path(home) / "jupyter" / "per-start"
    labconfig = folder / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    for d in (folder, labconfig):
        os.chmod(d, 0o700)
    settings = link_settings(web_url)
    if STATIC_OVERRIDES.is_file():
        settings = _merged(json.loads(STATIC_OVERRIDES.read_text()), settings)
    write_private_json(labconfig / "default_setting_overrides.json", settings)
    return folder


def write_private_json(path: Path, data: dict) -> None:
    """``data`` as JSON in a file only its owner reads (0600, even when it was there before)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(data, indent=1).encode())
    finally:
        os.close(fd)
