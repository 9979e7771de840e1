"""``pipulate team``: an administrator sets up the team database and its users.

    pipulate team init [--url ADMIN_URL]                      create (or upgrade) the tables
    pipulate team add-user NAME [--password PW] [--url ADMIN_URL]   a login role for one person

ADMIN_URL (default: PIPULATE_DATABASE_URL) connects as a superuser, or as a role with
BYPASSRLS that may create tables and roles. Users then set their own
``PIPULATE_DATABASE_URL=postgresql://NAME:PW@host/db`` (JupyterHub does it for them).
"""
from __future__ import annotations

import argparse
import os
import secrets
from importlib import resources

from ..errors import StoreUnavailableError

GROUP = "pipulate_users"


def schema_sql() -> str:
    return resources.files("pipulate.team").joinpath("schema.sql").read_text()


def _admin(url: str | None):
    import psycopg

    url = url or os.environ.get("PIPULATE_DATABASE_URL")
    if not url:
        raise StoreUnavailableError("no database: pass --url or set PIPULATE_DATABASE_URL")
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise StoreUnavailableError(f"cannot connect to the team database: {str(exc).strip()}") from None


def init_schema(url: str | None = None) -> None:
    """Create the tables, row security and grants (idempotent)."""
    with _admin(url) as conn, conn.transaction():
        conn.execute(schema_sql())


def add_user(name: str, password: str, url: str | None = None) -> None:
    """A login role ``name`` in the pipulate_users group (its password set again if it exists)."""
    from psycopg import sql

    with _admin(url) as conn, conn.transaction():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {}").format(
            sql.SQL(verb), sql.Identifier(name), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(GROUP), sql.Identifier(name)))


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="team_command", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="create or upgrade the team database's tables (as its administrator)")
    init.add_argument("--url", help="the administrator's database URL (default: PIPULATE_DATABASE_URL)")
    init.set_defaults(func=_run_init)
    user = sub.add_parser("add-user", help="create a user's login role (or set its password again)")
    user.add_argument("name", help="the role name, e.g. the JupyterHub user name")
    user.add_argument("--password", help="default: a new random one, printed")
    user.add_argument("--url", help="the administrator's database URL (default: PIPULATE_DATABASE_URL)")
    user.set_defaults(func=_run_add_user)


def _run_init(args) -> int:
    init_schema(args.url)
    print("pipulate team: the team database's tables are ready")
    return 0


def _run_add_user(args) -> int:
    password = args.password or secrets.token_urlsafe(18)
    add_user(args.name, password, args.url)
    print(f"pipulate team: role {args.name} is ready" + ("" if args.password else f"; its password: {password}"))
    return 0
