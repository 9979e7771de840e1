"""JupyterHub in front of the workstation: the hub's settings and what each user's JupyterLab gets.

``deploy/jupyterhub/jupyterhub_config.py`` calls ``configure(c)``; docs/jupyterhub.md is the manual.
Nothing here imports JupyterHub (classes are named by their dotted paths), so the package stays
importable without it.

Each user's server is ``jupyterhub-singleuser`` (JupyterLab behind the hub's proxy at
``/user/NAME/``; ``hub_singleuser`` starts the user's web app beside it, behind the same proxy
at ``/user/NAME/pipulate-web/``) with the environment
``pipulate up`` gives JupyterLab (``jupyter_env``: the shipped kernel spec first on
JUPYTER_PATH, the workstation's Jupyter config with the server extension and the save hook),
its Jupyter files under the user's own ``.pipulate`` folder, and
the store settings: PIPULATE_HOME from a template, PIPULATE_USER = the hub user, and the hub's
PIPULATE_* settings (PIPULATE_DATABASE_URL, PIPULATE_BLOBS_URL, ...) where ``{username}`` is
replaced, and where the object storage is (S3_LOCATION), overridden by the user's own env file
(their database and storage credentials).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from . import jupyter_env

# name -> (default, meaning). docs/jupyterhub.md's table lists every one (tests/test_docs.py).
SETTINGS = {
    "PIPULATE_HUB_IP": ("127.0.0.1", "the address the hub's proxy listens on (users' browsers come here)"),
    "PIPULATE_HUB_PORT": ("8000", "the proxy's public port"),
    "PIPULATE_HUB_API_PORT": ("8081", "the hub's own port on 127.0.0.1 (the proxy and the users' servers talk to it)"),
    "PIPULATE_HUB_PROXY_API_PORT": ("8001", "the proxy's REST API port on 127.0.0.1 (only the hub uses it)"),
    "PIPULATE_HUB_DATA": ("~/.pipulate-hub", "the hub's folder: its database, cookie secret, the users' env files "
                          "and, with the same-user spawner, the users' home folders"),
    "PIPULATE_HUB_AUTHENTICATOR": ("pam", "`pam` (the machine's unix accounts), `shared-password` "
                                   "(one password for every listed user; PIPULATE_HUB_PASSWORD), "
                                   "or a dotted class path"),
    "PIPULATE_HUB_PASSWORD": ("", "the shared password (8 characters or more) of `shared-password`"),
    "PIPULATE_HUB_USERS": ("", "the users allowed in, comma-separated (required: no one is let in by default)"),
    "PIPULATE_HUB_ADMINS": ("", "hub admins, comma-separated"),
    "PIPULATE_HUB_SPAWNER": ("local", "`local`: each hub user is a unix user and their server runs as them; "
                             "`same-user`: every server runs as the hub's unix user, each in its own home "
                             "folder under PIPULATE_HUB_DATA/users"),
    "PIPULATE_HUB_USER_HOME": ("{home}/.pipulate", "each user's PIPULATE_HOME; `{home}` is their home folder, "
                               "`{username}` their hub name"),
    "PIPULATE_HUB_USER_ENV_DIR": ("PIPULATE_HUB_DATA/user-env", "a folder of `NAME.env` files: settings for "
                                  "one user only (their database credentials)"),
    "PIPULATE_HUB_PROXY": ("deploy/jupyterhub/node_modules/.bin/configurable-http-proxy, else on PATH",
                           "the configurable-http-proxy to run"),
}
AUTHENTICATORS = {"pam": "jupyterhub.auth.PAMAuthenticator",
                  "shared-password": "jupyterhub.authenticators.shared.SharedPasswordAuthenticator"}
SPAWNERS = {"local": "jupyterhub.spawner.LocalProcessSpawner",
            "same-user": "jupyterhub.spawner.SimpleLocalProcessSpawner"}
# Per-user or per-start values, set for each user below or by hub_singleuser: the hub's own
# (and its PIPULATE_HUB_* settings) are not handed on.
NOT_HANDED_ON = {"PIPULATE_HOME", "PIPULATE_USER", "PIPULATE_TOKEN", "PIPULATE_NOTEBOOKS_DIR",
                 "PIPULATE_NOTEBOOK", "PIPULATE_PORT", "PIPULATE_HOST", "PIPULATE_JUPYTER_PORT",
                 "PIPULATE_ROOT_PATH", "PIPULATE_WEB_APP_URL"}
# Where the team's object storage is, from the hub's environment, for every user: the blobs'
# endpoint and region (what docs/team-blobs.md has a workstation export). Keys are not among
# them: the hub's own stay the hub's; each user's go in their env file (or their ~/.aws).
S3_LOCATION = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
               "AWS_EC2_METADATA_DISABLED")
# Hub names become folder and file names: nothing that could climb out of a folder.
USERNAME = re.compile(r"[a-z0-9_][a-z0-9_.@-]*", re.I)


class HubSettingError(ValueError):
    """A PIPULATE_HUB_* setting is wrong; the message names it."""


@dataclass(frozen=True)
class HubSettings:
    ip: str
    port: int
    api_port: int
    proxy_api_port: int
    data: Path
    authenticator: str
    password: str
    users: tuple[str, ...]
    admins: tuple[str, ...]
    spawner: str
    user_home: str
    user_env_dir: Path
    proxy: str

    @classmethod
    def from_env(cls, environ=None) -> "HubSettings":
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return env.get(name, "").strip() or SETTINGS[name][0]

        def port(name: str) -> int:
            text = get(name)
            if not text.isdigit() or not 0 < int(text) < 65536:
                raise HubSettingError(f"{name} must be a port (1-65535), got {text!r}")
            return int(text)

        def names(name: str) -> tuple[str, ...]:
            found = tuple(n.strip() for n in env.get(name, "").split(",") if n.strip())
            for n in found:
                if not USERNAME.fullmatch(n):
                    raise HubSettingError(f"{name}: {n!r} is not a user name (letters, digits, _ . @ -)")
            return found

        data = Path(get("PIPULATE_HUB_DATA")).expanduser().absolute()
        auth = get("PIPULATE_HUB_AUTHENTICATOR")
        authenticator = AUTHENTICATORS.get(auth, auth)
        if "." not in authenticator:
            raise HubSettingError(f"PIPULATE_HUB_AUTHENTICATOR: {auth!r} is none of "
                                  f"{', '.join(AUTHENTICATORS)}, nor a dotted class path")
        password = env.get("PIPULATE_HUB_PASSWORD", "")
        if auth == "shared-password" and len(password) < 8:
            raise HubSettingError("PIPULATE_HUB_AUTHENTICATOR=shared-password needs PIPULATE_HUB_PASSWORD "
                                  "(8 characters or more)")
        spawner = get("PIPULATE_HUB_SPAWNER")
        if spawner not in SPAWNERS:
            raise HubSettingError(f"PIPULATE_HUB_SPAWNER must be one of {', '.join(SPAWNERS)}, got {spawner!r}")
        users = names("PIPULATE_HUB_USERS")
        if not users:
            raise HubSettingError("PIPULATE_HUB_USERS is empty: list the users allowed in (comma-separated)")
        user_home = get("PIPULATE_HUB_USER_HOME")
        try:
            user_home.format(username="u", home="/h")
        except (KeyError, IndexError, ValueError) as exc:
            raise HubSettingError(f"PIPULATE_HUB_USER_HOME: {user_home!r} may name only {{home}} and "
                                  f"{{username}} ({exc!r})") from None
        env_dir = env.get("PIPULATE_HUB_USER_ENV_DIR", "").strip()
        return cls(ip=get("PIPULATE_HUB_IP"), port=port("PIPULATE_HUB_PORT"), api_port=port("PIPULATE_HUB_API_PORT"),
                   proxy_api_port=port("PIPULATE_HUB_PROXY_API_PORT"), data=data, authenticator=authenticator,
                   password=password, users=users, admins=names("PIPULATE_HUB_ADMINS"), spawner=spawner,
                   user_home=user_home,
                   user_env_dir=Path(env_dir).expanduser().absolute() if env_dir else data / "user-env",
                   proxy=env.get("PIPULATE_HUB_PROXY", "").strip() or default_proxy())


def default_proxy() -> str:
    """The proxy `npm ci --prefix jupyterhub` installed in the checkout, else the one on PATH."""
    from ..home import checkout_root

    root = checkout_root()
    local = root / "deploy" / "jupyterhub" / "node_modules" / ".bin" / "configurable-http-proxy" if root else None
    if local and local.exists():
        return str(local)
    return shutil.which("configurable-http-proxy") or "configurable-http-proxy"


def configure(c, environ=None) -> HubSettings:
    """Fill JupyterHub's config object ``c`` from the PIPULATE_HUB_* settings."""
    hub = HubSettings.from_env(environ)
    hub.data.mkdir(parents=True, exist_ok=True)
    os.chmod(hub.data, 0o700)  # the hub's database and cookie secret
    c.JupyterHub.bind_url = f"http://{hub.ip}:{hub.port}"
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = hub.api_port
    c.JupyterHub.db_url = f"sqlite:///{hub.data / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(hub.data / "jupyterhub_cookie_secret")
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{hub.proxy_api_port}"
    c.ConfigurableHTTPProxy.command = [hub.proxy]
    c.ConfigurableHTTPProxy.pid_file = str(hub.data / "proxy.pid")

    c.JupyterHub.authenticator_class = hub.authenticator
    c.Authenticator.allowed_users = set(hub.users)
    c.Authenticator.admin_users = set(hub.admins)
    if hub.authenticator == AUTHENTICATORS["shared-password"]:
        c.SharedPasswordAuthenticator.user_password = hub.password

    c.JupyterHub.spawner_class = SPAWNERS[hub.spawner]
    # Each user's server is JupyterLab with the web app beside it (hub_singleuser.py), run by the
    # hub's own Python: this checkout's .venv, with pipulate and JupyterLab (PATH may not name it).
    c.Spawner.cmd = [sys.executable, "-m", "pipulate.jupyter.hub_singleuser"]
    c.Spawner.default_url = "/lab"
    c.Spawner.args = ["--allow-root"] if hub.spawner == "same-user" and os.geteuid() == 0 else []
    # A first start imports JupyterLab and its extensions: on a busy machine that takes a while.
    c.Spawner.start_timeout = 180
    c.Spawner.http_timeout = 180
    if hub.spawner == "same-user":
        c.SimpleLocalProcessSpawner.home_dir_template = str(hub.data / "users" / "{username}")
    c.Spawner.pre_spawn_hook = lambda spawner: prepare_spawn(spawner, hub, os.environ if environ is None else environ)
    return hub


def user_home_folder(spawner) -> Path:
    """The user's home folder: the same-user spawner's own, else their unix account's."""
    folder = getattr(spawner, "home_dir", None)
    if folder:
        return Path(folder)
    import pwd

    return Path(pwd.getpwnam(spawner.user.name).pw_dir)


def prepare_spawn(spawner, hub: HubSettings, hub_env) -> None:
    """JupyterHub's pre-spawn hook: the user's environment (a new dict: the configured one is
    shared by every spawner)."""
    name = spawner.user.name
    home = user_home_folder(spawner)
    spawner.environment = {**spawner.environment, **user_environment(name, home, hub, hub_env)}


def user_environment(name: str, home: Path, hub: HubSettings, hub_env) -> dict[str, str]:
    """What user ``name`` (home folder ``home``) gets on top of JupyterHub's own variables."""
    if not USERNAME.fullmatch(name):
        raise HubSettingError(f"hub user {name!r}: not a name pipulate can make folders of")
    fields = {"username": name, "home": str(home)}
    env = {key: value.replace("{username}", name) for key, value in hub_env.items()
           if key.startswith("PIPULATE_") and not key.startswith("PIPULATE_HUB_")
           and key not in NOT_HANDED_ON}
    env.update({key: hub_env[key] for key in S3_LOCATION if hub_env.get(key)})
    env.update(read_env_file(hub.user_env_dir / f"{name}.env"))
    pipulate_home = Path(hub.user_home.format(**fields)).expanduser()
    # JupyterLab's settings, workspaces and running kernels' files: the user's own, even when
    # PIPULATE_HOME is shared.
    env.update(jupyter_env(home / ".pipulate"))
    env["JUPYTER_RUNTIME_DIR"] = str(home / ".pipulate" / "jupyter" / "runtime")
    env.update(PIPULATE_HOME=str(pipulate_home), PIPULATE_USER=name, PIPULATE_NOTEBOOKS_DIR=str(home))
    return env


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines); a missing file is no settings. It holds
    credentials: one that others may read is refused, not used."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    if path.stat().st_mode & 0o077:
        raise HubSettingError(f"{path} holds a user's credentials but others may read or change it: "
                              f"chmod 600 {path}")
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise HubSettingError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        values[key] = value.strip()
    return values
