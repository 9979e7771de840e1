"""Proof under faults: kills at random moments, damage to every file, full and read-only disks.

The short form runs in CI; the long form (`-m slow`) repeats the kill loop 100+ times.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipulate import IntegrityError, Pipulate, StoreUnavailableError, UntrustedDataError

from .conftest import run_python
from .reliability_helpers import read_only

# --- crash consistency ----------------------------------------------------------

PIP_WRITER = r"""
from pipulate import pip
i = len((pip.info("crash") or {"steps": []})["steps"])  # names only: a restart costs the same at any size
while True:
    # every 5th value is big enough to live in a blob file
    size = 100_000 if i % 5 == 0 else 10
    pip.set("crash", f"s{i:06d}", i.to_bytes(4, "little") * size)
    pip.set(f"job{i % 3}", "last", i)
    print(i, flush=True)
    i += 1
"""


def crash_step_is_whole(n: int, value) -> bool:
    return value in (n.to_bytes(4, "little") * 10, n.to_bytes(4, "little") * 100_000)


def check_crash_store(home: Path, checked: int = 0, everything: bool = False) -> int:
    """The steps are an unbroken prefix and every step committed since ``checked`` (all of
    them when ``everything``) loads whole, as does every other job; returns the step count.

    Damage does not heal: a step that loaded whole once and was broken by a later kill is
    still broken when everything is read again (every 10th kill and after the last). Reading
    only the new steps in between keeps the loop linear in the kills, not quadratic.
    """
    store = Pipulate(home)
    try:
        names = [s["step"] for s in (store.info("crash") or {"steps": []})["steps"]]
        assert names == [f"s{n:06d}" for n in range(len(names))]
        if everything:
            steps = store.read("crash")
            assert list(steps) == names
            assert all(crash_step_is_whole(n, v) for n, v in enumerate(steps.values()))
        else:
            for n in range(checked, len(names)):
                assert crash_step_is_whole(n, store.get("crash", names[n]))
        for j in store.jobs():
            if j != "crash":
                store.read(j)
        return len(names)
    finally:
        store.close()


def kill_loop(home: Path, kills: int, writer: str, check) -> list[int]:
    counts = []
    rng = random.Random(1234)
    for k in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "PIPULATE_HOME": str(home)})
        proc.stdout.readline()  # it is writing
        time.sleep(rng.uniform(0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        counts.append(check(home, counts[-1] if counts else 0, everything=k % 10 == 9 or k == kills - 1))
    return counts


@pytest.mark.parametrize("kills", [pytest.param(20, id="20-kills"),
                                   pytest.param(120, id="120-kills", marks=pytest.mark.slow)])
def test_pip_writer_killed_at_random_moments_leaves_every_committed_step_whole(tmp_path, kills):
    counts = kill_loop(tmp_path / "home", kills, PIP_WRITER, check_crash_store)
    print(f"\n{kills} SIGKILLs survived; steps after each: {counts[:5]} ... {counts[-1]}")
    assert counts == sorted(counts) and counts[-1] > kills  # progress kept across kills


# --- bad input, property-based ----------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
any_value = (json_like | st.binary() | st.tuples(json_like, st.integers()) | st.sets(st.integers())
             | st.frozensets(st.text(max_size=4)) | st.datetimes() | st.dates() | st.decimals(allow_nan=False)
             | st.uuids() | st.complex_numbers(allow_nan=False)
             | st.dictionaries(st.integers() | st.tuples(st.integers()), json_like, max_size=3))
names = st.text(min_size=1, max_size=64).filter(lambda s: s.strip() and "\x00" not in s)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job=names, step=names, value=any_value)
def test_any_key_and_value_round_trip(store, job, step, value):
    store.set(job, step, value)
    got = store.get(job, step)
    assert type(got) is type(value)
    assert got == value


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job=st.one_of(st.none(), st.integers(), st.just(""), st.just("  "), st.binary(), names),
       step=st.one_of(st.none(), st.integers(), st.just(""), st.lists(st.text()), names))
def test_bad_keys_are_value_errors_and_write_nothing(store, job, step):
    good = isinstance(job, str) and job.strip() and isinstance(step, str) and step.strip()
    if good:
        store.set(job, step, 1)
        assert store.get(job, step) == 1
    else:
        before = store.jobs()
        with pytest.raises(ValueError):
            store.set(job, step, 1)
        assert store.jobs() == before


# --- damage to every kind of file ---------------------------------------------------

@pytest.mark.backends("embedded", reason="damages the SQLite file")
def test_truncated_database_is_reported_by_name(tmp_path):
    home = tmp_path / "home"
    store = Pipulate(home)
    for i in range(2000):
        store.set("big", f"s{i}", "x" * 100)
    store.close()
    run_python(f"import sqlite3; sqlite3.connect({str(home / 'pipulate.db')!r}).execute('PRAGMA wal_checkpoint(TRUNCATE)')")
    db = home / "pipulate.db"
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)
    with pytest.raises(IntegrityError, match=r"pipulate\.db.*damaged"):
        Pipulate(home).read("big")


@pytest.mark.backends("embedded", reason="the key file is the embedded store's; the team keeps each user's key in the database (test_team)")
def test_missing_key_file_refuses_old_pickles_and_keeps_everything_else(tmp_path):
    home = tmp_path / "home"
    store = Pipulate(home)
    store.set("j", "obj", lambda x: x)
    store.set("j", "plain", [1, 2])
    store.close()
    (home / "secret.key").unlink()
    fresh = Pipulate(home)
    with pytest.raises(UntrustedDataError, match="job 'j' step 'obj'"):
        fresh.get("j", "obj")
    assert fresh.get("j", "plain") == [1, 2]


@pytest.mark.parametrize("damage", ["truncate", "zero", "flip"])
def test_damaged_blob_loses_only_its_step(store, damage):
    store.set("d", "big", np.arange(100_000))
    store.set("d", "other", np.ones(100_000))
    (digest,) = store.db.rows("SELECT blob FROM steps WHERE step='big'")[0]
    path = store.blobs.path(digest)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "zero":
        data[100:4000] = bytes(3900)
    else:
        data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="job 'd' step 'big'"):
        store.get("d", "big")
    assert (store.get("d", "other") == 1).all()


# --- full disk, read-only folder ------------------------------------------------------

FULL_DISK_WRITER = r"""
import resource, signal, sys, numpy as np
from pipulate import pip, StoreUnavailableError
pip.set("job", "before", [1, 2, 3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # a write past the limit fails with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    pip.set("job", "huge", np.random.default_rng(0).random(2_000_000))  # does not compress
except StoreUnavailableError as exc:
    print("ERROR", exc)
pip.set("job", "small", "still works")           # the process keeps working
print("OK", pip.get("job", "before"), pip.get("job", "small"))
"""


def test_disk_full_gives_a_clear_error_and_keeps_what_was_saved(isolated_home):
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_WRITER, str(1_000_000)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    error, ok = proc.stdout.strip().splitlines()
    assert error.startswith("ERROR job 'job' step 'huge': cannot write its value")
    assert ok == "OK [1, 2, 3] still works"
    assert not list((isolated_home / "blobs").rglob("*.tmp"))


@pytest.mark.backends("embedded", reason="the data folder holds the records only on the embedded backend")
def test_read_only_data_folder_gives_a_clear_error_and_reads_still_work(tmp_path):
    home = tmp_path / "home"
    store = Pipulate(home)
    store.set("job", "kept", {"a": 1})
    store.close()
    with read_only(home):
        ro = Pipulate(home)
        with pytest.raises(StoreUnavailableError, match="read-only|cannot"):
            ro.set("job", "new", 2)
        ro.close()
    assert Pipulate(home).read("job") == {"kept": {"a": 1}}
