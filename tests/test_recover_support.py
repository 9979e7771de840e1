"""Helpers for the recovery tests: make real IPython history, run `pipulate recover`.

(No tests here; the name keeps it with the recovery tests.)
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

KERNEL_ENV_KEYS = ("IPYTHONDIR", "JUPYTER_RUNTIME_DIR")


def run_cli(*args: str) -> tuple[int, str, str]:
    """``pipulate recover ARGS`` in this process: (exit code, stdout, stderr)."""
    from pipulate.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["recover", *args])
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def write_ipython_config(ipython_dir: Path, log_output: bool = True) -> None:
    profile = Path(ipython_dir) / "profile_default"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "ipython_config.py").write_text(
        f"c.HistoryManager.db_log_output = {log_output}\n")


def start_kernel(ipython_dir: Path, runtime_dir: Path | None = None, extra_env: dict | None = None):
    """A real ipykernel writing history under ``ipython_dir``; returns (manager, client)."""
    from jupyter_client.manager import KernelManager

    env = {**os.environ, "IPYTHONDIR": str(ipython_dir), **(extra_env or {})}
    km = KernelManager(kernel_name="python3")
    if runtime_dir is not None:
        Path(runtime_dir).mkdir(parents=True, exist_ok=True)
        km.connection_file = str(Path(runtime_dir) / f"kernel-test-{time.monotonic_ns()}.json")
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def execute(kc, code: str) -> dict:
    reply = kc.execute_interactive(code, timeout=60, output_hook=lambda msg: None)
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply


def kernel_session(ipython_dir: Path, cells: list[str], kill: bool = False) -> None:
    """One kernel start = one history session; ``kill`` leaves it without an end."""
    km, kc = start_kernel(ipython_dir)
    try:
        for code in cells:
            execute(kc, code)
        if kill:
            time.sleep(0.5)  # the history thread writes each cell just after it runs
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=kill)


SHELL_SCRIPT = r"""
import json, sys
from IPython.core.interactiveshell import InteractiveShell
sessions = json.loads(sys.argv[1])
shell = InteractiveShell.instance()
for i, cells in enumerate(sessions):
    if i:
        shell.history_manager.reset(new_session=True)
    for code in cells:
        result = shell.run_cell(code, store_history=True)
        if not result.success:
            raise SystemExit(f"cell failed: {code!r}: {result.error_in_exec or result.error_before_exec}")
shell.history_manager.writeout_cache()
"""


def shell_sessions(ipython_dir: Path, sessions: list[list[str]]) -> None:
    """Several history sessions from one real IPython process (faster than a kernel each)."""
    env = {**os.environ, "IPYTHONDIR": str(ipython_dir)}
    proc = subprocess.run([sys.executable, "-c", SHELL_SCRIPT, json.dumps(sessions)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def history_file(ipython_dir: Path) -> Path:
    return Path(ipython_dir) / "profile_default" / "history.sqlite"
