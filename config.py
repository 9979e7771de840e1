"""The workstation's settings, in one typed place.

Every key has a default and an environment variable that overrides it; the
command-line flags of ``pipulate up`` override both. The ``pipulate`` package
never imports this file: the workstation hands these settings to the package
and to its child processes (web app, JupyterLab, every kernel) as environment
variables (``WorkstationConfig.to_env``), so they all resolve one
``PIPULATE_HOME``.

Keys (environment variable in brackets):

- ``port`` [PIPULATE_PORT]: the web app's port. Default 5001.
- ``jupyter_port`` [PIPULATE_JUPYTER_PORT]: JupyterLab's port. Default 8888.
- ``host`` [PIPULATE_HOST]: the address both listen on. Default 127.0.0.1.
- ``notebooks_dir`` [PIPULATE_NOTEBOOKS_DIR]: the folder JupyterLab opens: the user's notebooks,
  where ``pipulate up`` copies each shipped template it lacks. Default my_notebooks/ (git-ignored).
- ``open_browser`` [PIPULATE_OPEN_BROWSER]: open both URLs in a browser once they answer. Default on.
- ``startup_timeout`` [PIPULATE_STARTUP_TIMEOUT]: seconds to wait for both servers to answer. Default 120.
- ``stop_timeout`` [PIPULATE_STOP_TIMEOUT]: seconds a server gets to stop before it is killed. Default 10.
- ``token`` [PIPULATE_TOKEN]: the secret that lets the user into the web app and JupyterLab
  (16 to 256 letters, digits or . _ ~ -). Default: made per start; the URLs that
  ``pipulate up`` prints carry it, ``pipulate url`` prints them again. Never printed by ``repr``.
- ``root_path`` [PIPULATE_ROOT_PATH]: the path the web app is served under behind a proxy
  (``/user/NAME/pipulate-web`` under JupyterHub): every address it emits starts with it. Default none.
- ``engine``: the state engine's own settings (see ``pipulate.settings.Settings``):
  PIPULATE_HOME, PIPULATE_INLINE_LIMIT, PIPULATE_BUSY_TIMEOUT_MS, PIPULATE_COMPRESS,
  PIPULATE_AUTOSAVE, PIPULATE_AUTORESTORE, PIPULATE_LAZY_RESTORE, PIPULATE_AUTO_REBUILD, PIPULATE_KEEP_VERSIONS,
  PIPULATE_MAX_VARIABLE_BYTES, PIPULATE_NOTEBOOK_VERSIONS_KEEP.

``describe()`` lists every setting (workstation and engine) with its
environment variable, default and meaning: ``pipulate up --help`` prints it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from pipulate.home import resolve_home
from pipulate.settings import Settings

ROOT = Path(__file__).resolve().parent
# Where users work: their copies of the templates and their own notebooks (git-ignored).
USER_NOTEBOOKS_DIR = ROOT / "my_notebooks"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be on/off, true/false, yes/no or 1/0, got {raw!r}")


def _env_token(name: str) -> str:
    from pipulate.access import check_token

    raw = os.environ.get(name, "")
    return check_token(raw) if raw else ""


def _env_root_path(name: str) -> str:
    from pipulate.access import RootPathError, check_root_path

    try:
        return check_root_path(os.environ.get(name))
    except RootPathError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _setting(default, env: str, meaning: str, **kwargs):
    """A field with its environment variable and one-line meaning attached."""
    return field(default=default, metadata={"env": env, "help": meaning}, **kwargs)


@dataclass(frozen=True)
class WorkstationConfig:
    port: int = _setting(5001, "PIPULATE_PORT", "the web app's port")
    jupyter_port: int = _setting(8888, "PIPULATE_JUPYTER_PORT", "JupyterLab's port")
    host: str = _setting("127.0.0.1", "PIPULATE_HOST", "the address both servers listen on")
    notebooks_dir: Path = _setting(USER_NOTEBOOKS_DIR, "PIPULATE_NOTEBOOKS_DIR",
                                   "the folder JupyterLab opens (your notebooks; the shipped "
                                   "ones are copied in when missing)")
    open_browser: bool = _setting(True, "PIPULATE_OPEN_BROWSER",
                                  "open both URLs in a browser once they answer")
    startup_timeout: float = _setting(120.0, "PIPULATE_STARTUP_TIMEOUT",
                                      "seconds to wait for both servers to answer")
    stop_timeout: float = _setting(10.0, "PIPULATE_STOP_TIMEOUT",
                                   "seconds a server gets to stop before it is killed")
    token: str = _setting("", "PIPULATE_TOKEN",
                          "the secret that lets the user into the web app and JupyterLab",
                          repr=False)
    root_path: str = _setting("", "PIPULATE_ROOT_PATH",
                              "the path the web app is served under behind a proxy (e.g. /user/NAME/pipulate-web); "
                              "every address it emits starts with it")
    engine: Settings = field(default_factory=Settings)

    @property
    def home(self) -> Path:
        return resolve_home(self.engine.home)

    @classmethod
    def from_env(cls) -> "WorkstationConfig":
        d = {f.name: f.default for f in fields(cls) if f.name != "engine"}
        return cls(
            port=_env_int("PIPULATE_PORT", d["port"]),
            jupyter_port=_env_int("PIPULATE_JUPYTER_PORT", d["jupyter_port"]),
            host=os.environ.get("PIPULATE_HOST") or d["host"],
            notebooks_dir=Path(os.environ.get("PIPULATE_NOTEBOOKS_DIR") or d["notebooks_dir"]),
            open_browser=_env_bool("PIPULATE_OPEN_BROWSER", d["open_browser"]),
            startup_timeout=_env_float("PIPULATE_STARTUP_TIMEOUT", d["startup_timeout"]),
            stop_timeout=_env_float("PIPULATE_STOP_TIMEOUT", d["stop_timeout"]),
            token=_env_token("PIPULATE_TOKEN"),
            root_path=_env_root_path("PIPULATE_ROOT_PATH"),
            engine=Settings.from_env(),
        )

    def to_env(self) -> dict[str, str]:
        """Environment for child processes (server, JupyterLab, kernels): one home for all."""
        env = self.engine.to_env()
        env["PIPULATE_HOME"] = str(self.home)
        env["PIPULATE_PORT"] = str(self.port)
        env["PIPULATE_JUPYTER_PORT"] = str(self.jupyter_port)
        env["PIPULATE_HOST"] = self.host
        env["PIPULATE_NOTEBOOKS_DIR"] = str(self.notebooks_dir)
        if self.token:
            env["PIPULATE_TOKEN"] = self.token
        if self.root_path:
            env["PIPULATE_ROOT_PATH"] = self.root_path
        return env


def _engine_meanings() -> dict[str, str]:
    """Each engine key's meaning, from the ``Keys`` list of ``pipulate.settings``' docstring."""
    import pipulate.settings as module

    text = re.sub(r"\n\s+(?!- )", " ", module.__doc__ or "")
    found = {}
    for match in re.finditer(r"^- ``(\w+)`` \[(\w+)\]: (.*)$", text, re.M):
        meaning = re.sub(r"\s*Default [^.]*\.\s*$", "", match.group(3)).strip()
        found[match.group(1)] = meaning.replace("``", "").rstrip(".")
    return found


def describe() -> list[tuple[str, str, str]]:
    """Every setting as (environment variable, default, meaning), workstation keys first."""
    rows = []
    for f in fields(WorkstationConfig):
        if f.name == "engine":
            continue
        default = f.default
        if f.name == "token":
            default = "made per start"
        elif f.name == "root_path":
            default = "none (/)"
        elif isinstance(default, Path):
            default = os.path.relpath(default, ROOT) + "/" if default.is_relative_to(ROOT) else default
        elif isinstance(default, bool):
            default = "on" if default else "off"
        elif isinstance(default, float):
            default = f"{default:g}"
        rows.append((f.metadata["env"], str(default), f.metadata["help"]))
    meanings = _engine_meanings()
    for f in fields(Settings):
        default = f.default
        if f.name == "home":
            default = "data/ (in a checkout), else ~/.pipulate"
        elif default is None:  # found at run time, or the embedded default: said in words
            default = {"user": "JUPYTERHUB_USER, else the login name"}.get(f.name, "unset")
        elif isinstance(default, bool):
            default = "on" if default else "off"
        rows.append((Settings.env_name(f.name), str(default),
                     meanings.get(f.name, "(undocumented: see pipulate/settings.py)")))
    return rows
