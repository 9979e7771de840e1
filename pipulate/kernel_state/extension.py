"""``%load_ext pipulate``: save after every successful cell, restore on a fresh start.

``load(ip)`` works out which notebook the kernel runs (``ids.detect_notebook``),
registers a ``post_run_cell`` hook and the ``%state`` magic, and - when the
kernel's namespace holds no user variable yet - restores the notebook's state
(the version chosen with ``KernelStateStore.select_restore``, else the latest),
printing one line. Per-cell saves are silent; a failing save prints one short
warning and never breaks the user's cell.
"""
from __future__ import annotations

import sys

from ..settings import Settings
from . import report
from .ids import detect_notebook
from .restoring import restore
from .saving import Saver, candidates
from .store import KernelStateStore

_ATTR = "_pipulate_kernel_state"


class KernelState:
    """The extension's state inside one kernel."""

    def __init__(self, ip, store: KernelStateStore | None = None):
        self.ip = ip
        self.store = store or KernelStateStore(settings=Settings.from_env())
        self.notebook, self.name = detect_notebook(ip)
        self.saver = Saver(self.store, self.notebook, self.name)
        self.autosave = self.store.settings.autosave
        self.skip_next_save = False
        self.last_result = None

    # --- hooks -------------------------------------------------------------------

    def post_run_cell(self, result) -> None:
        if self.skip_next_save:
            self.skip_next_save = False
            return
        if not self.autosave or not getattr(result, "success", False):
            return
        info = getattr(result, "info", None)
        cell = getattr(info, "raw_cell", None)
        try:
            self.last_result = self.save(cell=cell)
        except Exception as exc:  # a failing save must never break the user's cell
            print(f"pipulate: kernel state not saved: {self._failure(exc)}", file=sys.stderr)

    def _failure(self, exc: Exception) -> str:
        """One line: why the save failed, and what is kept."""
        if isinstance(exc, OSError):  # a blob could not be written: disk full, read-only folder
            why = f"cannot write to {self.store.home} ({exc.strerror or exc})"
        else:
            why = f"{type(exc).__name__}: {exc}"
        try:
            latest = self.store.latest_version(self.notebook)
        except Exception:
            latest = None
        kept = f"version {latest} stays the latest" if latest is not None else "nothing was saved before"
        return f"{why}; {kept}, and the cell ran as usual"

    def save(self, cell: str | None = None, full: bool = False):
        return self.saver.save(self.ip.user_ns, self.ip.user_ns_hidden, cell=cell, full=full)

    def restore(self, version: int | None = None):
        result = restore(self.store, self.notebook, self.ip.user_ns, version)
        self.saver.prime(self.ip.user_ns, result.manifest.entries)
        return result

    def fresh(self) -> bool:
        values, _ = candidates(self.ip.user_ns, self.ip.user_ns_hidden)
        return not values

    def restore_on_start(self) -> None:
        latest = self.store.latest_version(self.notebook)
        if latest is None:
            return
        if not self.fresh():
            self.announce(f"pipulate: {self.name} has saved state (version {latest}); "
                          "`%state restore` brings it back")
            return
        selected = self.store.take_restore_selection(self.notebook)
        try:
            result = self.restore(selected)
        except KeyError:
            result = self.restore(None)
        self.announce(report.restore_line(result, self.name))

    def announce(self, line: str) -> None:
        """Print ``line`` where the user sees it.

        Loaded by the kernel at start-up (``extra_extensions`` in the workstation's
        kernel spec), no cell is running and a notebook would not show the line,
        so it is printed with the first cell instead.
        """
        kernel_shell = hasattr(self.ip, "kernel")
        if kernel_shell and not getattr(self.ip, "parent_header", None):
            self._pending_line = line
            self.ip.events.register("pre_run_cell", self._print_pending)
            return
        print(line)

    def _print_pending(self, *args) -> None:
        try:
            self.ip.events.unregister("pre_run_cell", self._print_pending)
        except ValueError:
            pass
        line, self._pending_line = getattr(self, "_pending_line", None), None
        if line:
            print(line)


def load(ip) -> None:
    if getattr(ip, _ATTR, None) is not None:
        return
    try:
        state = KernelState(ip)
    except Exception as exc:
        print(f"pipulate: kernel state is off ({type(exc).__name__}: {exc})", file=sys.stderr)
        return
    setattr(ip, _ATTR, state)
    ip.events.register("post_run_cell", state.post_run_cell)
    from .magics import register

    register(ip, state)
    if state.store.settings.autorestore:
        try:
            state.restore_on_start()
        except Exception as exc:
            print(f"pipulate: kernel state not restored ({type(exc).__name__}: {exc})", file=sys.stderr)


def unload(ip) -> None:
    state = getattr(ip, _ATTR, None)
    if state is None:
        return
    try:
        ip.events.unregister("post_run_cell", state.post_run_cell)
    except ValueError:
        pass
    from .magics import unregister

    unregister(ip)
    setattr(ip, _ATTR, None)


def current(ip) -> KernelState | None:
    return getattr(ip, _ATTR, None)
