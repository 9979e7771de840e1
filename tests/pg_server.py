"""A real PostgreSQL server for the tests: a throwaway cluster per test session.

Debian's ``postgresql`` package (``.ci/run`` installs it): ``initdb`` and ``pg_ctl`` run as
the ``postgres`` user when the tests run as root (initdb refuses root), on a free loopback
port, with its data and socket folders in a temporary folder that user owns. Password
logins (scram) as in a real deployment. The team schema is made once in a template
database; each test gets a fresh copy of it (``CREATE DATABASE ... TEMPLATE``, cheap).
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .ports import free_ports

TEMPLATE = "pipulate_template"
ADMIN = "postgres"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (see .ci/run)")


class PostgresServer:
    def __init__(self):
        self.bin = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="pipulate-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.password = secrets.token_hex(12)
        self._users: set[str] = set()
        self.port = free_ports(1)[0]
        self._as_postgres = os.geteuid() == 0
        self.sockets.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", ADMIN, "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "--no-locale", "-E", "UTF8", "--no-sync")
        self.start()
        self._make_template()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}\n{log[-3000:]}")
        return proc

    def start(self) -> None:
        """Start (or start again, on the same port and data) and wait until it accepts logins."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "-o",
                  f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: ``immediate`` is a crash (no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop")

    def url(self, database: str = "postgres", user: str = ADMIN, password: str | None = None) -> str:
        return (f"postgresql://{user}:{password or self.password}@127.0.0.1:{self.port}/{database}")

    def admin(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(self.url(database), autocommit=True, connect_timeout=30)

    def _make_template(self) -> None:
        from pipulate.team.admin import init_schema

        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        init_schema(self.url(TEMPLATE))

    def make_database(self) -> str:
        """A fresh database holding the team schema; returns its name."""
        name = "t_" + secrets.token_hex(6)
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return name

    def make_user(self, name: str) -> str:
        """A user's login role (member of pipulate_users), made once per server; returns its password."""
        from pipulate.team.admin import add_user

        password = "pw-" + name
        if name not in self._users:
            add_user(name, password, self.url())
            self._users.add(name)
        return password

    def user_url(self, database: str, name: str) -> str:
        """The PIPULATE_DATABASE_URL of user ``name`` (made if new) on ``database``."""
        return self.url(database, name, self.make_user(name))

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def team_url(postgres_server, monkeypatch):
    """PIPULATE_DATABASE_URL of a fresh team database, as user ``tester``, set in the
    environment too (kernels and processes the test starts use it)."""
    url = postgres_server.user_url(postgres_server.make_database(), "tester")
    monkeypatch.setenv("PIPULATE_DATABASE_URL", url)
    return url
