"""Real ipykernels for the kernel-state tests, started with jupyter_client."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from jupyter_client.manager import KernelManager


# An expression (it binds no name), and nothing is imported into a kernel without pipulate.
SETTLE = ("(lambda m: m and m.current(get_ipython()) and m.current(get_ipython()).flush())"
          "(__import__('sys').modules.get('pipulate.kernel_state.extension'))")


class Kernel:
    """One ipykernel process; ``run(code)`` returns (stdout+display text, error text or None)."""

    def __init__(self, home: Path, notebook: str | None, cwd: Path, extra_env: dict | None = None,
                 extra_arguments: list[str] | None = None):
        env = {**os.environ, "PIPULATE_HOME": str(home), "IPYTHONDIR": os.environ["IPYTHONDIR"]}
        env.pop("JPY_SESSION_NAME", None)
        env.pop("PIPULATE_NOTEBOOK", None)
        if notebook is not None:
            env["JPY_SESSION_NAME"] = notebook
        env.update(extra_env or {})
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, cwd=str(cwd), extra_arguments=extra_arguments or [])
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=90)

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

    def start(self, notebook: str | None = "analysis.ipynb", load: bool = True,
              extra_env: dict | None = None, extra_arguments: list[str] | None = None) -> tuple[Kernel, str]:
        """A fresh kernel, with ``%load_ext pipulate`` run; returns it and that cell's output."""
        k = Kernel(self.home, notebook, self.cwd, extra_env, extra_arguments)
        self.started.append(k)
        out = k.ok("%load_ext pipulate") if load else ""
        return k, out

    def close(self) -> None:
        for k in self.started:
            k.close()
