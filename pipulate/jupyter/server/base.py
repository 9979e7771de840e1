"""What every ``/pipulate/`` handler shares: JSON errors, the notebook a request names, the
stores (one per server process, made on first use)."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from jupyter_server.base.handlers import APIHandler
from tornado import web

_LOCK = threading.Lock()


class BadRequest(web.HTTPError):
    def __init__(self, status: int, message: str):
        super().__init__(status, reason=message[:200].replace("\n", " "))
        self.message = message


class PipulateHandler(APIHandler):
    """JSON in and out; every error a JSON ``{"message": ...}`` with its status."""

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "message", None) or getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "status": status_code}))

    @property
    def root(self) -> Path:
        return Path(self.settings["server_root_dir"]).expanduser().resolve()

    def body(self) -> dict:
        try:
            data = json.loads(self.request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, "the body must be a JSON object, like {\"path\": \"x.ipynb\"}") from None
        if not isinstance(data, dict):
            raise BadRequest(400, "the body must be a JSON object, like {\"path\": \"x.ipynb\"}")
        return data

    def notebook_path(self, raw) -> Path:
        """The absolute path of a notebook named relative to the server's root; never outside it."""
        if not isinstance(raw, str) or not raw.strip():
            raise BadRequest(400, "path is required: the notebook's path, relative to the notebooks folder")
        if "\0" in raw or os.path.isabs(raw):
            raise BadRequest(400, f"path {raw[:80]!r} must be relative to the notebooks folder")
        full = (self.root / raw).resolve()
        if full != self.root and self.root not in full.parents:
            raise BadRequest(403, f"path {raw[:80]!r} is outside the notebooks folder")
        return full

    def notebook_id(self, raw) -> tuple[str, str]:
        """(id, display name) of the notebook at ``raw``: computed as its kernel computes it
        from ``JPY_SESSION_NAME`` (the absolute path jupyter_server gives the kernel)."""
        from pipulate.kernel_state.ids import display_path, notebook_id_for_path

        display = display_path(str(self.notebook_path(raw)))
        return notebook_id_for_path(display), display

    def version(self, raw, what: str = "version") -> int | None:
        if raw is None or raw == "":
            return None
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise BadRequest(400, f"{what} must be a whole number, got {raw!r}")
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(400, f"{what} must be a whole number, got {str(raw)[:40]!r}") from None
        if value < 1:
            raise BadRequest(400, f"{what} must be 1 or more, got {value}")
        return value

    @property
    def store(self):
        """The kernel-state store on the workstation's home (``PIPULATE_HOME``)."""
        with _LOCK:
            store = self.settings.get("pipulate_store")
            if store is None:
                from pipulate.kernel_state import KernelStateStore
                from pipulate.settings import Settings

                store = KernelStateStore(settings=Settings.from_env())
                self.settings["pipulate_store"] = store
        return store
