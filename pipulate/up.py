"""``pipulate up``: the web app and JupyterLab side by side, wired to one ``PIPULATE_HOME``.

Both run as child processes on 127.0.0.1 (each in its own process group), with one
environment: the workstation's settings (``config.py``'s ``WorkstationConfig.to_env``)
so the server, JupyterLab and every kernel resolve the same data folder, and the
Jupyter set-up of ``pipulate.jupyter`` so JupyterLab never reads or changes the
user's ``~/.jupyter``. It waits until both answer, prints both URLs, and stops both on
Ctrl-C or SIGTERM. If one dies, the other is stopped and the exit code says which.

Settings: the flags below, else the environment, else ``config.py``'s defaults.
This module runs from the workstation's checkout and loads its ``config.py`` by path
(the package itself never imports it).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import webbrowser
from dataclasses import dataclass, replace
from pathlib import Path

from . import access
from .home import checkout_root, keep_private

# Exit codes: which way it ended.
EXIT_STOPPED = 0         # stopped on Ctrl-C / SIGTERM
EXIT_CANNOT_START = 1    # a port is taken, server.py is missing, a setting is bad, or a timeout
EXIT_WEB_DIED = 3        # the web app exited on its own; JupyterLab was stopped
EXIT_JUPYTER_DIED = 4    # JupyterLab exited on its own; the web app was stopped

POLL = 0.2


class StartError(Exception):
    """The workstation cannot start; the message says why and what to do."""


class ChildDied(Exception):
    def __init__(self, child: "Child"):
        self.child = child


# --- settings -----------------------------------------------------------------------------

def load_workstation_config(root: Path | None = None):
    """The checkout's ``config.py`` module, loaded by path, or None without a checkout."""
    root = checkout_root() if root is None else root
    path = root / "config.py" if root else None
    if path is None or not path.is_file():
        return None
    name = "_pipulate_workstation_config"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _package_rows() -> list[tuple[str, str, str]]:
    """The settings table without a checkout: package defaults only."""
    from .settings import Settings

    rows = [("PIPULATE_PORT", "5001", "the web app's port"),
            ("PIPULATE_JUPYTER_PORT", "8888", "JupyterLab's port")]
    for name in Settings.__dataclass_fields__:
        rows.append((Settings.env_name(name), str(getattr(Settings, name, "")),
                     "see pipulate/settings.py"))
    return rows


def settings_help() -> str:
    try:
        module = load_workstation_config()
        rows = module.describe() if module else _package_rows()
    except Exception:  # a bad environment must not break `pipulate --help`
        rows = _package_rows()
    width = max(len(env) for env, _, _ in rows)
    lines = ["settings (environment variables; the flags above override them):"]
    lines += [f"  {env:<{width}}  {meaning} (default {default})" for env, default, meaning in rows]
    lines += ["", "exit codes: 0 stopped by Ctrl-C/SIGTERM, 1 could not start, "
              "3 the web app died, 4 JupyterLab died"]
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = ("Start the web app and JupyterLab side by side on 127.0.0.1, "
                          "sharing one PIPULATE_HOME. Ctrl-C stops both.")
    parser.add_argument("--port", type=int, metavar="N",
                        help="the web app's port (default: PIPULATE_PORT, else 5001)")
    parser.add_argument("--jupyter-port", type=int, metavar="N",
                        help="JupyterLab's port (default: PIPULATE_JUPYTER_PORT, else 8888)")
    parser.add_argument("--no-browser", action="store_true",
                        help="do not open the two URLs in a browser")
    parser.add_argument("--reload", action="store_true",
                        help="restart the web app when a Python file of it changes (apps/, pipulate/, server.py, config.py)")
    parser.epilog = settings_help()
    parser.set_defaults(func=run)


# --- ports --------------------------------------------------------------------------------

def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: a port in TIME_WAIT is free, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def next_free_port(host: str, port: int, avoid: set[int] = frozenset()) -> int | None:
    for candidate in range(port + 1, min(port + 100, 65536)):
        if candidate not in avoid and port_free(host, candidate):
            return candidate
    return None


def check_ports(host: str, ports: dict[str, tuple[int, str]]) -> None:
    """Raise StartError naming the taken port, its user, and a free port to use instead."""
    values = [port for port, _ in ports.values()]
    if len(set(values)) != len(values):
        raise StartError(f"the web app and JupyterLab cannot share port {values[0]}: "
                         "give them different ports (--port, --jupyter-port)")
    for label, (port, flag) in ports.items():
        if not 0 < port < 65536:
            raise StartError(f"{label} port {port} is not a valid port (1-65535)")
        if not port_free(host, port):
            free = next_free_port(host, port, set(values))
            hint = f" (port {free} is free: pipulate up {flag} {free})" if free else ""
            raise StartError(
                f"port {port} on {host} is already in use, so {label} cannot start there. "
                f"Is another workstation or server running? Stop it, or pick another port "
                f"with {flag} N{hint}.")


# --- children -----------------------------------------------------------------------------

@dataclass
class Child:
    label: str               # what users call it: "the web app", "JupyterLab"
    argv: list[str]
    url: str                 # what is printed
    probe: str               # what is polled until it answers
    log_path: Path
    exit_code: int           # what `pipulate up` returns if this child dies
    headers: dict | None = None
    proc: subprocess.Popen | None = None

    def start(self, env: dict[str, str], cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        with open(self.log_path, "wb") as log:
            # Own process group: Ctrl-C at the terminal reaches only `pipulate up`, which
            # then stops each child (and whatever it started).
            self.proc = subprocess.Popen(self.argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def answers(self) -> bool:
        request = urllib.request.Request(self.probe, headers=self.headers or {})
        try:
            with urllib.request.urlopen(request, timeout=2):
                return True
        except urllib.error.HTTPError as exc:
            # An HTTP answer is an answer, but a refused token means the URL we print is wrong.
            return exc.code not in (401, 403)
        except (OSError, ValueError):
            return False

    def dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])

    def terminate(self) -> list:
        """SIGTERM the child's process group; return what it had started, to reap later
        (Jupyter kernels run in sessions of their own, outside the group)."""
        if self.proc is None:
            return []
        descendants = _descendants(self.proc.pid)
        _signal_group(self.proc.pid, signal.SIGTERM)
        return descendants

    def finish(self, deadline: float) -> None:
        """Wait for the child until ``deadline``, then SIGKILL its group."""
        if self.proc is None:
            return
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(self.proc.pid, signal.SIGKILL)  # the child if it is still there, and stragglers
        self.proc.wait(5)


def stop_all(children: list[Child], timeout: float) -> None:
    """Stop every child at once: SIGTERM, up to ``timeout`` seconds of grace, then SIGKILL."""
    descendants = [p for child in children for p in child.terminate()]
    deadline = time.monotonic() + timeout
    for child in children:
        child.finish(deadline)
    _reap(descendants, timeout)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(pid: int) -> list:
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


def _reap(processes: list, timeout: float) -> None:
    if not processes:
        return
    import psutil

    alive = [p for p in processes if p.is_running()]
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(alive, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


# --- the command --------------------------------------------------------------------------

class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


# The signal that asked us to stop. The handler only records it; the loops below check it
# at safe points, so no child can be half-started when the stop begins.
_stop_requested: list[int] = []


def _record_stop(signum, frame):
    _stop_requested.append(signum)


def _check_stop() -> None:
    if _stop_requested:
        raise _Stop(_stop_requested[0])


def build_children(cfg, root: Path, token: str, reload: bool = False) -> list[Child]:
    home = cfg.home
    logs = home / "logs"
    host = access.url_host(cfg.host)
    web_url = f"http://{host}:{cfg.port}/"
    lab_url = f"http://{host}:{cfg.jupyter_port}/"
    web = Child(
        label="the web app",
        # The token reaches the server in its environment (PIPULATE_TOKEN), never in argv.
        argv=[sys.executable, str(root / "server.py"), "--host", cfg.host, "--port", str(cfg.port),
              "--jupyterlab", f"{lab_url}lab"] + ([] if reload else ["--no-reload"]),
        url=access.with_token(web_url, token), probe=web_url + "healthz", log_path=logs / "web.log",
        exit_code=EXIT_WEB_DIED)
    lab = Child(
        label="JupyterLab",
        argv=[sys.executable, "-m", "jupyterlab", "--no-browser",
              f"--ServerApp.ip={cfg.host}", f"--ServerApp.port={cfg.jupyter_port}",
              "--ServerApp.port_retries=0", f"--ServerApp.root_dir={cfg.notebooks_dir}"]
             + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        url=access.with_token(f"{lab_url}lab", token), probe=f"{lab_url}api/status",
        headers={"Authorization": f"token {token}"}, log_path=logs / "jupyter.log",
        exit_code=EXIT_JUPYTER_DIED)
    return [web, lab]


def child_env(cfg, root: Path, token: str, web_url: str) -> dict[str, str]:
    """The children's environment. One token for both servers (see ``pipulate.access``), in
    the environment, not argv, so `ps` does not show it; ``web_url`` (with the token) becomes
    JupyterLab's Help-menu link to the web app."""
    from .jupyter import jupyter_env
    from .jupyter.links import write_link_config

    env = dict(os.environ)
    env.update(cfg.to_env())
    env.update(jupyter_env(cfg.home))
    # The checkout first on the path: kernels and the server import this checkout's
    # pipulate (and `pip`) with no install step.
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["JUPYTER_TOKEN"] = env["PIPULATE_TOKEN"] = token
    links = write_link_config(cfg.home, web_url)
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        [str(links)] + [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("JUPYTER_TOKEN_FILE", None)
    return env


def wait_until_ready(children: list[Child], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(children)
    while pending:
        _check_stop()
        for child in children:
            if child.dead():
                raise ChildDied(child)
        pending = [child for child in pending if not child.answers()]
        if not pending:
            return
        if time.monotonic() > deadline:
            names = " and ".join(child.label for child in pending)
            raise StartError(f"{names} did not answer within {timeout:g} s "
                             f"(PIPULATE_STARTUP_TIMEOUT); see {pending[0].log_path}")
        time.sleep(POLL)


def _has_gui_browser() -> bool:
    """Without a display, Python's webbrowser may pick a text browser that takes over this
    terminal: only open one where a graphical browser can be."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def workstation_config(args: argparse.Namespace, root: Path):
    """config.py's defaults, overridden by the environment, overridden by the flags."""
    cfg = load_workstation_config(root).WorkstationConfig.from_env()
    overrides = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.jupyter_port is not None:
        overrides["jupyter_port"] = args.jupyter_port
    if args.no_browser:
        overrides["open_browser"] = False
    return replace(cfg, **overrides)


def say(text: str, stream=None) -> None:
    print(f"pipulate up: {text}", file=stream or sys.stdout, flush=True)


def provide_notebooks(root: Path, folder: Path) -> None:
    """Give the user a copy of every shipped notebook they lack (``pipulate.user_notebooks``)."""
    from .user_notebooks import hand_over

    shipped = root / "notebooks"
    try:
        done = hand_over(shipped, folder)
    except OSError as exc:
        raise StartError(f"cannot set up the notebooks folder {folder} (PIPULATE_NOTEBOOKS_DIR): {exc}") from None
    if done.same_folder:
        say(f"PIPULATE_NOTEBOOKS_DIR is the shipped notebooks' folder {shipped}: using them changes "
            "tracked files (unset it to work on your own copies)")
    if done.copied:
        say(f"copied to {folder}: {', '.join(done.copied)}")
    for template, new in done.offered:
        say(f"notebooks/{template} changed in this update; your {template} is kept as it is, "
            f"the new version is {new}")


def run(args: argparse.Namespace) -> int:
    root = checkout_root()
    if root is None:
        say("this copy of pipulate is installed without the workstation's checkout, so there is "
            "no web app to start. Clone the workstation and run ./install.sh there.", sys.stderr)
        return EXIT_CANNOT_START
    if not (root / "server.py").is_file():
        say(f"no server.py in the checkout {root}: the web app cannot start.", sys.stderr)
        return EXIT_CANNOT_START
    try:
        cfg = workstation_config(args, root)
        home = cfg.home  # made if missing: an unwritable home is reported here
    except (ValueError, OSError, AttributeError) as exc:
        say(f"bad setting: {exc}", sys.stderr)
        return EXIT_CANNOT_START

    if keep_private(home):
        say(f"{home} is now readable by you only (it holds your store and kernel states)")
    warning = access.exposure_warning(cfg.host, token_explicit=bool(cfg.token))
    if warning:
        say(warning, sys.stderr)
    try:
        check_ports(cfg.host, {"the web app": (cfg.port, "--port"),
                               "JupyterLab": (cfg.jupyter_port, "--jupyter-port")})
        provide_notebooks(root, Path(cfg.notebooks_dir))
    except StartError as exc:
        say(str(exc), sys.stderr)
        return EXIT_CANNOT_START

    token = cfg.token or access.new_token()
    children = build_children(cfg, root, token, reload=args.reload)
    env = child_env(cfg, root, token, children[0].url)
    _stop_requested.clear()
    old_handlers = {sig: signal.signal(sig, _record_stop)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        say(f"starting the web app and JupyterLab (data: {home})")
        for child in children:
            _check_stop()
            child.start(env, root)
        wait_until_ready(children, cfg.startup_timeout)
        web, lab = children
        say(f"web app:    {web.url}")
        say(f"JupyterLab: {lab.url}")
        say(f"notebooks:  {cfg.notebooks_dir} (yours; the shipped ones stay in {root / 'notebooks'})")
        access.write_urls(home, {"web app": web.url, "JupyterLab": lab.url})
        say(f"logs in {home / 'logs'}; `pipulate url` prints the URLs again; Ctrl-C stops both.")
        if cfg.open_browser and _has_gui_browser():
            for child in children:
                try:
                    webbrowser.open(child.url)
                except Exception:
                    pass
        while True:
            _check_stop()
            for child in children:
                if child.dead():
                    raise ChildDied(child)
            time.sleep(POLL)
    except _Stop as stop:
        say(f"{signal.Signals(stop.signum).name}: stopping both")
        code = EXIT_STOPPED
    except ChildDied as died:
        child = died.child
        others = " and ".join(c.label for c in children if c is not child)
        say(f"{child.label} exited with code {child.proc.returncode}; stopping {others}. "
            f"Last lines of {child.log_path}:\n{child.log_tail()}", sys.stderr)
        code = child.exit_code
    except StartError as exc:
        say(str(exc), sys.stderr)
        code = EXIT_CANNOT_START
    finally:
        # A second Ctrl-C while stopping must not leave orphans behind.
        for sig in old_handlers:
            signal.signal(sig, signal.SIG_IGN)
        try:
            access.remove_urls(home)
            stop_all(children, cfg.stop_timeout)
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
    say("stopped")
    return code
