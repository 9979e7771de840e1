"""The hub's settings (PIPULATE_HUB_*) and each user's environment (pipulate/jupyter/hub.py):
what a user's JupyterLab gets, and a wrong setting named in one line when the hub starts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipulate.jupyter import SHARE_DIR
from pipulate.jupyter.hub import HubSettingError, HubSettings, read_env_file, user_environment

from .test_jupyterhub import CONFIG

pytestmark = pytest.mark.backends("embedded", reason="checks the hub's settings; opens no store")

GOOD = {"PIPULATE_HUB_USERS": "alice,bob", "PIPULATE_HUB_DATA": "/srv/hub"}


@pytest.mark.parametrize("change, message", [
    ({"PIPULATE_HUB_USERS": ""}, "PIPULATE_HUB_USERS is empty"),
    ({"PIPULATE_HUB_USERS": "alice,../root"}, "'../root' is not a user name"),
    ({"PIPULATE_HUB_PORT": "80a"}, "PIPULATE_HUB_PORT must be a port"),
    ({"PIPULATE_HUB_API_PORT": "70000"}, "PIPULATE_HUB_API_PORT must be a port"),
    ({"PIPULATE_HUB_AUTHENTICATOR": "shared-password", "PIPULATE_HUB_PASSWORD": "short"},
     "needs PIPULATE_HUB_PASSWORD (8 characters or more)"),
    ({"PIPULATE_HUB_AUTHENTICATOR": "ldap"}, "PIPULATE_HUB_AUTHENTICATOR: 'ldap' is none of"),
    ({"PIPULATE_HUB_SPAWNER": "docker"}, "PIPULATE_HUB_SPAWNER must be one of local, same-user"),
    ({"PIPULATE_HUB_USER_HOME": "/srv/{user}"}, "PIPULATE_HUB_USER_HOME: '/srv/{user}' may name only"),
])
def test_a_wrong_setting_is_named(change, message):
    with pytest.raises(HubSettingError) as raised:
        HubSettings.from_env({**GOOD, **change})
    assert message in str(raised.value)


def test_the_defaults():
    hub = HubSettings.from_env(GOOD)
    assert (hub.ip, hub.port, hub.api_port, hub.proxy_api_port) == ("127.0.0.1", 8000, 8081, 8001)
    assert hub.authenticator == "jupyterhub.auth.PAMAuthenticator"
    assert hub.spawner == "local" and hub.users == ("alice", "bob")
    assert hub.user_env_dir == Path("/srv/hub/user-env") and hub.user_home == "{home}/.pipulate"


def test_a_users_environment(tmp_path):
    env_dir = tmp_path / "user-env"
    env_dir.mkdir()
    (env_dir / "alice.env").write_text("# alice's own credentials\n\n"
                                       "PIPULATE_DATABASE_URL = postgresql://alice:s3cret@db/pipulate\n")
    (env_dir / "alice.env").chmod(0o600)
    hub = HubSettings.from_env({**GOOD, "PIPULATE_HUB_USER_ENV_DIR": str(env_dir)})
    hub_env = {"PIPULATE_DATABASE_URL": "postgresql://{username}@db/pipulate",
               "PIPULATE_BLOBS_URL": "s3://team/{username}", "PIPULATE_KEEP_VERSIONS": "5",
               "PIPULATE_NOTEBOOK_VERSIONS_KEEP": "7", "PIPULATE_PORT": "5001",
               "PIPULATE_HUB_PASSWORD": "not for users", "PIPULATE_HOME": "/hub/own", "PIPULATE_TOKEN": "hub's",
               "AWS_SECRET_ACCESS_KEY": "the hub's own", "AWS_ACCESS_KEY_ID": "the hub's own too",
               "AWS_ENDPOINT_URL": "http://storage.internal:8333", "AWS_DEFAULT_REGION": "eu-1", "PATH": "/usr/bin"}
    home = tmp_path / "alice"
    alice = user_environment("alice", home, hub, hub_env)
    assert alice["PIPULATE_DATABASE_URL"] == "postgresql://alice:s3cret@db/pipulate"  # her file wins
    assert alice["PIPULATE_BLOBS_URL"] == "s3://team/alice" and alice["PIPULATE_KEEP_VERSIONS"] == "5"
    assert alice["PIPULATE_NOTEBOOK_VERSIONS_KEEP"] == "7"
    assert alice["PIPULATE_USER"] == "alice" and alice["PIPULATE_HOME"] == str(home / ".pipulate")
    assert alice["PIPULATE_NOTEBOOKS_DIR"] == str(home)
    # Where the storage is, for everyone; the hub's keys are its own.
    assert alice["AWS_ENDPOINT_URL"] == "http://storage.internal:8333" and alice["AWS_DEFAULT_REGION"] == "eu-1"
    for kept_back in ("PIPULATE_HUB_PASSWORD", "PIPULATE_TOKEN", "PIPULATE_PORT", "AWS_SECRET_ACCESS_KEY",
                      "AWS_ACCESS_KEY_ID", "PATH"):
        assert kept_back not in alice
    # The workstation's kernel spec first; JupyterLab's own files hers even if the store is shared.
    assert alice["JUPYTER_PATH"].split(os.pathsep)[0] == str(SHARE_DIR)
    assert alice["JUPYTER_RUNTIME_DIR"].startswith(str(home))
    assert alice["JUPYTERLAB_SETTINGS_DIR"].startswith(str(home))

    bob = user_environment("bob", tmp_path / "bob", hub, hub_env)  # no file: the template's URL
    assert bob["PIPULATE_DATABASE_URL"] == "postgresql://bob@db/pipulate" and bob["PIPULATE_USER"] == "bob"

    with pytest.raises(HubSettingError, match="not a name"):
        user_environment("../eve", tmp_path / "eve", hub, hub_env)


@pytest.mark.parametrize("text, mode, message", [
    ("PIPULATE_USER_OK=1\nexport FOO\n", 0o600, r"carol.env:2: expected KEY=VALUE, got 'export FOO'"),
    # It holds credentials: a file others may read is refused, not used.
    ("PIPULATE_DATABASE_URL=postgresql://carol:s3cret@db/p\n", 0o644, r"others may read .*: chmod 600 .*carol.env"),
])
def test_a_bad_env_file_is_named(tmp_path, text, mode, message):
    path = tmp_path / "carol.env"
    path.write_text(text)
    path.chmod(mode)
    with pytest.raises(HubSettingError, match=message):
        read_env_file(path)
    assert read_env_file(tmp_path / "missing.env") == {}


def test_the_hub_refuses_to_start_with_a_wrong_setting_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPULATE_")}
    env.update(HOME=str(tmp_path), PIPULATE_HUB_DATA=str(tmp_path / "hub"), PIPULATE_HUB_USERS="alice",
               PIPULATE_HUB_SPAWNER="kubernetes")
    done = subprocess.run([sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == ("jupyterhub_config.py: PIPULATE_HUB_SPAWNER must be one of local, same-user, "
                                   "got 'kubernetes'"), done.stderr


def test_each_user_s_web_app_is_proxied_under_their_server_with_the_token_added():
    """What hub_singleuser hands jupyter-server-proxy: the pinned version takes every key (an
    unknown one would be an error here, not a silently ignored setting)."""
    from jupyter_server_proxy.config import ServerProxy

    from pipulate.jupyter.hub_singleuser import proxy_config, root_path

    assert root_path({"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}) == "/user/alice/pipulate-web"
    prefixed = root_path({"JUPYTERHUB_SERVICE_PREFIX": "/hub-base/user/a%40b.org/"})
    assert prefixed == "/hub-base/user/a@b.org/pipulate-web"
    config = proxy_config(5123, "t" * 32)["ServerProxy"]["servers"]
    server = ServerProxy(servers=config).servers["pipulate-web"]
    assert (server.port, server.absolute_url, server.command) == (5123, True, [])
    assert server.request_headers_override == {"Authorization": "token " + "t" * 32}
    assert server.launcher_entry.enabled is False
