# JupyterHub in front of the Pipulate workstation: each hub user gets their own JupyterLab with
# the workstation's kernels, its JupyterLab extension and the team store settings.
#
#   .venv/bin/jupyterhub -f deploy/jupyterhub/jupyterhub_config.py     (or: ./install.sh hub)
#
# Every setting comes from the environment (PIPULATE_HUB_*, and the PIPULATE_* store settings
# that are handed on to each user): see docs/jupyterhub.md. What it sets up is in
# pipulate/jupyter/hub.py, so this file stays a switch board; add your own JupyterHub settings
# below the call, they win.
import sys

from pipulate.jupyter.hub import HubSettingError, configure

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)
try:
    configure(c)
except HubSettingError as exc:  # a wrong setting: its one-line reason, not a traceback
    sys.exit(f"jupyterhub_config.py: {exc}")
