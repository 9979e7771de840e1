# The workstation's Jupyter server settings. `pipulate up` points JUPYTER_CONFIG_DIR at this
# folder, so the user's ~/.jupyter is neither read nor changed. Values that change per start
# (port, notebooks folder, token) come as command-line flags and JUPYTER_TOKEN.
c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

c.ServerApp.ip = "127.0.0.1"
# A taken port is an error, not a silent move to the next one: the printed URL must be right.
c.ServerApp.port_retries = 0
# `pipulate up` opens both URLs itself, once both answer.
c.ServerApp.open_browser = False

# share/kernels/python3 (first on JUPYTER_PATH) is the stock kernel plus the pipulate extension.
c.MappingKernelManager.default_kernel_name = "python3"

# Every save also keeps a version for `pipulate recover versions` (see pipulate/jupyter/hooks.py).
c.FileContentsManager.post_save_hook = "pipulate.jupyter.hooks.post_save_hook"

# The endpoints the JupyterLab extension uses (/pipulate/...; pipulate/jupyter/server/). A plain
# pip install enables it through jupyter-config/jupyter_server_config.d/pipulate.json instead.
c.ServerApp.jpserver_extensions.update({"pipulate.jupyter.server": True})
