"""The team backend's own guarantees, on a real PostgreSQL server (tests/pg_server.py).

- Each user's kernel state and notebook versions are theirs alone, enforced by PostgreSQL
  (row-level security): another user's connection cannot read or change them, even with
  hand-written SQL; workflow jobs are shared.
- Two writers of one job both land; setting one step costs the same in a job of 1 or 10,000
  (both backends).
- The server stopped (``pg_ctl stop -m immediate``) during a real kernel's saves: the cells
  run, the save fails with one line, nothing half-written is visible, and saving resumes by
  itself once the server is back.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pipulate import Pipulate
from pipulate.errors import StoreUnavailableError
from pipulate.kernel_state import KernelStateStore
from pipulate.kernel_state.store import Entry
from pipulate.recover.versions import NotebookVersions
from pipulate.settings import Settings

from .reliability_helpers import restore_whole

pytestmark = pytest.mark.timeout(300)
# Tests that set up their own users and homes on the test PostgreSQL server run once.
own_servers = pytest.mark.backends("team", reason="sets up its own users and stores on the server")


def commit(ks, notebook, **values):
    entries = [Entry(name, "int", "json", len(str(v)), f"h{name}{v}", None, str(v)) for name, v in values.items()]
    return ks.commit_version(notebook, notebook, entries, []).version


@own_servers
def test_a_users_kernel_state_is_theirs_alone(postgres_server, tmp_path):
    db = postgres_server.make_database()
    alice_url, bob_url = postgres_server.user_url(db, "alice"), postgres_server.user_url(db, "bob")
    alice = KernelStateStore(tmp_path / "a", settings=Settings(database_url=alice_url))
    bob = KernelStateStore(tmp_path / "b", settings=Settings(database_url=bob_url))
    commit(alice, "analysis.ipynb", secret=42)
    NotebookVersions(tmp_path / "a", Settings(database_url=alice_url)).record(tmp_path / "a.ipynb", b"{}")
    # Both may have analysis.ipynb: the keys include the owner.
    commit(bob, "analysis.ipynb", mine=1)
    assert [e.name for e in alice.manifest("analysis.ipynb").entries] == ["secret"]
    assert [e.name for e in bob.manifest("analysis.ipynb").entries] == ["mine"]
    assert [n["id"] for n in bob.notebooks()] == ["analysis.ipynb"] and len(alice.notebooks()) == 1
    # Jobs are the team's.
    alice.engine.set("shared", "step", "from alice")
    assert bob.engine.get("shared", "step") == "from alice"

    # Bob's own connection, hand-written SQL: nothing of Alice's is visible or reachable.
    with psycopg.connect(bob_url, autocommit=True) as conn:
        for table in ("kernel_notebooks", "kernel_versions", "kernel_variables", "notebook_versions"):
            owners = {r[0] for r in conn.execute(f"SELECT owner FROM {table}")}
            assert owners <= {"bob"}, table
        assert conn.execute("SELECT count(*) FROM kernel_variables WHERE name = 'secret'").fetchone() == (0,)
        assert conn.execute("UPDATE kernel_variables SET value = '0' WHERE owner = 'alice'").rowcount == 0
        assert conn.execute("DELETE FROM kernel_versions WHERE owner = 'alice'").rowcount == 0
    with psycopg.connect(bob_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO kernel_notebooks (owner, id, name, created, updated) "
                         "VALUES ('alice', 'x.ipynb', 'x', '', '')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE kernel_variables DISABLE ROW LEVEL SECURITY")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET ROLE alice")
    # Alice's state is whole.
    assert alice.manifest("analysis.ipynb").by_name()["secret"].value == "42"
    assert bob.clear("analysis.ipynb") and alice.latest_version("analysis.ipynb") == 1
    for s in (alice, bob):
        s.close()


@own_servers
def test_moving_a_row_to_another_owner_is_refused(postgres_server):
    db = postgres_server.make_database()
    with psycopg.connect(postgres_server.user_url(db, "bob"), autocommit=True) as conn:
        conn.execute("INSERT INTO kernel_skip_restore (notebook) VALUES ('n.ipynb')")
        assert conn.execute("SELECT owner FROM kernel_skip_restore").fetchall() == [("bob",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE kernel_skip_restore SET owner = 'alice'")


WRITER = """
import sys
from pipulate import Pipulate
p = Pipulate()
for i in range(int(sys.argv[2])):
    p.set("shared", f"{sys.argv[1]}-{i}", i)
"""


def test_two_writers_of_one_job_both_land(store):
    n = 150
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, name, str(n)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in "ab"]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    assert store.read("shared") == {f"{w}-{i}": i for w in "ab" for i in range(n)}
    ords = [s["ord"] for s in store.info("shared")["steps"]]
    assert sorted(ords) == list(range(2 * n)), "every step has its own place in the order"


def _write_cost(store, backend, job, step, value) -> tuple[int, int]:
    """(statements, rows) that one ``set`` cost: as the database reports them."""
    if backend == "team":
        before = store.db.write_statements, store.db.write_rows
        store.set(job, step, value)
        return store.db.write_statements - before[0], store.db.write_rows - before[1]
    conn = store.db.fl.conn
    before = conn.total_changes()
    store.set(job, step, value)
    return 0, conn.total_changes() - before


def test_one_step_costs_the_same_in_a_job_of_1_or_10000(store, backend):
    store.set("small", "s0", 0)
    store.set_many("big", {f"s{i}": i for i in range(10_000)})
    for step in ("s0", "new"):  # a step set again, and a new one
        assert _write_cost(store, backend, "small", step, 1) == _write_cost(store, backend, "big", step, 1)
    assert len(store.read("big")) == 10_001


@own_servers
def test_a_server_that_is_down_gives_one_clear_line_and_comes_back(postgres_server, team_url, tmp_path):
    p = Pipulate(tmp_path / "h")
    p.set("j", "a", 1)
    postgres_server.stop("immediate")
    try:
        with pytest.raises(StoreUnavailableError) as raised:
            p.set("j", "b", 2)
        message = str(raised.value)
        assert "\n" not in message and "team database" in message and "unavailable" in message, message
        assert "pw-tester" not in message, "the password stays out of messages"
    finally:
        postgres_server.start()
    p.set("j", "b", 2)  # the next call connects again
    assert p.read("j") == {"a": 1, "b": 2}


def warning_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("pipulate:")]


@own_servers
def test_server_stopped_during_a_kernels_saves(postgres_server, team_url, kernels, isolated_home):
    ks = KernelStateStore(isolated_home)
    k, _ = kernels.start("fault.ipynb")
    k.ok("import numpy as np\nkept = [1, 2, 3]\nnote = 'before'")
    before = ks.latest_version("fault.ipynb")
    assert before is not None
    postgres_server.stop("immediate")
    try:
        out, err = k.run("arr = np.arange(50_000)\nprint('cell result', int(arr.sum()))")
        assert err is None, err
        assert "cell result 1249975000" in out, out
        out = k.ok("print('ok', len(kept), note)")  # the kernel keeps working; this cell reports the save
        assert "ok 3 before" in out
        (line,) = warning_lines(out)
        assert line.startswith("pipulate: kernel state after cell [") and "not saved: StoreUnavailableError" in line \
            and "team database" in line and line.endswith("and the cell ran as usual"), line
    finally:
        postgres_server.start()
    out = k.ok("note = 'after'")  # may still report the save of the cell before (made while down)
    out = k.ok("done = True")
    assert not warning_lines(out), out
    latest = ks.latest_version("fault.ipynb")
    assert latest > before
    ns = restore_whole(ks, "fault.ipynb", latest)
    assert ns["note"] == "after" and int(ns["arr"].sum()) == 1249975000 and ns["kept"] == [1, 2, 3]
    # Nothing half-written: every version there is holds all its variables.
    for v in ks.versions("fault.ipynb"):
        assert len(ks.manifest("fault.ipynb", v["version"]).entries) == v["variable_count"]
        restore_whole(ks, "fault.ipynb", v["version"])
    ks.close()


class Point:
    def __init__(self, x):
        self.x = x


@own_servers
def test_a_pickle_from_another_user_is_refused_and_plain_values_are_shared(postgres_server, tmp_path):
    """Each user's kernel trusts only their own signing key (the default): a shared job's pickled
    value written by one user is refused, clearly, for another; JSON and Arrow values are not pickles."""
    import pandas as pd

    from pipulate.errors import UntrustedDataError

    db = postgres_server.make_database()
    alice = Pipulate(tmp_path / "a", settings=Settings(database_url=postgres_server.user_url(db, "alice")))
    bob = Pipulate(tmp_path / "b", settings=Settings(database_url=postgres_server.user_url(db, "bob")))
    alice.set("shared", "config", {"depth": 2})
    alice.set("shared", "frame", pd.DataFrame({"a": [1, 2]}))
    alice.set("shared", "object", Point(3))
    assert bob.get("shared", "config") == {"depth": 2}
    assert bob.get("shared", "frame")["a"].tolist() == [1, 2]
    with pytest.raises(UntrustedDataError, match="'object'.*signed with another key; refusing to unpickle"):
        bob.get("shared", "object")
    assert alice.get("shared", "object").x == 3


@own_servers
def test_a_users_pickles_come_back_on_another_machine_and_their_key_is_theirs_alone(postgres_server, tmp_path):
    """The signing key lives in the database, per user: a fresh home (a machine thrown away) reads
    what the old one signed, and another user can neither read that key nor have theirs replaced."""
    db = postgres_server.make_database()
    alice_url = postgres_server.user_url(db, "alice")
    first = Pipulate(tmp_path / "old-machine", settings=Settings(database_url=alice_url))
    first.set("mine", "object", Point(7))
    first.close()
    again = Pipulate(tmp_path / "new-machine", settings=Settings(database_url=alice_url))
    assert again.get("mine", "object").x == 7
    again.close()
    with psycopg.connect(postgres_server.user_url(db, "bob"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM signing_keys").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO signing_keys (owner, key) VALUES ('alice', 'x')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE signing_keys SET key = 'x'")


@own_servers
def test_the_admin_commands_make_the_schema_and_a_user(postgres_server, tmp_path, capsys):
    from pipulate.cli import main

    with postgres_server.admin() as conn:
        conn.execute("CREATE DATABASE empty_for_init")
    admin_url = postgres_server.url("empty_for_init")
    assert main(["team", "init", "--url", admin_url]) == 0
    assert main(["team", "init", "--url", admin_url]) == 0  # again: idempotent
    assert main(["team", "add-user", "carol", "--url", admin_url]) == 0
    password = capsys.readouterr().out.strip().rsplit("its password: ", 1)[1]
    carol = Pipulate(tmp_path / "c", settings=Settings(database_url=postgres_server.url("empty_for_init", "carol",
                                                                                         password)))
    carol.set("job", "step", [1, 2])
    assert carol.read("job") == {"step": [1, 2]}
    with psycopg.connect(postgres_server.url("empty_for_init", "carol", password), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE mine (x int)")
    assert main(["team", "init", "--url", postgres_server.url("empty_for_init", "carol", "wrong")]) == 1
    assert "cannot connect to the team database" in capsys.readouterr().err


def test_the_paramstyle_is_adapted_in_one_place_and_quoted_text_is_left_alone():
    from pipulate.team.postgres import adapt_sql

    assert adapt_sql("SELECT * FROM t WHERE a = ? AND b = ?") == ("SELECT * FROM t WHERE a = %s AND b = %s", None)
    assert adapt_sql("a = ?1 AND b <= ?2 AND (c IS NULL OR c > ?2) AND d = ?1") == (
        "a = %s AND b <= %s AND (c IS NULL OR c > %s) AND d = %s", (0, 1, 1, 0))
    assert adapt_sql("x LIKE '%?''%' AND \"q?\" = ? AND y % 2 = 0") == (
        "x LIKE '%%?''%%' AND \"q?\" = %s AND y %% 2 = 0", None)


def test_a_test_runs_on_the_backend_its_id_names(store, backend):
    """tests/conftest.py's promise, which every [team] test leans on: its store, and the processes
    it starts, are on PostgreSQL and S3."""
    from pipulate.team.postgres import PostgresDatabase
    from pipulate.team.s3 import S3BlobStore

    assert isinstance(store.db, PostgresDatabase) == (backend == "team")
    assert isinstance(store.blobs, S3BlobStore) == (backend == "team")
    probe = subprocess.run([sys.executable, "-c", "from pipulate import pip; print(type(pip.db).__name__)"],
                           capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert probe.stdout.strip() == ("PostgresDatabase" if backend == "team" else "Database"), probe.stderr


@pytest.mark.backends("embedded", reason="collects tests in a pytest of its own; opens no store")
def test_the_backends_option_narrows_a_run_and_refuses_a_name_it_does_not_know():
    def collect(*args):
        return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               *args, "tests/test_team.py::test_a_test_runs_on_the_backend_its_id_names"],
                              capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    ids = {b: [line for line in collect(f"--backends={b}").stdout.splitlines() if "::" in line]
           for b in ("embedded", "team", "embedded,team")}
    assert [i.rsplit("[", 1)[1] for i in ids["embedded"]] == ["embedded]"]
    assert [i.rsplit("[", 1)[1] for i in ids["team"]] == ["team]"]
    assert len(ids["embedded,team"]) == 2
    bad = collect("--backends=oracle")
    assert bad.returncode != 0 and "--backends: oracle; choose from embedded, team" in bad.stderr
