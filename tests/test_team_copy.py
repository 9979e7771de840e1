"""``pipulate store copy FROM TO``: a whole store, embedded -> embedded with S3 blobs (a real
SeaweedFS server) and back; interrupted and run again; damaged source blobs refused by
name; bad input refused with a clear message."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipulate import Pipulate
from pipulate.cli import main
from pipulate.db import DB_FILE, Database
from pipulate.recover.versions import NotebookVersions
from pipulate.settings import Settings
from pipulate.team.copy import TABLES

from .kernel_helpers import Kernels
from .s3_server import client
from .test_kernel_state_kernels import BUILD, CHECK

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.backends("embedded", reason="copies from the embedded store to the team one it sets up")]


class Point:  # a pickled value (module-level: importable when decoded)
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return type(other) is Point and other.x == self.x


def fill(home: Path) -> dict:
    """Steps inline and in blobs, a pickle, a notebook version: what the copy must carry."""
    p = Pipulate(home, settings=Settings(home=str(home)))
    values = {"name": "Ada", "big": np.arange(300_000), "zeros": np.zeros(100_000), "point": Point(3)}
    for step, value in values.items():
        p.set("job", step, value)
    p.set("other", "big", np.arange(300_000))  # a blob two steps share
    p.close()
    notebook = home.parent / "nb.ipynb"
    notebook.write_text('{"cells": []}' + " " * 100_000)
    versions = NotebookVersions(home, Settings(home=str(home)))
    versions.record(notebook)
    versions.close()
    return values


def table_rows(home: Path) -> dict:
    db = Database(home / DB_FILE)
    try:
        existing = {r[0] for r in db.rows("SELECT name FROM sqlite_master WHERE type='table'")}
        return {t: sorted(db.rows(f"SELECT * FROM {t}"), key=repr) for t, _ in TABLES if t in existing}
    finally:
        db.close()


def assert_kernel_state_back(home: Path, work: Path) -> None:
    """A kernel on ``home`` restores the state BUILD made, whole."""
    work.mkdir()
    again = Kernels(home, work)
    try:
        k, out = again.start("copied.ipynb")
        assert "restored" in out, out
        assert "CHECK OK" in k.ok(CHECK)
    finally:
        again.close()


def copy(*args: str, capsys=None) -> tuple[int, str]:
    code = main(["store", "copy", *args])
    return code, (capsys.readouterr().err if capsys else "")


def test_embedded_to_s3_blobs_and_back(kernels, isolated_home, tmp_path, s3_blobs, s3_server, capsys, monkeypatch):
    monkeypatch.delenv("PIPULATE_BLOBS_URL")  # the source keeps its blob files
    k, _ = kernels.start("copied.ipynb")
    k.ok(BUILD)
    k.close()
    values = fill(isolated_home)
    team, back = tmp_path / "team", tmp_path / "back"

    assert copy(str(isolated_home), str(team), "--to-blobs", s3_blobs)[0] == 0
    assert "blobs copied" in capsys.readouterr().out
    in_bucket = [p for p in client(s3_server).find(s3_blobs[len("s3://"):])]
    assert len(in_bucket) >= 4, in_bucket
    shutil.rmtree(team / "blobs", ignore_errors=True)  # the team side's cache goes: the bucket serves
    assert copy(str(team), str(back), "--from-blobs", s3_blobs)[0] == 0

    assert table_rows(back) == table_rows(isolated_home) == table_rows(team)
    p = Pipulate(back, settings=Settings(home=str(back)))
    got = p.read("job")
    assert got["name"] == "Ada" and got["point"] == Point(3)
    np.testing.assert_array_equal(got["big"], values["big"])
    p.close()
    # The kernel state comes back in a kernel on the copy.
    assert_kernel_state_back(back, tmp_path / "work-back")


def test_rerun_after_an_interruption_finishes_the_copy(isolated_home, tmp_path, s3_blobs, s3_server, monkeypatch):
    monkeypatch.delenv("PIPULATE_BLOBS_URL")
    p = Pipulate(isolated_home)
    for i in range(150):  # a copy long enough to be stopped in the middle
        p.set("many", f"s{i}", np.random.default_rng(i).random(20_000))
    p.close()
    team = tmp_path / "team"
    proc = subprocess.Popen([sys.executable, "-m", "pipulate", "store", "copy", str(isolated_home), str(team),
                             "--to-blobs", s3_blobs], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    fs, prefix = client(s3_server), s3_blobs[len("s3://"):]
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:  # killed once some blobs are there
        if len(fs.find(prefix)) >= 20:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(60)
    if (team / DB_FILE).exists():  # whatever was copied names no blob the bucket lacks
        db = Database(team / DB_FILE)
        try:
            named = db.referenced_blobs() if db.rows(
                "SELECT 1 FROM sqlite_master WHERE name = 'steps'") else set()
        finally:
            db.close()
        assert all(fs.exists(f"{prefix}/{b[:2]}/{b[2:]}") for b in named)

    assert main(["store", "copy", str(isolated_home), str(team), "--to-blobs", s3_blobs]) == 0
    assert main(["store", "copy", str(isolated_home), str(team), "--to-blobs", s3_blobs]) == 0  # again: a no-op
    assert table_rows(team) == table_rows(isolated_home)
    monkeypatch.setenv("PIPULATE_BLOBS_URL", s3_blobs)
    copied = Pipulate(team)
    np.testing.assert_array_equal(copied.get("many", "s149"), np.random.default_rng(149).random(20_000))
    copied.close()


def test_a_damaged_source_blob_is_refused_by_name_and_nothing_names_it(isolated_home, tmp_path, capsys):
    p = Pipulate(isolated_home)
    p.set("dmg", "big", np.arange(100_000))
    p.set("dmg", "fine", np.ones(100_000))
    (digest,) = p.db.rows("SELECT blob FROM steps WHERE step='big'")[0]
    path = p.blobs.path(digest)
    p.close()
    good = path.read_bytes()
    data = bytearray(good)
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    target = tmp_path / "target"
    code, err = copy(str(isolated_home), str(target), capsys=capsys)
    assert code == 2
    assert f"blob {digest} is damaged" in err and "job='dmg', step='big'" in err, err
    assert not table_rows(target).get("steps")  # no record names it (nor any other)
    path.write_bytes(good)  # mended: the copy goes through
    assert copy(str(isolated_home), str(target))[0] == 0
    assert table_rows(target) == table_rows(isolated_home)


@pytest.mark.parametrize("args, says", [
    (["mysql://db/x", "{tmp}/t"], "FROM: unknown kind of store 'mysql://db/x'"),
    (["{home}", "s3://bucket/x"], "TO: unknown kind of store 's3://bucket/x'"),
    (["{tmp}/nowhere", "{tmp}/t"], "is not a store (no such folder)"),
    (["{tmp}", "{tmp}/t"], "is not a store (no pipulate.db in it)"),
    (["{home}", "{home}"], "FROM and TO are the same store"),
    (["{home}", "{tmp}/t", "--to-blobs", "http://bucket/x"], "TO blobs: the blobs URL must look like s3://"),
    (["{home}", "{tmp}/file.txt"], "is not a folder"),
], ids=["unknown-scheme", "s3-as-store", "missing-folder", "not-a-store", "same", "bad-blobs-url", "file"])
def test_bad_input_gets_a_clear_error_and_changes_nothing(isolated_home, tmp_path, capsys, args, says):
    Pipulate(isolated_home).set("kept", "s", 1)
    (tmp_path / "file.txt").write_text("x")
    before = table_rows(isolated_home)
    args = [a.format(tmp=tmp_path, home=isolated_home) for a in args]
    code, err = copy(*args, capsys=capsys)
    assert code == 2 and says in err and err.count("\n") == 1, err
    assert table_rows(isolated_home) == before
    assert not (tmp_path / "t").exists()


def test_embedded_to_postgresql_and_s3_and_back(kernels, isolated_home, tmp_path, postgres_server, s3_blobs,
                                               capsys, monkeypatch):
    """A user moves their workstation's store to the team's (their own role), and back."""
    monkeypatch.delenv("PIPULATE_BLOBS_URL")  # the source keeps its blob files
    k, _ = kernels.start("copied.ipynb")
    k.ok(BUILD)
    k.close()
    values = fill(isolated_home)
    team = postgres_server.user_url(postgres_server.make_database(), "mover")
    monkeypatch.setenv("PIPULATE_HOME", str(tmp_path / "movers-home"))  # the team side's cache and key

    assert copy(str(isolated_home), team, "--to-blobs", s3_blobs)[0] == 0
    first = capsys.readouterr().out
    assert copy(str(isolated_home), team, "--to-blobs", s3_blobs)[0] == 0  # again: nothing new
    assert "blobs copied: 0" in capsys.readouterr().out, first
    on_team = Pipulate(tmp_path / "another-machine", settings=Settings(database_url=team, blobs_url=s3_blobs))
    got = on_team.read("job")
    assert got["name"] == "Ada" and got["point"] == Point(3)  # the pickle: signed with the key that moved
    np.testing.assert_array_equal(got["big"], values["big"])
    on_team.close()

    back = tmp_path / "back"
    assert copy(team, str(back), "--from-blobs", s3_blobs)[0] == 0
    assert table_rows(back).keys() == table_rows(isolated_home).keys()
    for table, rows in table_rows(isolated_home).items():
        if table != "notebook_versions":  # its numbers are the team database's own
            assert table_rows(back)[table] == rows, table
    # The kernel state comes back in a kernel on the copy.
    monkeypatch.delenv("PIPULATE_DATABASE_URL", raising=False)
    assert_kernel_state_back(back, tmp_path / "work-back")
