"""The workstation's Jupyter set-up: a config folder, a kernel spec, and the environment
that points JupyterLab at them, so the user's ``~/.jupyter`` and ``~/.ipython`` stay untouched.

- ``config/`` is used as ``JUPYTER_CONFIG_DIR``: server settings (127.0.0.1, no port
  drifting, the default kernel, the save hook that keeps versions for recovery), and
  ``labconfig/default_setting_overrides.json``: JupyterLab's defaults the workstation changes
  (never ask about, nor fetch, Jupyter news: it is offline).
- ``share/`` is put first on ``JUPYTER_PATH``: its ``kernels/python3`` replaces the stock
  Python kernel with one that loads the ``pipulate`` IPython extension at start.
- Everything JupyterLab writes (settings, workspaces, trust database) goes under
  ``$PIPULATE_HOME/jupyter``; kernel connection files stay in the usual runtime folder
  (``jupyter --runtime-dir``) so ``pipulate recover live`` finds running kernels.
- ``IPYTHONDIR`` is left alone: kernels write IPython's history to ``~/.ipython`` (or
  ``$IPYTHONDIR``) as always, which is where ``pipulate recover`` reads it.
"""
from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG_DIR = HERE / "config"
SHARE_DIR = HERE / "share"
KERNEL_NAME = "python3"


def jupyter_env(home: Path) -> dict[str, str]:
    """The environment variables that make a JupyterLab process (started from this one's
    environment) use the workstation's set-up. Only the returned keys change."""
    from jupyter_core.paths import jupyter_runtime_dir

    jupyter_home = Path(home) / "jupyter"
    path = [str(SHARE_DIR)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    return {
        "JUPYTER_CONFIG_DIR": str(CONFIG_DIR),
        "JUPYTER_PATH": os.pathsep.join(path),
        # Computed before JUPYTER_DATA_DIR moves: connection files stay where every other
        # Jupyter tool (and `pipulate recover live`) looks for them.
        "JUPYTER_RUNTIME_DIR": jupyter_runtime_dir(),
        "JUPYTER_DATA_DIR": str(jupyter_home / "data"),
        "JUPYTERLAB_SETTINGS_DIR": str(jupyter_home / "lab" / "user-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(jupyter_home / "lab" / "workspaces"),
    }
