"""The ``%state`` line magic.

::

    %state                what is saved for this notebook: names, types, sizes, formats, skipped
    %state save           save now (checks every variable, even big untouched ones)
    %state versions       the saved versions, newest first
    %state restore [V]    bring back the latest or version V into this kernel
    %state diff A B       added / modified / deleted variables between two versions
    %state undo           bring back the variables as they were before the last cell that changed them
    %state clear          forget this notebook's saved state
    %state rebuild        rebuild the variables that could not be stored, by re-running the cells that made them
"""
from __future__ import annotations

import shlex

from . import report

USAGE = "usage: %state [save | versions | restore [V] | diff A B | undo | clear | rebuild]"


def _usage_error(message: str):
    from IPython.core.error import UsageError

    return UsageError(f"%state: {message}\n{USAGE}")


def _version(text: str):
    try:
        value = int(text)
    except ValueError:
        raise _usage_error(f"a version is a whole number, got {text!r}") from None
    if value < 1:
        raise _usage_error(f"versions start at 1, got {value}")
    return value


def run(state, line: str) -> None:
    try:
        args = shlex.split(line)
    except ValueError as exc:
        raise _usage_error(str(exc)) from None
    command, rest = (args[0], args[1:]) if args else ("", [])
    store, nb = state.store, state.notebook
    state.flush()  # every subcommand sees the saves of the cells before it

    if command == "":
        if rest:
            raise _usage_error("unexpected arguments")
        try:
            info = store.variables(nb)
        except KeyError:
            print(f"{state.name} (id {nb}): nothing saved yet")
            return
        print(report.variables_text(info, f"{state.name} (id {nb})"))
    elif command == "save":
        if rest:
            raise _usage_error("`save` takes no arguments")
        result = state.save(full=True)
        state.skip_next_save = True
        skipped = report.skipped_list(result.skipped)
        skipped = f"; skipped: {skipped}" if skipped else ""
        if result.created:
            print(f"saved version {result.version}: {report.plural(result.variable_count, 'variable')}"
                  + (f", written: {report.names_list(result.written)}" if result.written else ", no new data")
                  + skipped)
        else:
            print(f"nothing changed since version {result.version}" + skipped)
    elif command == "versions":
        if rest:
            raise _usage_error("`versions` takes no arguments")
        selected = store.db.rows("SELECT restore_version FROM kernel_notebooks WHERE id = ?", (nb,))
        print(report.versions_text(store.versions(nb), selected[0][0] if selected else None))
    elif command == "restore":
        if len(rest) > 1:
            raise _usage_error("`restore` takes at most one version")
        version = _version(rest[0]) if rest else None
        try:
            result = state.restore(version)
        except KeyError as exc:
            raise _usage_error(report.unknown_version(exc.args[0], store.versions(nb))) from None
        print(report.restore_line(result, state.name, state.rebuildable()))
    elif command == "diff":
        if len(rest) != 2:
            raise _usage_error("`diff` takes two versions")
        a, b = _version(rest[0]), _version(rest[1])
        try:
            d = store.diff(nb, a, b)
        except KeyError as exc:
            raise _usage_error(report.unknown_version(exc.args[0], store.versions(nb))) from None
        print(f"version {a} -> {b}")
        for label in ("added", "modified", "deleted"):
            print(f"  {label}: {', '.join(d[label]) if d[label] else '-'}")
    elif command == "rebuild":
        if rest:
            raise _usage_error("`rebuild` takes no arguments")
        if not state.rebuildable():
            print(report.NOTHING_TO_REBUILD)
            return
        print("\n".join(report.rebuild_lines(*state.rebuild())))
    elif command == "undo":
        if rest:
            raise _usage_error("`undo` takes no arguments")
        try:
            print(state.frontend.undo())
        except LookupError as exc:
            raise _usage_error(exc.args[0]) from None
        state.skip_next_save = True
    elif command == "clear":
        if rest:
            raise _usage_error("`clear` takes no arguments")
        had = store.clear(nb)
        state.saver.reset()
        state.frontend.undo_stack.clear()
        state.skip_next_save = True
        print(f"cleared the saved state of {state.name}" if had else f"{state.name} had no saved state")
    else:
        raise _usage_error(f"unknown subcommand {command!r}")


def register(ip, state) -> None:
    def state_magic(line=""):
        return run(state, line)

    state_magic.__doc__ = __doc__
    ip.register_magic_function(state_magic, "line", "state")


def unregister(ip) -> None:
    ip.magics_manager.magics["line"].pop("state", None)
