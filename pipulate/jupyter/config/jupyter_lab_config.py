# The workstation's JupyterLab settings (see jupyter_server_config.py beside this file).
c = get_config()  # noqa: F821

# Offline: no news feed and no update check reaching out to the internet. These two stop
# the server from fetching; the question "Would you like to get notified about official
# Jupyter news?" is the browser's, answered by labconfig/default_setting_overrides.json
# beside this file (fetchNews "false": JupyterLab reads it from every Jupyter config folder).
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
# Extensions come from the lock file, like every other package: none installed from the UI
# (which would also reach out to PyPI).
c.LabApp.extension_manager = "readonly"
