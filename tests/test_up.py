"""`pipulate up`: both servers, one home, a real kernel that JupyterLab started, clean stops.

Each test runs `python -m pipulate up` in a copy of the checkout (a "checkout-like
folder"), on free ports, with HOME pointed at a temporary folder so nothing of the
user's ~/.jupyter or ~/.ipython can be read or written.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from .conftest import REPO, copy_checkout, store_env
from .ports import free_ports

pytestmark = pytest.mark.backends("embedded", reason="supervises the two servers; opens no store")

START_TIMEOUT = 120


# --- helpers ------------------------------------------------------------------------------

def up_env(tmp_path: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "PIPULATE_", "PYTHONPATH"))}
    fake_home = tmp_path / "user-home"
    fake_home.mkdir(exist_ok=True)
    env.update(HOME=str(fake_home), PIPULATE_HOME=str(home), PIPULATE_STARTUP_TIMEOUT=str(START_TIMEOUT),
               PIPULATE_STOP_TIMEOUT="10", IPYTHONDIR=os.environ["IPYTHONDIR"], **store_env())
    return env


class Up:
    """A running `pipulate up`, its output lines collected as they come."""

    def __init__(self, checkout: Path, env: dict, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipulate", "up", "--no-browser", *args], cwd=checkout, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"pipulate up ended before {text!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout} s:\n" + "\n".join(self.lines))

    def output(self) -> str:
        while True:
            try:
                line = self._queue.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return "\n".join(self.lines)

    def tree(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill(self):
        if self.proc.poll() is None:
            for p in self.tree():
                try:
                    p.kill()
                except psutil.Error:
                    pass
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def checkout(tmp_path):
    return copy_checkout(tmp_path / "checkout")


@pytest.fixture
def running(request, tmp_path, checkout, isolated_home):
    """Start `pipulate up` (args from the test); kill whatever is left at the end."""
    started: list[Up] = []

    def start(*args: str, env: dict | None = None) -> Up:
        up = Up(checkout, env or up_env(tmp_path, isolated_home), *args)
        started.append(up)
        return up

    yield start
    for up in started:
        up.kill()


def get_json(url: str, token: str | None = None, method: str = "GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"token {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
        return json.loads(text) if text else None


async def run_cells(lab: str, token: str, kernel_id: str, sources: list[str]) -> list[dict]:
    """Execute ``sources`` over JupyterLab's kernel websocket; one result per cell:
    {"status", "outputs"} as nbformat output dicts."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    session = uuid.uuid4().hex
    ws_url = lab.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels?session_id={session}"
    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"}))
    results = []
    try:
        for source in sources:
            msg_id = uuid.uuid4().hex
            await conn.write_message(json.dumps({
                "header": {"msg_id": msg_id, "username": "test", "session": session,
                           "msg_type": "execute_request", "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": source, "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
            }))
            outputs, status, idle = [], None, False
            while status is None or not idle:
                raw = await asyncio.wait_for(conn.read_message(), 60)
                assert raw is not None, "the kernel websocket closed"
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "execute_reply":
                    status = content["status"]
                elif kind == "status" and content["execution_state"] == "idle":
                    idle = True
                elif kind == "stream":
                    outputs.append({"output_type": "stream", "name": content["name"], "text": content["text"]})
                elif kind in ("execute_result", "display_data"):
                    outputs.append({"output_type": kind, "data": content["data"], "metadata": {},
                                    **({"execution_count": content["execution_count"]}
                                       if kind == "execute_result" else {})})
                elif kind == "error":
                    outputs.append({"output_type": "error", "ename": content["ename"],
                                    "evalue": content["evalue"], "traceback": content["traceback"]})
            results.append({"status": status, "outputs": outputs})
    finally:
        conn.close()
    return results


def text_of(result: dict) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") or
                   (o.get("ename", "") + ": " + o.get("evalue", "")) for o in result["outputs"])


# --- the end-to-end test ------------------------------------------------------------------

@pytest.mark.backends("embedded", "team", reason="both servers write and read the store")
def test_up_runs_both_servers_sharing_one_home(running, isolated_home, checkout, tmp_path):
    web_port, lab_port = free_ports(2)
    package_files = sorted(p.relative_to(checkout) for p in (checkout / "pipulate" / "jupyter").rglob("*"))
    up = running("--port", str(web_port), "--jupyter-port", str(lab_port))
    web_url = up.wait_for("web app:").split()[-1]
    lab_line = up.wait_for("JupyterLab:")
    lab_url = lab_line.split()[-1]
    # One token, made for this start, for both.
    assert web_url.startswith(f"http://127.0.0.1:{web_port}/?token=")
    assert lab_url.startswith(f"http://127.0.0.1:{lab_port}/lab?token=")
    token = lab_url.split("token=", 1)[1]
    assert web_url.split("token=", 1)[1] == token and len(token) >= 32
    web = f"http://127.0.0.1:{web_port}/"
    lab = f"http://127.0.0.1:{lab_port}/"
    url_command = [sys.executable, "-m", "pipulate", "url"]
    url_env = {**os.environ, "PIPULATE_HOME": str(isolated_home)}
    urls = subprocess.run(url_command, cwd=checkout, env=url_env, capture_output=True, text=True, timeout=60)
    assert urls.stdout.splitlines() == [f"web app:    {web_url}", f"JupyterLab: {lab_url}"], urls

    # Both answer; the web app uses the same home.
    health = get_json(web + "healthz", token)
    assert Path(health["home"]) == isolated_home
    assert get_json(lab + "api/status", token)["started"]

    # The workstation's kernel spec is the default, and it loads the extension.
    specs = get_json(lab + "api/kernelspecs", token)
    assert specs["default"] == "python3"
    assert "--InteractiveShellApp.extra_extensions=pipulate" in specs["kernelspecs"]["python3"]["spec"]["argv"]

    # A notebook, saved through the contents API, run by a kernel JupyterLab starts for it.
    cells = ['from pipulate import pip\npip.set("hello", "first_name", "Ada")',
             'import os\nprint(os.environ["PIPULATE_HOME"])',
             'print("pipulate" in get_ipython().extension_manager.loaded)',
             'print(pip.get("hello", "first_name"))']
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (pipulate)", "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"c{i}", "source": s, "metadata": {}, "outputs": [],
                   "execution_count": None} for i, s in enumerate(cells)]}
    get_json(lab + "api/contents/e2e.ipynb", token, "PUT", {"type": "notebook", "content": notebook})
    session = get_json(lab + "api/sessions", token, "POST",
                       {"path": "e2e.ipynb", "name": "e2e.ipynb", "type": "notebook",
                        "kernel": {"name": "python3"}})
    results = asyncio.run(run_cells(lab, token, session["kernel"]["id"], cells))
    assert [r["status"] for r in results] == ["ok"] * len(cells), results
    assert text_of(results[1]).strip() == str(isolated_home)
    assert text_of(results[2]).strip() == "True", "the kernel did not load the pipulate extension"
    assert text_of(results[3]).strip() == "Ada"

    # Save it with its outputs: the save hook runs, and the save succeeds.
    for cell, result in zip(notebook["cells"], results):
        cell["outputs"] = result["outputs"]
    saved = get_json(lab + "api/contents/e2e.ipynb", token, "PUT", {"type": "notebook", "content": notebook})
    assert saved["type"] == "notebook"
    assert (checkout / "my_notebooks" / "e2e.ipynb").is_file()  # the user's folder, not the templates'
    # ... and kept a version for recovery, in the same home.
    versions = subprocess.run([sys.executable, "-m", "pipulate", "recover", "versions"], cwd=checkout,
                              env={**os.environ, "PIPULATE_HOME": str(isolated_home)},
                              capture_output=True, text=True, timeout=60)
    assert "e2e.ipynb" in versions.stdout, versions.stdout + versions.stderr

    # The web app shows what the notebook wrote.
    job = get_json(web + "api/jobs/hello", token)
    assert "Ada" in json.dumps(job)
    assert "first_name" in json.dumps(job)

    # SIGTERM stops both servers and the kernel; nothing is left behind.
    tree = up.tree()
    assert any(p.cmdline()[1:3] == ["-m", "jupyterlab"] for p in tree)
    assert any("ipykernel" in " ".join(p.cmdline()) for p in tree)
    asked = time.monotonic()
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(60) == 0, up.output()
    # Stopped by asking (well inside the grace period), not killed when it ran out.
    assert time.monotonic() - asked < 9
    assert "stopped" in up.output()
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    assert not _listening(web_port) and not _listening(lab_port)

    # Nothing of the user's home was read or written, nothing in the package folder changed.
    user_home = tmp_path / "user-home"
    assert not (user_home / ".jupyter").exists()
    assert not (user_home / ".ipython").exists()
    assert sorted(p.relative_to(checkout) for p in (checkout / "pipulate" / "jupyter").rglob("*")
                  if "__pycache__" not in p.parts) == [p for p in package_files if "__pycache__" not in p.parts]
    # JupyterLab's own files landed in PIPULATE_HOME; both logs are there.
    assert (isolated_home / "jupyter").is_dir()
    assert (isolated_home / "logs" / "web.log").is_file()
    assert (isolated_home / "logs" / "jupyter.log").is_file()
    # The workstation's Jupyter config folder is the one in use.
    assert "Extension Manager is 'readonly'" in (isolated_home / "logs" / "jupyter.log").read_text()
    # The token is in no log, and `pipulate url` knows the workstation has stopped.
    for log in (isolated_home / "logs").iterdir():
        assert token not in log.read_text(errors="replace"), log
    assert token not in up.output().replace(web_url, "").replace(lab_url, "")
    after = subprocess.run(url_command, cwd=checkout, env=url_env, capture_output=True, text=True, timeout=60)
    assert after.returncode == 1 and "no workstation is running" in after.stderr


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- a child that dies ---------------------------------------------------------------------

STUB_SERVER = '''
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass

port = int(sys.argv[sys.argv.index("--port") + 1])
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def test_when_jupyterlab_dies_the_web_app_is_stopped_and_the_exit_code_says_so(running, checkout):
    (checkout / "server.py").write_text(STUB_SERVER)  # the web app's own tests cover the real one
    web_port, lab_port = free_ports(2)
    up = running("--port", str(web_port), "--jupyter-port", str(lab_port))
    up.wait_for("JupyterLab:")
    tree = up.tree()
    lab = [p for p in tree if p.cmdline()[1:3] == ["-m", "jupyterlab"]]
    assert lab
    lab[0].kill()
    assert up.proc.wait(60) == 4
    out = up.output()
    assert "JupyterLab exited with code" in out and "stopping the web app" in out
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


def test_ctrl_c_stops_both(running, checkout):
    (checkout / "server.py").write_text(STUB_SERVER)
    web_port, lab_port = free_ports(2)
    up = running("--port", str(web_port), "--jupyter-port", str(lab_port))
    up.wait_for("JupyterLab:")
    tree = up.tree()
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(60) == 0
    assert "SIGINT: stopping both" in up.output()
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


# --- ports ---------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["--port", "--jupyter-port"])
def test_a_port_in_use_gives_a_clear_message(running, which):
    web_port, lab_port = free_ports(2)
    taken = web_port if which == "--port" else lab_port
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        up = running("--port", str(web_port), "--jupyter-port", str(lab_port))
        assert up.proc.wait(60) == 1
    out = up.output()
    label = "the web app" if which == "--port" else "JupyterLab"
    assert f"port {taken} on 127.0.0.1 is already in use, so {label} cannot start there" in out
    assert f"{which} N" in out
    assert "is free: pipulate up" in out


def test_the_same_port_twice_is_refused(running):
    (port,) = free_ports(1)
    up = running("--port", str(port), "--jupyter-port", str(port))
    assert up.proc.wait(60) == 1
    assert "cannot share port" in up.output()


@pytest.mark.parametrize("token", ["", "a-token-chosen-by-the-user"])
def test_every_address_without_a_chosen_token_warns(running, tmp_path, isolated_home, token):
    (port,) = free_ports(1)
    env = {**up_env(tmp_path, isolated_home), "PIPULATE_HOST": "0.0.0.0", "PIPULATE_TOKEN": token}
    up = running("--port", str(port), "--jupyter-port", str(port), env=env)  # stops at the port check
    assert up.proc.wait(60) == 1
    warned = "warning: PIPULATE_HOST=0.0.0.0 opens the web app and JupyterLab to every machine" in up.output()
    assert warned is not bool(token), up.output()


# --- settings ------------------------------------------------------------------------------

def _workstation_config():
    from pipulate.up import load_workstation_config

    return load_workstation_config(REPO)


def test_flags_override_the_environment_which_overrides_the_defaults(monkeypatch):
    import argparse

    from pipulate.up import workstation_config

    args = argparse.Namespace(port=None, jupyter_port=None, no_browser=False, reload=False)
    cfg = workstation_config(args, REPO)
    assert (cfg.port, cfg.jupyter_port, cfg.open_browser) == (5001, 8888, True)
    monkeypatch.setenv("PIPULATE_PORT", "6001")
    monkeypatch.setenv("PIPULATE_JUPYTER_PORT", "9001")
    monkeypatch.setenv("PIPULATE_OPEN_BROWSER", "off")
    monkeypatch.setenv("PIPULATE_KEEP_VERSIONS", "7")
    cfg = workstation_config(args, REPO)
    assert (cfg.port, cfg.jupyter_port, cfg.open_browser, cfg.engine.keep_versions) == (6001, 9001, False, 7)
    args = argparse.Namespace(port=7001, jupyter_port=7002, no_browser=True, reload=False)
    cfg = workstation_config(args, REPO)
    assert (cfg.port, cfg.jupyter_port, cfg.open_browser) == (7001, 7002, False)
    env = cfg.to_env()
    assert env["PIPULATE_PORT"] == "7001" and env["PIPULATE_KEEP_VERSIONS"] == "7"
    assert Path(env["PIPULATE_HOME"]) == Path(os.environ["PIPULATE_HOME"]).resolve()


@pytest.mark.parametrize("name, value, message", [
    ("PIPULATE_PORT", "fifty", "bad setting: PIPULATE_PORT must be a whole number"),
    ("PIPULATE_OPEN_BROWSER", "maybe", "bad setting: PIPULATE_OPEN_BROWSER must be on/off"),
    ("PIPULATE_KEEP_VERSIONS", "many", "bad setting: PIPULATE_KEEP_VERSIONS"),
    ("PIPULATE_HOME", "/proc/pipulate-cannot-be-here", "bad setting:"),
])
def test_a_bad_setting_is_reported_not_a_traceback(running, tmp_path, isolated_home, name, value, message):
    env = up_env(tmp_path, isolated_home)
    env[name] = value
    up = running(env=env)
    assert up.proc.wait(60) == 1
    out = up.output()
    assert message in out
    assert "Traceback" not in out


def test_help_lists_every_setting_with_its_meaning():
    from pipulate.settings import Settings

    out = subprocess.run([sys.executable, "-m", "pipulate", "up", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    rows = _workstation_config().describe()
    names = {env for env, _, _ in rows}
    assert {Settings.env_name(f) for f in Settings.__dataclass_fields__} <= names
    for env, default, meaning in rows:
        assert "undocumented" not in meaning, env
        assert env in out and meaning in out, env
    for flag in ("--port", "--jupyter-port", "--no-browser"):
        assert flag in out


def test_the_docs_list_every_setting_and_flag():
    doc = (REPO / "docs" / "workstation.md").read_text()
    for env, _, _ in _workstation_config().describe():
        assert f"`{env}`" in doc, f"{env} is not in docs/workstation.md"
    for flag in ("--port", "--jupyter-port", "--no-browser", "--reload"):
        assert flag in doc


def test_the_jupyter_config_names_the_recovery_save_hook_and_it_never_fails_a_save(monkeypatch):
    from pipulate.jupyter import CONFIG_DIR, SHARE_DIR, hooks

    text = (CONFIG_DIR / "jupyter_server_config.py").read_text()
    assert 'post_save_hook = "pipulate.jupyter.hooks.post_save_hook"' in text
    spec = json.loads((SHARE_DIR / "kernels" / "python3" / "kernel.json").read_text())
    assert spec["argv"][0] == "python"  # jupyter_client runs it with JupyterLab's own interpreter

    calls = []
    import pipulate.recover.versions as versions

    monkeypatch.setattr(versions, "post_save_hook", lambda **kw: calls.append(kw))
    hooks.post_save_hook(model={"type": "notebook"}, os_path="/x.ipynb", contents_manager=None)
    assert calls and calls[0]["os_path"] == "/x.ipynb"

    def broken(**kw):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(versions, "post_save_hook", broken)
    hooks.post_save_hook(model={"type": "notebook"}, os_path="/x.ipynb", contents_manager=None)


def test_without_a_checkout_up_says_what_to_do(tmp_path, monkeypatch):
    import argparse

    import pipulate.up as up

    monkeypatch.setattr(up, "checkout_root", lambda: None)
    args = argparse.Namespace(port=None, jupyter_port=None, no_browser=True, reload=False)
    assert up.run(args) == up.EXIT_CANNOT_START
