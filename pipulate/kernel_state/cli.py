"""``pipulate state list | show NOTEBOOK | clear NOTEBOOK``.

NOTEBOOK is a notebook id (as ``list`` prints it) or its display path.
"""
from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="state_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="every notebook with saved kernel state")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="the variables saved for NOTEBOOK")
    p.add_argument("notebook", metavar="NOTEBOOK", help="notebook id or path")
    p.add_argument("--version", type=int, default=None, help="a saved version (default: latest)")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("clear", help="forget the saved kernel state of NOTEBOOK")
    p.add_argument("notebook", metavar="NOTEBOOK", help="notebook id or path")
    p.set_defaults(func=cmd_clear)


def _store():
    from .store import KernelStateStore

    return KernelStateStore()


def _resolve(store, given: str) -> str | None:
    """The id for ``given``: an id, or a display path; None (and a message) if unusable."""
    from .ids import notebook_id_for_path, validate_notebook_id

    if not given.strip():
        print("pipulate state: give a notebook id or path (see `pipulate state list`)", file=sys.stderr)
        return None
    known = {nb["id"]: nb for nb in store.notebooks()}
    if given in known:
        return given
    for nb in known.values():
        if nb["name"] == given:
            return nb["id"]
    try:
        return validate_notebook_id(given)
    except ValueError:
        pass
    try:
        return notebook_id_for_path(given)
    except ValueError as exc:
        print(f"pipulate state: {exc}", file=sys.stderr)
        return None


def cmd_list(args) -> int:
    from .report import human_bytes, table, when

    store = _store()
    rows = store.notebooks()
    if not rows:
        print("no notebook has saved kernel state")
        return 0
    print(table([[r["id"], r["name"], when(r["saved_at"]), str(r["variable_count"]), str(r["versions"]),
                  human_bytes(store.summary(r["id"])["file_size_bytes"])] for r in rows],
                ["id", "notebook", "saved", "variables", "versions", "size"]))
    return 0


def cmd_show(args) -> int:
    from .report import unknown_version, variables_text, versions_text

    store = _store()
    nb = _resolve(store, args.notebook)
    if nb is None:
        return 2
    try:
        info = store.variables(nb, args.version)
    except KeyError as exc:
        message = unknown_version(exc.args[0], store.versions(nb)) if args.version else exc.args[0]
        print(f"pipulate state show: {_named(message, args.notebook, nb)}", file=sys.stderr)
        return 1
    print(variables_text(info, f"{store.name_of(nb)} (id {nb})"))
    print()
    print(versions_text(store.versions(nb)))
    return 0


def cmd_clear(args) -> int:
    store = _store()
    nb = _resolve(store, args.notebook)
    if nb is None:
        return 2
    if store.clear(nb):
        print(f"cleared the saved kernel state of {nb}")
        return 0
    print(f"pipulate state clear: {_named(f'notebook {nb!r} has no saved state', args.notebook, nb)}",
          file=sys.stderr)
    return 1


def _named(message: str, given: str, nb: str) -> str:
    """Say which id a path was mapped to, when it is not the same text."""
    return message if given == nb else f"{message} (from {given!r})"
