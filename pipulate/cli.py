"""The ``pipulate`` command. Each subcommand lives in its own module, imported when used."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import PipulateError

# name -> (module with `configure(parser)`, one-line help)
COMMANDS = {
    "up": ("pipulate.up", "start the web app and JupyterLab side by side"),
    "url": ("pipulate.access", "print the URLs (with the token) of the running workstation"),
    "state": ("pipulate.kernel_state.cli", "list, show or clear the saved kernel state of notebooks"),
    "recover": ("pipulate.recover.cli", "bring back lost notebook code"),
    "team": ("pipulate.team.admin", "set up the team database (PostgreSQL) and its users"),
    "store": ("pipulate.team.copy", "copy a whole store (embedded <-> team), verifying every value"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipulate", description="The Pipulate notebook workstation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        try:
            importlib.import_module(module).configure(command)
        except ModuleNotFoundError as exc:
            if not (exc.name and module.startswith(exc.name)):
                raise
            command.set_defaults(func=lambda args, name=name: _not_installed(name))
    return parser


def _not_installed(name: str) -> int:
    print(f"pipulate {name}: not available in this version", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except PipulateError as exc:
        print(f"pipulate {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
