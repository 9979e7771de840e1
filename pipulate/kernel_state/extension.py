"""``%load_ext pipulate``: save after every successful cell, restore on a fresh start.

``load(ip)`` works out which notebook the kernel runs (``ids.detect_notebook``),
registers a ``post_run_cell`` hook and the ``%state`` magic, and - when the
kernel's namespace holds no user variable yet - restores the notebook's state
(the version chosen with ``KernelStateStore.select_restore``, else the latest),
printing one line. Per-cell saves are silent; a failing save prints one short
warning and never breaks the user's cell.

Restored variables are the user's whatever IPython's start-up does next: loaded by the
kernel spec (``extra_extensions``), the restore runs before ipykernel's ``init_code``,
which with ``hide_initial_ns`` files everything already in the namespace under
``user_ns_hidden`` - IPython's own names, never saved or listed by ``%who``. So the
extension remembers what it restored and takes those names back out of
``user_ns_hidden`` before every execution and every save (``claim_restored``).

The hook only *plans* the save (``Saver.plan``: snapshots, milliseconds); the
writing finishes on a worker thread (``background``) while the next cells run.
``%state`` commands, a restore and the kernel's exit wait for it first. A save
that fails in the background is reported with the next cell.
"""
from __future__ import annotations

import atexit
import sys
import threading

from ..settings import Settings
from . import lazy, lost, replay, report
from .background import BackgroundSaves
from .formats import is_own_value
from .frames import copy_on_write
from .frontend import Frontend
from .ids import detect_notebook
from .notes import take_skip_restore
from .restoring import restore
from .saving import Saver, candidates, is_ipython_name
from .store import KernelStateStore

_ATTR = "_pipulate_kernel_state"
_MISSING = object()


class KernelState:
    """The extension's state inside one kernel."""

    def __init__(self, ip, store: KernelStateStore | None = None):
        self.ip = ip
        self.store = store or KernelStateStore(settings=Settings.from_env())
        self.notebook, self.name = detect_notebook(ip)
        self.saver = Saver(self.store, self.notebook, self.name)
        self.autosave = self.store.settings.autosave
        self.skip_next_save = False
        # Started without restoring on request: an empty namespace is not saved over the latest
        # version (a restart after a look at a clean kernel restores it); the first variable is.
        self.hold_while_empty = False
        self._last_result = None
        # name -> id of the object a restore put there, while the name still holds it.
        self.restored_ids: dict[str, int] = {}
        # Which cells made each variable: how a version says to rebuild what it cannot store.
        self.provenance = replay.Provenance(self._is_users_name)
        self.lost_noted = False  # a failing cell left a note (``lost``); the next save removes it
        # Background saves need snapshots the next cells cannot change: pandas >= 3.
        self._background_error: BaseException | None = None
        self.background = (BackgroundSaves(self._run_in_background, nice=self.store.settings.worker_nice)
                           if self.store.settings.background_save and copy_on_write() else None)
        # JupyterLab's status bar, restore notice and undo (a comm; nothing without a front end).
        self.frontend = Frontend(self)
        # The hash checks of the arrays a restore mapped; cells wait for those they may touch.
        self.checks = lazy.Checks()

    @property
    def last_result(self):
        """The result of the latest save that finished."""
        if self.background is not None and self.background.last_result is not None:
            return self.background.last_result
        return self._last_result

    # --- hooks -------------------------------------------------------------------

    def claim_restored(self, *args) -> None:
        """Take the variables a restore brought back out of ``user_ns_hidden``.

        Anything that hides names after the restore (ipykernel's ``hide_initial_ns``,
        a start-up file, ``push(interactive=False)``) would otherwise make them
        IPython's: left out of every later save, then of the version after it.
        A name the user has rebound or deleted since is no longer the restore's.
        """
        if not self.restored_ids:
            return
        ns, hidden = self.ip.user_ns, self.ip.user_ns_hidden
        for name, oid in list(self.restored_ids.items()):
            value = ns.get(name, _MISSING)
            if value is _MISSING or id(value) != oid:
                del self.restored_ids[name]
            elif name in hidden and hidden[name] is value:
                del hidden[name]

    def _is_users_name(self, name: str) -> bool:
        """A variable of the user's: not IPython's own, nor the workstation's (``pip``)."""
        hidden, ns = self.ip.user_ns_hidden, self.ip.user_ns
        return (not is_ipython_name(name) and not (name in hidden and hidden[name] is ns.get(name))
                and not is_own_value(ns.get(name)))

    def pre_run_cell(self, *args) -> None:
        self.checks.before_cell(self.ip.user_ns, getattr(args[0] if args else None, "raw_cell", None))
        self.provenance.before_cell(self.ip.user_ns)

    def post_run_cell(self, result) -> None:
        self.claim_restored()
        self.report_failures()
        info = getattr(result, "info", None)
        cell = getattr(info, "raw_cell", None)
        count = getattr(result, "execution_count", None)
        step = None
        label = f"[{count}]" if count is not None else "[?]"
        if getattr(result, "success", False) and not replay.is_state_magic(cell):
            try:
                step = self.provenance.after_cell(self.ip.user_ns, cell, label)
            except Exception:  # following the cells is a help; the save goes on without it
                step = None
        elif not getattr(result, "success", False) and self.autosave:
            self._note_lost(result, label)
        if self.skip_next_save:
            self.skip_next_save = False
            return
        if not self.autosave or not getattr(result, "success", False):
            return
        if self.hold_while_empty:
            if self.fresh():
                return
            self.hold_while_empty = False
        try:
            if self.background is None:
                self._last_result = self.save(cell=cell, step=step)
                self.frontend.saved(self._last_result, cell, None)
                return
            job = self._plan(cell, step)
            self.frontend.saving()
            future = self.background.submit(job, f"cell [{count}]" if count is not None else "the last cell")
            future.add_done_callback(lambda f: self.frontend.saved(
                f.result(), cell, None if f.result() is not None else self._background_error))
        except Exception as exc:  # a failing save must never break the user's cell
            self.saver.forget()
            self.frontend.saved(None, cell, exc)
            print(f"pipulate: kernel state not saved: {self._failure(exc)}", file=sys.stderr)

    def _run_in_background(self, job):
        try:
            return self.saver.run(job)
        except BaseException as exc:  # kept for the front end; BackgroundSaves reports it with the next cell
            self._background_error = exc
            raise

    def report_failures(self) -> None:
        """Print the background saves that failed since the last cell (one line)."""
        if self.background is None:
            return
        failures = self.background.take_failures()
        if not failures:
            return
        self.saver.forget()  # the next save checks every variable
        first = failures[0]
        print(f"pipulate: kernel state after {first.label} not saved: {self._failure(first.error)}",
              file=sys.stderr)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the background saves; False if ``timeout`` seconds passed first."""
        if self.background is None:
            return True
        return self.background.flush(timeout)

    def at_exit(self) -> None:
        """The kernel exits: finish the saves (a failed one is said now: no next cell will),
        then warm what the next kernel will restore."""
        self.flush()
        self.report_failures()
        try:
            self.store.prefetch_latest(self.notebook)
        except Exception:  # a hint only; the restore reads from disk without it
            pass

    def _failure(self, exc: BaseException) -> str:
        """One line: why the save failed, and what is kept."""
        if isinstance(exc, OSError):  # a blob could not be written: disk full, read-only folder
            why = f"cannot write to {self.store.home} ({exc.strerror or exc})"
        else:
            why = f"{type(exc).__name__}: {exc}"
        try:
            latest = self.store.latest_version(self.notebook)
        except Exception:  # the store itself is out of reach (a team database that is down)
            return f"{why}; the saved versions stay as they were, and the cell ran as usual"
        kept = f"version {latest} stays the latest" if latest is not None else "nothing was saved before"
        return f"{why}; {kept}, and the cell ran as usual"

    def _note_lost(self, result, label: str) -> None:
        """A cell raised: note what it assigned, in case the kernel ends before a save."""
        names = self.provenance.assigned(self.ip.user_ns)
        if not names:
            return
        error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        why = f"{type(error).__name__}: {error}" if error is not None else "an error"
        try:
            lost.write(self.store.home, self.notebook, names, label, why[:200])
            self.lost_noted = True
        except OSError:  # a note only: the user still sees the error in the cell
            pass

    def _plan(self, cell: str | None, step=None, full: bool = False):
        job = self.saver.plan(self.ip.user_ns, self.ip.user_ns_hidden, cell=cell, full=full)
        job.step, job.history, job.expected = step, dict(self.provenance.history), dict(self.provenance.reasons)
        if self.lost_noted:  # this save holds what the failing cell left: its note goes with it
            job.after = lambda: lost.clear(self.store.home, self.notebook)
            self.lost_noted = False
        return job

    def save(self, cell: str | None = None, full: bool = False, step=None):
        """Save now, after the background saves (durable when it returns)."""
        self.flush()
        self.report_failures()
        self.claim_restored()
        self.checks.before_save(self.ip.user_ns, None if full else cell)
        result = self.saver.run(self._plan(cell, step, full))
        self._last_result = result
        if self.background is not None:
            self.background.last_result = result
        return result

    def restore(self, version: int | None = None):
        self.flush()
        self.report_failures()
        ns = self.ip.user_ns
        self.checks.before_save(ns)
        result = restore(self.store, self.notebook, ns, version, mapped_unchecked=self.store.settings.lazy_restore)
        self.checks.start(self.store.blobs, result.mapped, ns, result.restored)
        self.restored_ids.update((name, id(ns[name])) for name in result.restored if name in ns)
        self.claim_restored()
        self.saver.prime(ns, result.manifest.entries, result.memos)
        self.provenance.forget(result.restored)
        self.provenance.expect([item for item in replay.rebuildable(result.manifest.skipped)
                                if item["name"] not in ns])
        if self.store.settings.auto_rebuild and self.rebuildable():
            result.rebuilt, result.failed_rebuilds = self.rebuild()
        return result

    def rebuildable(self) -> list[dict]:
        """The variables a restored version could not store, that its recipes rebuild."""
        entries = self.saver.last_entries
        return [{"name": name, "reason": self.provenance.reasons.get(name, ""),
                 **replay.recipe(name, self.provenance.history, entries)}
                for name in sorted(self.provenance.reasons) if name not in self.ip.user_ns]

    def rebuild(self) -> tuple[list[str], list[dict]]:
        """Run again the cells that made the variables a restore could not bring back."""
        items = self.rebuildable()
        ready = replay.rebuildable(items)
        refused = [{"name": i["name"], "reason": i[replay.REFUSED]} for i in items if replay.REFUSED in i]

        def run_cell(source: str, scratch: dict) -> None:
            code = self.ip.transform_cell(source)
            exec(compile(code, "<cell run again by %state rebuild>", "exec"), scratch)

        done, failed = replay.run(self.ip.user_ns, ready, run_cell)
        self.provenance.rebuilt([item for item in ready if item["name"] in done])
        return done, refused + failed

    def fresh(self) -> bool:
        self.claim_restored()
        values, _ = candidates(self.ip.user_ns, self.ip.user_ns_hidden)
        return not values

    def restore_on_start(self) -> None:
        latest = self.store.latest_version(self.notebook)
        note = lost.read(self.store.home, self.notebook)
        self.lost_noted = note is not None  # told once more at each start, until a save holds the notebook
        if latest is None:
            if note:
                self.announce(f"pipulate: {self.name}: {lost.line(note)}")
            return
        if take_skip_restore(self.store, self.notebook):
            self.hold_while_empty = True
            self.frontend.not_restored(latest, "asked not to (Restart Kernel without Restoring State)")
            self.announce(f"pipulate: {self.name} was not restored, as asked; its saved versions are kept "
                          f"(latest: {latest}); `%state restore` brings it back")
            return
        if not self.fresh():
            self.frontend.not_restored(latest, "the kernel already had variables")
            self.announce(f"pipulate: {self.name} has saved state (version {latest}); "
                          "`%state restore` brings it back")
            return
        selected = self.store.take_restore_selection(self.notebook)
        try:
            result = self.restore(selected)
        except KeyError:
            result = self.restore(None)
        self.frontend.restored(result, on_start=True)
        line = report.restore_line(result, self.name, self.rebuildable())
        self.announce(line + (f". {lost.line(note)}" if note else ""))

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


_EXITING: set = set()  # the loaded states whose saves must finish before the process ends
_hooked = False


def _finish_saves() -> None:
    for state in list(_EXITING):
        state.at_exit()


def _at_shutdown(state) -> None:
    """Finish ``state``'s saves when the interpreter starts to shut down.

    Not with atexit: by then concurrent.futures refuses new work, and a save to S3 needs
    its thread pool ("cannot schedule new futures after interpreter shutdown"). The hook
    concurrent.futures itself uses runs earlier; ours is registered after its own, so it
    runs first. Interpreters without that hook fall back to atexit.
    """
    global _hooked
    import concurrent.futures.thread  # noqa: F401  (registers its hook first)

    if not _hooked:
        register = getattr(threading, "_register_atexit", None)
        try:
            register(_finish_saves) if register else atexit.register(_finish_saves)
        except RuntimeError:  # the interpreter is already shutting down
            atexit.register(_finish_saves)
        _hooked = True
    _EXITING.add(state)


def load(ip) -> None:
    if getattr(ip, _ATTR, None) is not None:
        return
    try:
        state = KernelState(ip)
    except Exception as exc:
        print(f"pipulate: kernel state is off ({type(exc).__name__}: {exc})", file=sys.stderr)
        return
    setattr(ip, _ATTR, state)
    ip.events.register("pre_execute", state.claim_restored)
    ip.events.register("pre_run_cell", state.pre_run_cell)
    ip.events.register("post_run_cell", state.post_run_cell)
    _at_shutdown(state)  # the last cell's save finishes before the kernel exits
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
    for event, hook in (("pre_execute", state.claim_restored), ("pre_run_cell", state.pre_run_cell),
                        ("post_run_cell", state.post_run_cell)):
        try:
            ip.events.unregister(event, hook)
        except ValueError:
            pass
    state.flush()
    state.report_failures()
    if state.background is not None:
        state.background.shutdown()
    _EXITING.discard(state)
    from .magics import unregister

    unregister(ip)
    setattr(ip, _ATTR, None)


def current(ip) -> KernelState | None:
    return getattr(ip, _ATTR, None)
