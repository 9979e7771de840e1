"""What the kernel tells JupyterLab (``labextension/``) without being asked in a loop.

A comm with target ``pipulate.state``: the front end opens it when it connects to the kernel
(and again after each restart); the kernel answers with its status and the report of the
restore it made at start-up - kept until then, because the kernel spec loads the extension
before any front end is connected. Then, on every comm the front end opened:

- ``{"type": "status", saving: true, ...}`` when a cell's save is planned, and
  ``{"type": "status", saving: false, version, variables, bytes, saved_at, error}`` when it
  finished (on the background save's worker thread: ipykernel's IOPub socket takes sends
  from any thread), so a status bar never shows the previous version as current;
- ``{"type": "restore", restored, skipped: [{name, reason}], version, saved_at, on_start}``
  after a restore (``skipped`` leaves out the workstation's own objects, as the restore line does).

The front end sends ``{"action": "status" | "restore" | "undo", "version": V}``; each gets a
``{"type": "reply", action, ok, message}``.

Undo brings back the version that was the latest before the last cell that changed the
variables, takes out the names that cell added, and saves the result as a new version (so a
restart keeps the undo). Each undo goes one cell further back.
"""
from __future__ import annotations

import threading

from . import notes, replay, report

TARGET = "pipulate.state"


class Frontend:
    def __init__(self, state):
        self.state = state
        self.comms: list = []
        self.lock = threading.Lock()
        self.start_report: dict | None = None
        self.status: dict = self._base(saving=False, version=None)
        # (version before a cell, the version it made), newest last: what undo walks back.
        self.undo_stack: list[tuple[int | None, int]] = []
        self.base_version: int | None = None  # the version the namespace holds now
        try:
            from comm import get_comm_manager

            get_comm_manager().register_target(TARGET, self._opened)
        except Exception:  # not in a kernel (plain IPython): the printed lines are all there is
            pass

    def _base(self, **fields) -> dict:
        return {"type": "status", "notebook": self.state.notebook, "name": self.state.name,
                "variables": None, "bytes": None, "saved_at": None, "error": None, **fields}

    # --- the comm -----------------------------------------------------------------

    def _opened(self, comm, open_msg) -> None:
        with self.lock:
            self.comms.append(comm)
        comm.on_msg(self._message)
        comm.on_close(lambda msg: self._closed(comm))
        comm.send(dict(self.status))
        if self.start_report is not None:
            comm.send(self.start_report)

    def _closed(self, comm) -> None:
        with self.lock:
            if comm in self.comms:
                self.comms.remove(comm)

    def send(self, data: dict) -> None:
        with self.lock:
            comms = list(self.comms)
        for comm in comms:
            try:
                comm.send(data)
            except Exception:  # a closed front end must never break a save
                self._closed(comm)

    def _message(self, msg) -> None:
        data = msg.get("content", {}).get("data") or {}
        action = data.get("action")
        try:
            if action == "status":
                self.send(dict(self.status))
                message = "ok"
            elif action == "restore":
                version = data.get("version")
                if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
                    raise ValueError(f"a version is a whole number, got {version!r}")
                message = self.restore(version)
            elif action == "undo":
                message = self.undo()
            elif action == "rebuild":
                message = self.rebuild()
            else:
                raise ValueError(f"unknown action {action!r}")
        except (KeyError, ValueError, LookupError) as exc:
            self.send({"type": "reply", "action": action, "ok": False, "message": str(exc.args[0] if exc.args else exc)})
            return
        except Exception as exc:  # the front end waits for a reply: never leave it without one
            self.send({"type": "reply", "action": action, "ok": False, "message": f"{type(exc).__name__}: {exc}"})
            return
        self.send({"type": "reply", "action": action, "ok": True, "message": message})

    # --- what the extension reports -----------------------------------------------

    def saving(self) -> None:
        self.status = {**self.status, "saving": True}
        self.send(dict(self.status))

    def saved(self, result, cell: str | None, error: BaseException | None) -> None:
        """A save finished (``result``) or failed (``error``)."""
        if error is not None or result is None:
            why = self.state._failure(error) if error is not None else "an earlier save failed"
            self.status = {**self.status, "saving": self.pending(), "error": why}
            self.send(dict(self.status))
            return
        store, nb = self.state.store, self.state.notebook
        if result.created:
            self.undo_stack.append((self.base_version, result.version))
            del self.undo_stack[:-100]
        self.base_version = result.version
        rows = store.db.rows("SELECT saved_at, size_bytes FROM kernel_versions WHERE notebook = ? AND version = ?",
                             (nb, result.version)) if result.version is not None else []
        saved_at, size = rows[0] if rows else (None, None)
        if result.created and saved_at:
            try:
                notes.record_cell(store, nb, result.version, saved_at, cell)
            except Exception:  # a label only
                pass
        self.status = self._base(saving=self.pending(), version=result.version, variables=result.variable_count,
                                 bytes=size, saved_at=saved_at,
                                 skipped=[s["name"] for s in result.skipped])
        self.send(dict(self.status))

    def pending(self) -> bool:
        background = self.state.background
        return bool(background is not None and background.pending() > 1)

    def restored(self, result, on_start: bool) -> dict:
        m = result.manifest
        self.base_version = m.version
        rows = self.state.store.versions(self.state.notebook)
        latest = rows[0] if rows else None
        if latest is not None and self.status.get("version") is None:
            self.status = self._base(saving=False, version=latest["version"], variables=latest["variable_count"],
                                     bytes=latest["size_bytes"], saved_at=latest["saved_at"])
        checked = self.state.rebuildable()
        data = {"type": "restore", "on_start": on_start, "version": m.version, "saved_at": m.saved_at,
                # the workstation's own objects (``pip``) are not the user's loss: no warning for them
                "restored": list(result.restored),
                "skipped": report.split_skipped([dict(s) for s in result.skipped])[0],
                # not stored, but their cells can run again (``%state rebuild``, the Rebuild button)
                "rebuildable": [{"name": i["name"], "cells": report.cells_text(i[replay.REBUILD]["cells"])}
                                for i in checked if replay.REBUILD in i],
                "line": report.restore_line(result, self.state.name, checked)}
        if on_start:
            self.start_report = data
        self.send(data)
        return data

    def not_restored(self, latest: int, why: str) -> None:
        """The start-up restore was not made (asked not to, or the namespace was not fresh)."""
        row = self.state.store.versions(self.state.notebook)[0]
        self.status = self._base(saving=False, version=latest, variables=row["variable_count"],
                                 bytes=row["size_bytes"], saved_at=row["saved_at"])
        self.start_report = {"type": "restore", "on_start": True, "version": None, "latest": latest,
                             "saved_at": None, "restored": [], "skipped": [], "not_restored": why}
        self.send(self.start_report)

    # --- actions ------------------------------------------------------------------

    def restore(self, version: int | None) -> str:
        """Restore ``version`` into the kernel and keep it as the latest (a restart keeps it)."""
        result = self.state.restore(version)
        self.restored(result, on_start=False)
        self._save_now()
        return report.restore_line(result, self.state.name)

    def undo(self) -> str:
        self.state.flush()
        if not self.undo_stack:
            raise LookupError("nothing to undo: no cell of this kernel has changed the saved variables")
        before, made = self.undo_stack[-1]
        if before is None:
            raise LookupError(f"nothing to undo to: version {made} is the first saved one")
        store, nb, ns = self.state.store, self.state.notebook, self.state.ip.user_ns
        added = store.diff(nb, before, made)["added"]
        self.undo_stack.pop()
        result = self.state.restore(before)
        for name in added:
            ns.pop(name, None)
        self.restored(result, on_start=False)
        self._save_now()
        removed = f"; removed {report.names_list(added)}" if added else ""
        return f"undid the cell that made version {made}: back to version {before}{removed}"

    def rebuild(self) -> str:
        """``%state rebuild``: run again the cells that made what the restore could not store."""
        if not self.state.rebuildable():
            raise LookupError(report.NOTHING_TO_REBUILD)
        done, failed = self.state.rebuild()
        message = "; ".join(report.rebuild_lines(done, failed))
        if not done:
            raise LookupError(message)
        return message

    def _save_now(self) -> None:
        """Save what the kernel now holds, without counting it as a cell to undo."""
        result = self.state.save()
        stack = list(self.undo_stack)
        self.saved(result, None, None)
        self.undo_stack = stack
