"""The state engine: pip.set/get/read/jobs/clear/delete over real SQLite files and processes."""
from __future__ import annotations

import datetime as dt
import decimal
import os
import pathlib
import pickle
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipulate import IntegrityError, Pipulate, UntrustedDataError
from pipulate.signing import KEY_FILE

from .blob_helpers import lose_blob
from .conftest import REPO, run_python


def frame_with_dates_and_categories() -> pd.DataFrame:
    return pd.DataFrame({
        "when": pd.to_datetime(["2024-01-01 10:00", "2024-06-30 23:59", None]),
        "when_tz": pd.date_range("2024-03-01", periods=3, freq="D", tz="Europe/Paris"),
        "kind": pd.Categorical(["a", "b", "a"], categories=["b", "a"], ordered=True),
        "x": [1.5, np.nan, 3.0],
        "n": [1, 2, 3],
        "name": ["ada", None, "grace"],
    }, index=pd.Index(["r1", "r2", "r3"], name="row"))


VALUES = {
    "none": None,
    "bool": True,
    "int": 12345678901234567890,
    "float": 3.25,
    "nan": float("nan"),
    "inf": float("-inf"),
    "str": "héllo ✓",
    "list": [1, "two", [3.0, None], {"k": "v"}],
    "dict": {"a": 1, "nested": {"b": [1, 2]}},
    "dict_int_keys": {1: "one", (2, 3): "tuple key"},
    "dict_with_tag_key": {"$t": "not a tag", "v": 1},
    "datetime": dt.datetime(2024, 5, 17, 12, 30, 1, 123456),
    "datetime_tz": dt.datetime(2024, 5, 17, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    "date": dt.date(2024, 2, 29),
    "time": dt.time(23, 59, 58, 1),
    "timedelta": dt.timedelta(days=-1, seconds=5, microseconds=7),
    "decimal": decimal.Decimal("3.14159265358979323846264338327950288"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "path": pathlib.Path("/tmp/some where/file.txt"),
    "bytes": b"\x00\x01binary\xff",
    "bytearray": bytearray(b"mutable"),
    "tuple": (1, (2, 3), "x"),
    "set": {1, 2, 3},
    "frozenset": frozenset({"a", "b"}),
    "complex": 1 + 2j,
    "nested_types": {"when": [dt.date(2020, 1, 1), {1, 2}], "amount": decimal.Decimal("2.50")},
    "ndarray": np.arange(12, dtype=np.float32).reshape(3, 4),
    "ndarray_big": np.random.default_rng(0).random((300, 300)),
    "ndarray_bool": np.array([True, False]),
    "ndarray_object": np.array([{"a": 1}, None], dtype=object),
    "numpy_scalar": np.float64(2.5),
    "dataframe": frame_with_dates_and_categories(),
    "dataframe_big": pd.DataFrame({"v": np.arange(200_000), "s": ["x"] * 200_000}),
    "dataframe_mixed_objects": pd.DataFrame({"o": [1, "a", (1, 2)]}),
    "dataframe_int_columns": pd.DataFrame({0: [1, 2], 1: ["a", "b"]}),
    "series": pd.Series([1.0, 2.0], index=["a", "b"], name="s"),
    "series_unnamed": pd.Series(pd.Categorical(["x", "y", "x"])),
    "ordered_dict": __import__("collections").OrderedDict(b=1, a=2),
    "lambda_result": range(3),
}


def assert_same(actual, expected):
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(actual, expected)
    elif isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(actual, expected)
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        if expected.dtype.hasobject:
            assert actual.tolist() == expected.tolist()
        else:
            np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, float) and expected != expected:
        assert actual != actual
    else:
        assert actual == expected
        if isinstance(expected, dt.datetime):
            assert actual.tzinfo == expected.tzinfo


@pytest.mark.parametrize("name", list(VALUES))
def test_value_round_trips_with_its_type(store, name):
    store.set("types", name, VALUES[name])
    assert_same(store.get("types", name), VALUES[name])


def test_values_round_trip_in_a_fresh_process(store):
    """The kernel-restart case: what one process sets, the next reads back."""
    run_python(
        "from pipulate import pip\n"
        "import datetime, decimal\n"
        "pip.set('restart', 'first_name', 'Ada')\n"
        "pip.set('restart', 'when', datetime.date(2024, 1, 2))\n"
        "pip.set('restart', 'money', decimal.Decimal('9.99'))\n")
    out = run_python(
        "from pipulate import pip\n"
        "print(repr(pip.read('restart')))\n").stdout
    assert out.strip() == ("{'first_name': 'Ada', 'when': datetime.date(2024, 1, 2), "
                           "'money': Decimal('9.99')}")


NOTEBOOK_CELL = """
from pipulate import pip

class Point:                      # defined in __main__, as in a notebook
    def __init__(self, x, y):
        self.x, self.y = x, y
    def norm2(self):
        return self.x ** 2 + self.y ** 2

pip.set("nb", "point", Point(3, 4))
pip.set("nb", "square", lambda v: v * v)
pip.set("nb", "cls", Point)
"""


def test_notebook_defined_class_instance_and_lambda_survive_a_restart(store):
    run_python(NOTEBOOK_CELL)
    out = run_python(
        "from pipulate import pip\n"
        "p = pip.get('nb', 'point')\n"
        "print(type(p).__name__, p.x, p.y, p.norm2(), pip.get('nb', 'square')(7),\n"
        "      pip.get('nb', 'cls').__name__)\n").stdout
    assert out.split() == ["Point", "3", "4", "25", "49", "Point"]


def test_json_values_are_readable_with_plain_sql(store, backend):
    store.set("plain", "config", {"depth": 2, "urls": ["a", "b"]})
    if backend == "embedded":
        import sqlite3

        con = sqlite3.connect(store.home / "pipulate.db")
        value, fmt = con.execute(
            "SELECT json_extract(value, '$.urls[1]'), format FROM steps WHERE job='plain'").fetchone()
        con.close()
    else:  # bytes on PostgreSQL (one type per column): UTF-8 JSON all the same
        import psycopg

        with psycopg.connect(os.environ["PIPULATE_DATABASE_URL"]) as con:
            value, fmt = con.execute("SELECT convert_from(value, 'UTF8')::jsonb -> 'urls' ->> 1, format "
                                     "FROM steps WHERE job = 'plain'").fetchone()
    assert (value, fmt) == ("b", "json")


def test_large_values_live_in_blob_files_and_small_ones_inline(store):
    store.set("sizes", "small", np.arange(10))
    store.set("sizes", "large", np.zeros(1_000_000))
    steps = {s["step"]: s for s in store.info("sizes")["steps"]}
    assert steps["small"]["in_blob"] == 0
    assert steps["large"]["in_blob"] == 1
    assert len(list((store.home / "blobs").rglob("*"))) >= 2  # a folder and a file


# --- signing -------------------------------------------------------------------

def test_key_file_is_private(store):
    store.set("k", "obj", object.__new__(type("Thing", (), {})))
    mode = stat.S_IMODE(os.stat(store.home / KEY_FILE).st_mode)
    assert mode == 0o600


class _Exploit:
    """Unpickling this runs code: it creates the file named in `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _stored_pickle(store, job, step) -> bytes:
    return bytes(store.db.rows("SELECT value FROM steps WHERE job=? AND step=?", (job, step))[0][0])


def _overwrite(store, job, step, value, forge_checksum=True) -> None:
    """Replace a stored value behind the store's back, as an attacker with file access could
    (recomputing the row's checksum, which is for damage, not for trust)."""
    from pipulate.blobs import content_hash

    checksum = content_hash(value) if forge_checksum else None
    with store.db.write() as conn:
        conn.execute("UPDATE steps SET value=?, checksum=coalesce(?, checksum) WHERE job=? AND step=?",
                     (value, checksum, job, step))


def test_unsigned_pickle_is_refused_and_never_run(store, tmp_path):
    marker = tmp_path / "pwned"
    store.set("job1", "obj", {1, frozenset()}.__class__)  # a type: stored as a pickle
    _overwrite(store, "job1", "obj", pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(UntrustedDataError) as err:
        store.get("job1", "obj")
    assert "job 'job1' step 'obj'" in str(err.value) and "not signed" in str(err.value)
    assert not marker.exists()


def test_altered_pickle_is_refused_and_never_run(store, tmp_path):
    marker = tmp_path / "pwned"
    store.set("job1", "obj", type)
    signed = _stored_pickle(store, "job1", "obj")
    forged = signed[:38] + pickle.dumps(_Exploit(str(marker)))  # keep header, swap payload
    _overwrite(store, "job1", "obj", forged)
    with pytest.raises(UntrustedDataError) as err:
        store.read("job1")
    assert "job 'job1' step 'obj'" in str(err.value) and "altered" in str(err.value)
    assert not marker.exists()


@pytest.mark.backends("embedded", reason="two homes with keys of their own; a team user's key is theirs on every machine (test_team refuses another user's pickle)")
def test_pickle_signed_by_another_workstation_is_refused(tmp_path):
    a, b = Pipulate(tmp_path / "a"), Pipulate(tmp_path / "b")
    a.set("j", "s", type)
    b.set("j", "s", "placeholder")
    _overwrite(b, "j", "s", _stored_pickle(a, "j", "s"))
    b.db.fl.conn.execute("UPDATE steps SET format='pickle' WHERE job='j'")
    with pytest.raises(UntrustedDataError):
        b.get("j", "s")


def test_damaged_blob_is_reported_by_job_and_step(store, backend):
    store.set("dmg", "big", np.arange(100_000))
    store.set("dmg", "ok", 1)
    (digest,) = store.db.rows("SELECT blob FROM steps WHERE step='big'")[0]
    path = store.blobs.path(digest)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"job 'dmg' step 'big'.*damaged"):
        store.get("dmg", "big")
    assert store.get("dmg", "ok") == 1
    path.unlink()
    if backend == "team":  # the home's file was only a cache: the bucket's copy comes back
        np.testing.assert_array_equal(store.get("dmg", "big"), np.arange(100_000))
        lose_blob(store.blobs, digest)
    with pytest.raises(IntegrityError, match="missing"):
        store.get("dmg", "big")


# --- jobs, order, clear, delete --------------------------------------------------

def test_read_keeps_step_order_and_overwrite_keeps_position(store):
    for step in ["c", "a", "b"]:
        store.set("order", step, step.upper())
    store.set("order", "a", "again")
    assert list(store.read("order").items()) == [("c", "C"), ("a", "again"), ("b", "B")]


def test_get_default_and_read_of_unknown_job(store):
    assert store.get("nope", "step") is None
    assert store.get("nope", "step", default=42) == 42
    assert store.read("nope") == {}


def test_jobs_newest_first(store):
    for job in ["first", "second", "third"]:
        store.set(job, "s", 1)
    store.set("first", "s", 2)  # an update does not make a job newer
    assert store.jobs() == ["third", "second", "first"]


def test_clear_from_step_drops_that_step_and_later_ones_only(store):
    for i, step in enumerate(["one", "two", "three", "four"]):
        store.set("wf", step, i)
    assert store.clear("wf", "three") == ["three", "four"]
    assert store.read("wf") == {"one": 0, "two": 1}
    store.set("wf", "three", "new")
    assert list(store.read("wf")) == ["one", "two", "three"]
    assert store.clear("wf") == ["one", "two", "three"]
    assert store.read("wf") == {} and "wf" in store.jobs()


def test_clear_unknown_step_is_a_clear_error(store):
    store.set("wf", "one", 1)
    with pytest.raises(ValueError, match="job 'wf' has no step 'zzz'"):
        store.clear("wf", "zzz")
    assert store.read("wf") == {"one": 1}


def test_delete_removes_job_and_collects_its_blobs(store):
    store.set("gone", "big", np.ones(200_000))
    store.set("kept", "big", np.zeros(200_000))
    assert store.delete("gone") is True
    assert store.delete("gone") is False
    assert "gone" not in store.jobs() and store.read("gone") == {}
    assert store.collect_garbage(grace_seconds=0) == 1
    np.testing.assert_array_equal(store.get("kept", "big"), np.zeros(200_000))


def test_shared_blobs_survive_deleting_one_of_their_jobs(store):
    big = np.arange(300_000)
    store.set("a", "x", big)
    store.set("b", "x", big)
    store.delete("a")
    store.collect_garbage(grace_seconds=0)
    np.testing.assert_array_equal(store.get("b", "x"), big)


@pytest.mark.parametrize("call", [
    lambda p: p.set("", "s", 1),
    lambda p: p.set("   ", "s", 1),
    lambda p: p.set(None, "s", 1),
    lambda p: p.set("job", 3, 1),
    lambda p: p.set("job", None, 1),
    lambda p: p.set("x" * 2000, "s", 1),
    lambda p: p.set("job", "a\x00b", 1),
    lambda p: p.get("", "s"),
    lambda p: p.get("job", ["s"]),
    lambda p: p.read(42),
    lambda p: p.clear("", None),
    lambda p: p.clear("job", 5),
    lambda p: p.delete(b"job"),
], ids=["empty-job", "blank-job", "none-job", "int-step", "none-step", "long-job", "nul-step",
        "get-empty", "get-list-step", "read-int", "clear-empty", "clear-int-step", "delete-bytes"])
def test_wrong_arguments_get_a_value_error_that_says_what_was_expected(store, call):
    with pytest.raises(ValueError, match="must (be|not)"):
        call(store)
    assert store.jobs() == []


# --- several processes --------------------------------------------------------

WRITER = """
import sys
from pipulate import pip
worker = sys.argv[1]
for i in range(1000):
    pip.set("shared", f"w{worker}-{i}", {"worker": worker, "i": i})
"""


def test_four_processes_writing_one_job_all_land(store, isolated_home):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(w)], stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert not any("locked" in e for e in errors), errors
    steps = store.read("shared")
    assert len(steps) == 4000
    assert steps["w3-999"] == {"worker": "3", "i": 999}
    ords = [s["ord"] for s in store.info("shared")["steps"]]
    assert sorted(ords) == list(range(4000))


# --- where the data lives -------------------------------------------------------

def test_pipulate_home_env_var_is_used(isolated_home):
    out = run_python("from pipulate import pip; print(pip.home)").stdout
    assert Path(out.strip()) == isolated_home.resolve()


def test_inside_the_checkout_the_workstation_data_folder_is_used(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PIPULATE_HOME"}
    env["HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", "from pipulate.home import resolve_home; print(resolve_home())"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    assert Path(out.strip()) == REPO / "data"


@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory):
    """The package built and installed non-editable into a separate folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    assert (target / "pipulate" / "store.py").exists()
    return target


@pytest.mark.backends("embedded", reason="where the SQLite file goes")
def test_installed_package_outside_the_checkout_uses_home_dot_pipulate(installed_copy, tmp_path):
    fake_home = tmp_path / "user"
    fake_home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PIPULATE_HOME", "PYTHONPATH")}
    env.update(HOME=str(fake_home), PYTHONPATH=str(installed_copy))
    code = ("import pipulate; from pipulate import pip; pip.set('hi', 'there', 1);"
            "print(pipulate.__file__); print(pip.home)")
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.split("\n")
    assert out[0].startswith(str(installed_copy))
    assert Path(out[1]) == fake_home / ".pipulate"
    assert (fake_home / ".pipulate" / "pipulate.db").exists()
    env["PIPULATE_HOME"] = str(tmp_path / "override")
    out = subprocess.run([sys.executable, "-c", "from pipulate import pip; print(pip.home)"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout
    assert Path(out.strip()) == tmp_path / "override"


def test_damaged_inline_value_is_detected_before_decoding(store):
    store.set("dmg", "arr", np.arange(10))
    store.set("dmg", "text", {"a": 1})
    raw = bytearray(_stored_pickle(store, "dmg", "arr"))
    raw[-1] ^= 0x01  # a flipped bit in the array's data: numpy alone would not notice
    _overwrite(store, "dmg", "arr", bytes(raw), forge_checksum=False)
    with pytest.raises(IntegrityError, match=r"job 'dmg' step 'arr'.*checksum"):
        store.get("dmg", "arr")
    assert store.get("dmg", "text") == {"a": 1}


# --- page cache: big blobs leave it when written, and are read ahead on request ---------------


@pytest.fixture
def advice(monkeypatch):
    """Every posix_fadvise call (fd's file, offset, length, advice); the real call still runs."""
    calls = []
    real = os.posix_fadvise

    def spy(fd, offset, length, advice):
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length, advice))
        return real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    return calls


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this platform")
def test_big_blobs_leave_the_page_cache_once_written(tmp_path, advice):
    from pipulate import blobs

    store = blobs.BlobStore(tmp_path / "blobs", compress=False)
    small = store.put(b"x" * 1000)
    big = store.put(np.random.default_rng(0).random(300_000).tobytes())  # 2.4 MB
    streamed, new, size = store.put_streamed(lambda sink: sink.write(np.arange(500_000).tobytes()))
    assert new and size == 4_000_000
    dropped = {os.path.basename(path) for path, *_, what in advice if what == os.POSIX_FADV_DONTNEED}
    # Written under a temporary name, advised before the rename.
    assert len(dropped) == 2 and not any(small[2:] in name for name in dropped)
    assert all(offset == 0 and length == 0 for _, offset, length, _ in advice)
    assert store.get(big) and store.get(streamed)  # still readable, from disk


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this platform")
def test_prefetch_reads_ahead_whole_blobs_up_to_a_limit(tmp_path, advice):
    from pipulate import blobs

    store = blobs.BlobStore(tmp_path / "blobs", compress=False)
    one = store.put(np.zeros(150_000).tobytes())  # 1.2 MB each (+ the header, padded to 64 bytes: big raw blobs)
    two = store.put(np.ones(150_000).tobytes())
    advice.clear()
    asked = store.prefetch([one, "0" * 32, "not a blob name", two])  # missing and bad names: left out
    assert asked == 2 * (1_200_000 + blobs.ALIGNED_OFFSET)
    ranges = sorted((path, offset, length) for path, offset, length, what in advice
                    if what == os.POSIX_FADV_WILLNEED)
    for digest in (one, two):
        mine = [(o, n) for p, o, n in ranges if p == str(store.path(digest))]
        assert sum(n for _, n in mine) == 1_200_000 + blobs.ALIGNED_OFFSET and mine[0][0] == 0  # the whole file, window by window
    advice.clear()
    assert store.prefetch([one, two], limit=500_000) == 500_000
    assert sum(n for *_, n, what in advice) == 500_000


LOCK_HOLDER = """
import sys, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("PRAGMA journal_mode=delete")  # so that even readers wait on the lock below
conn.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
conn.execute("PRAGMA journal_mode=wal")
"""


def test_opening_the_store_while_another_process_holds_it_waits_without_noise(store, isolated_home):
    # apsw runs a connection's first statements under a 100 ms busy timeout and SQLite
    # logs each refusal; the store retries them, so the user must not see "locked".
    store.set("job", "first", 1)
    store.db.close()  # the journal mode changes only when no other connection is open
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(isolated_home / "pipulate.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        opener = subprocess.Popen(
            [sys.executable, "-c", "from pipulate import pip; pip.set('job', 'second', 2); print('done')"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            opener.wait(timeout=1.0)  # it cannot finish while the lock is held
        except subprocess.TimeoutExpired:
            pass
        holder.stdin.write("release\n")
        holder.stdin.flush()
        out, err = opener.communicate(timeout=120)
    finally:
        holder.communicate(timeout=60)
    assert opener.returncode == 0, err
    assert out.strip() == "done"
    assert "locked" not in err and "SQLITE_LOG" not in err, err
    assert store.read("job") == {"first": 1, "second": 2}
