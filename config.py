"""The workstation's settings, in one typed place.

Every key has a default and an environment variable that overrides it. The
``pipulate`` package never imports this file: the workstation hands these
settings to the package and to its child processes as environment variables
(``WorkstationConfig.to_env``).

Keys (environment variable in brackets):

- ``port`` [PIPULATE_PORT]: the web app's port. Default 5001.
- ``jupyter_port`` [PIPULATE_JUPYTER_PORT]: JupyterLab's port. Default 8888.
- ``host`` [PIPULATE_HOST]: the address both listen on. Default 127.0.0.1.
- ``notebooks_dir`` [PIPULATE_NOTEBOOKS_DIR]: the folder JupyterLab opens. Default notebooks/.
- ``engine``: the state engine's own settings (see ``pipulate.settings.Settings``):
  PIPULATE_HOME, PIPULATE_INLINE_LIMIT, PIPULATE_BUSY_TIMEOUT_MS, PIPULATE_COMPRESS,
  PIPULATE_AUTOSAVE, PIPULATE_AUTORESTORE, PIPULATE_KEEP_VERSIONS,
  PIPULATE_MAX_VARIABLE_BYTES, PIPULATE_NOTEBOOK_VERSIONS_KEEP.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipulate.home import resolve_home
from pipulate.settings import Settings

ROOT = Path(__file__).resolve().parent


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


@dataclass(frozen=True)
class WorkstationConfig:
    port: int = 5001
    jupyter_port: int = 8888
    host: str = "127.0.0.1"
    notebooks_dir: Path = ROOT / "notebooks"
    engine: Settings = field(default_factory=Settings)

    @property
    def home(self) -> Path:
        return resolve_home(self.engine.home)

    @classmethod
    def from_env(cls) -> "WorkstationConfig":
        return cls(
            port=_env_int("PIPULATE_PORT", cls.port),
            jupyter_port=_env_int("PIPULATE_JUPYTER_PORT", cls.jupyter_port),
            host=os.environ.get("PIPULATE_HOST") or cls.host,
            notebooks_dir=Path(os.environ.get("PIPULATE_NOTEBOOKS_DIR") or ROOT / "notebooks"),
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
        return env


config = WorkstationConfig.from_env()
