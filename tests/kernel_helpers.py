"""Real ipykernels for the kernel-state tests, started with jupyter_client.

Kernels start the way the workstation starts them: from the shipped kernel spec
(``pipulate/jupyter/share/kernels/python3``, found through the environment that
``pipulate up`` gives JupyterLab), which loads the extension at kernel start, before
ipykernel's own start-up code runs. ``load="magic"`` starts the stock ipykernel spec
and runs ``%load_ext pipulate`` (any other Jupyter); ``load=None`` loads nothing.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from pipulate.jupyter import KERNEL_NAME, jupyter_env

AUTOLOAD = "--InteractiveShellApp.extra_extensions=pipulate"
SPEC = "spec"    # the workstation's kernel spec: the extension loaded at kernel start
MAGIC = "magic"  # the stock kernel spec, then ``%load_ext pipulate`` in a cell


def json_probe(k, code: str) -> dict:
    """Run ``code`` silently in kernel ``k`` (its stdout's last line starting with ``{`` is
    JSON); returns that object."""
    out: list[str] = []
    k.kc.execute_interactive(code, silent=True, store_history=False, timeout=120, allow_stdin=False,
                             output_hook=lambda m: out.append(m["content"].get("text", ""))
                             if m["msg_type"] == "stream" else None)
    lines = [line for line in "".join(out).splitlines() if line.startswith("{")]
    assert lines, "".join(out)
    return json.loads(lines[-1])


def kernel_spec_manager(home: Path, workstation: bool) -> KernelSpecManager:
    """The kernel specs JupyterLab finds under ``pipulate up`` (its JUPYTER_PATH, from
    ``jupyter_env``), or only the stock one (ipykernel's own, as any other Jupyter has)."""
    if workstation:
        path = jupyter_env(home)["JUPYTER_PATH"].split(os.pathsep)
        return KernelSpecManager(kernel_dirs=[os.path.join(p, "kernels") for p in path])
    return KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)


# An expression (it binds no name), and nothing is imported into a kernel without pipulate.
SETTLE = ("(lambda m: m and m.current(get_ipython()) and m.current(get_ipython()).flush())"
          "(__import__('sys').modules.get('pipulate.kernel_state.extension'))")


class Kernel:
    """One ipykernel process; ``run(code)`` returns (stdout+display text, error text or None)."""

    def __init__(self, home: Path, notebook: str | None, cwd: Path, extra_env: dict | None = None,
                 extra_arguments: list[str] | None = None, load: str | None = SPEC):
        assert load in (SPEC, MAGIC, None), load
        self.load = load
        workstation = load == SPEC
        env = {**os.environ, **(jupyter_env(home) if workstation else {}),
               "PIPULATE_HOME": str(home), "IPYTHONDIR": os.environ["IPYTHONDIR"]}
        env.pop("JPY_SESSION_NAME", None)
        env.pop("PIPULATE_NOTEBOOK", None)
        if notebook is not None:
            env["JPY_SESSION_NAME"] = notebook
        env.update(extra_env or {})
        self.km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_spec_manager(home, workstation))
        argv = self.km.kernel_spec.argv
        assert (AUTOLOAD in argv) == workstation, f"not the kernel spec meant: {argv}"
        self.km.start_kernel(env=env, cwd=str(cwd), extra_arguments=extra_arguments or [])
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=90)

    def first_cell(self) -> str:
        """The first cell after a start: one that assigns nothing (the kernel spec loaded
        the extension; its restore line comes with this cell), or ``%load_ext pipulate``."""
        if self.load == SPEC:
            return self.ok("pass")
        return self.ok("%load_ext pipulate") if self.load == MAGIC else ""

    def restart(self) -> str:
        """Restart the kernel as JupyterLab's Kernel > Restart Kernel does (same manager,
        same connection), then run the first cell; returns that cell's output."""
        self.km.restart_kernel(now=False)
        self.kc.wait_for_ready(timeout=90)
        return self.first_cell()

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def run(self, code: str, timeout: float = 120, settle: bool = True) -> tuple[str, str | None]:
        out: list[str] = []
        err: list[str] = []

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                err.append(f"{content['ename']}: {content['evalue']}")

        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=timeout, allow_stdin=False)
        if reply["content"]["status"] != "ok" and not err:
            err.append(f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}")
        if settle:
            self.settle(timeout)
        return "".join(out), ("\n".join(err) if err else None)

    def settle(self, timeout: float = 120) -> None:
        """Wait for the cell's background save (as a user who looks a moment later would).

        A silent execution: no post_run_cell hook, no history, nothing shown.
        """
        self.kc.execute_interactive(SETTLE, silent=True, store_history=False, timeout=timeout,
                                    allow_stdin=False, output_hook=lambda msg: None)

    def ok(self, code: str, timeout: float = 120) -> str:
        """Run ``code``; fail the test if it raised."""
        out, err = self.run(code, timeout)
        assert err is None, f"cell failed: {err}\n--- output:\n{out}"
        return out

    def send(self, code: str) -> str:
        """Start ``code`` without waiting for it."""
        return self.kc.execute(code, allow_stdin=False)

    def kill9(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while self.km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.close()

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        except Exception:
            pass
        try:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)
        except Exception:
            pass


class Kernels:
    """Starts kernels for a test and shuts every one of them down afterwards."""

    def __init__(self, home: Path, cwd: Path):
        self.home, self.cwd = home, cwd
        self.started: list[Kernel] = []

    def start(self, notebook: str | None = "analysis.ipynb", load: str | None = SPEC,
              extra_env: dict | None = None, extra_arguments: list[str] | None = None) -> tuple[Kernel, str]:
        """A fresh kernel with the extension loaded (``load``: SPEC, MAGIC or None) and its
        first cell run; returns it and that cell's output, where the restore line is."""
        k = Kernel(self.home, notebook, self.cwd, extra_env, extra_arguments, load)
        self.started.append(k)
        return k, k.first_cell()

    def close(self) -> None:
        for k in self.started:
            k.close()
