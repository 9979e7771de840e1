# The workstation's JupyterLab settings (see jupyter_server_config.py beside this file).
c = get_config()  # noqa: F821

# Offline: no news feed and no update check reaching out to the internet.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
