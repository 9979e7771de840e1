"""Finding and mounting the apps: every ``apps/*.py`` (not starting with ``_``) is one app.

An app module defines::

    APP_NAME = "hello"        # its URL prefix (/hello) and its name in the jobs table; [a-z0-9_-]
    TITLE = "Hello"           # its name in the nav bar
    ORDER = 10                # optional: place in the nav bar (lower first; default 100)
    DESCRIPTION = "..."       # optional: a line on the home page
    def register(app, rt, pip): ...   # add its routes

``rt`` is ``app.route`` with ``/{APP_NAME}`` in front: ``@rt("")`` is the app's
landing page, ``@rt("/clear", methods=["post"])`` is ``POST /{APP_NAME}/clear``,
and a bare ``@rt`` uses the function's name (``index`` is the landing page).
Methods default to GET; every change is a POST. A module that fails to load is
reported on the home page and in the log; the other apps still run.
"""
from __future__ import annotations

import importlib.util
import logging
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

log = logging.getLogger("pipulate.web")

APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
RESERVED = {"api", "static", "healthz", "favicon.ico"}


@dataclass
class AppInfo:
    name: str
    title: str
    path: str
    order: int
    description: str
    module: ModuleType


def make_rt(app, prefix: str):
    """``app.route`` with ``prefix`` in front of every path (see the module docstring)."""
    def rt(path=None, methods=None, name=None):
        def deco(func):
            if isinstance(path, str):
                p = path
            else:
                p = "" if func.__name__ == "index" else "/" + func.__name__
            return app.route(prefix + p, methods=methods or ["get"],
                             name=name or f"{prefix[1:]}:{func.__name__}")(func)
        return deco(path) if callable(path) else deco
    return rt


def load_module(path: Path) -> ModuleType:
    """Import ``apps/<stem>.py`` as ``pipulate_apps.<stem>`` (once per process)."""
    modname = f"pipulate_apps.{path.stem}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def app_files(apps_dir: Path) -> list[Path]:
    if not apps_dir.is_dir():
        return []
    return sorted(p for p in apps_dir.glob("*.py") if not p.name.startswith("_"))


def mount_apps(app, pip, apps_dir: Path) -> tuple[list[AppInfo], list[tuple[str, str]]]:
    """Load and register every app; returns (mounted apps in nav order, [(file, error)])."""
    mounted: list[AppInfo] = []
    broken: list[tuple[str, str]] = []
    names: set[str] = set()
    for path in app_files(Path(apps_dir)):
        try:
            module = load_module(path)
            name, title = getattr(module, "APP_NAME", None), getattr(module, "TITLE", None)
            if not isinstance(name, str) or not APP_NAME_RE.match(name):
                raise ValueError(f"APP_NAME must match {APP_NAME_RE.pattern}, got {name!r}")
            if name in RESERVED or name in names:
                raise ValueError(f"APP_NAME {name!r} is reserved or used by another app")
            if not isinstance(title, str) or not title:
                raise ValueError("TITLE must be a non-empty string")
            if not callable(getattr(module, "register", None)):
                raise ValueError("register(app, rt, pip) is missing")
            module.register(app, make_rt(app, "/" + name), pip)
        except Exception as exc:
            log.error("app %s failed to load:\n%s", path.name, "".join(traceback.format_exception(exc)))
            broken.append((path.name, f"{type(exc).__name__}: {exc}"))
            continue
        names.add(name)
        mounted.append(AppInfo(name, title, "/" + name, int(getattr(module, "ORDER", 100)),
                               str(getattr(module, "DESCRIPTION", "")), module))
    mounted.sort(key=lambda a: (a.order, a.title))
    return mounted, broken
