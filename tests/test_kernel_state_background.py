"""Saves that finish after the cell (background.py) and DataFrames stored column by column (frames.py).

In-process IPython shells here (the hooks a kernel runs); real kernels are in
test_kernel_state_kernels.py, which waits for each cell's save the way a user would.
"""
from __future__ import annotations

import os
import sys
import textwrap
import threading

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from pipulate.kernel_state import restoring, saving
from pipulate.kernel_state.extension import current
from pipulate.kernel_state.frames import FRAME
from pipulate.kernel_state.saving import Saver
from pipulate.settings import Settings

from .blob_helpers import damage_blob
from .conftest import run_python

NB = "bg.ipynb"


@pytest.fixture
def shell(isolated_home, backend, monkeypatch):
    """An IPython shell with the extension loaded, as a kernel has it (on the test's backend)."""
    monkeypatch.setenv("PIPULATE_NOTEBOOK", NB)
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance()
    ip.history_manager.enabled = False
    ip.run_line_magic("load_ext", "pipulate")
    yield ip
    state = current(ip)
    if state is not None:
        state.flush()
        ip.run_line_magic("unload_ext", "pipulate")
    InteractiveShell.clear_instance()


def run(ip, code: str):
    result = ip.run_cell(code, store_history=True)
    assert result.success, result.error_in_exec or result.error_before_exec
    return result


def blob_files(home) -> set[str]:
    return {p.parent.name + p.name for p in (home / "blobs").rglob("*") if p.is_file() and not p.name.startswith(".")}


def restored(ks, version=None) -> dict:
    ns: dict = {}
    result = restoring.restore(ks, NB, ns, version)
    assert not result.failed, result.failed
    return ns


# --- frames, one blob per column ---------------------------------------------------------


@pytest.fixture
def by_columns(monkeypatch):
    """Frames of any size stored one blob per column (small ones are stored whole)."""
    monkeypatch.setattr(saving, "SMALL_FRAME_BYTES", 0)


def frame(rows=200_000):
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.random(rows), "b": np.arange(rows), "s": [f"item {i % 97}" for i in range(rows)],
                         "t": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(rows), unit="s")})


def test_adding_a_column_writes_only_that_column(ks, isolated_home):
    saver = Saver(ks, NB, NB)
    df = frame()
    saver.save({"df": df})
    before = blob_files(isolated_home)
    df["c"] = df["a"] * 2
    result = saver.save({"df": df}, cell='df["c"] = df["a"] * 2')
    assert result.written == ["df"]
    new = blob_files(isolated_home) - before
    assert len(new) == 2, "the new column and the new schema, nothing else"
    entry = ks.manifest(NB).by_name()["df"]
    assert entry.format == FRAME and len(entry.parts) == 5
    pd.testing.assert_frame_equal(restored(ks)["df"], df)


def test_a_cell_that_only_reads_a_frame_writes_nothing(ks, isolated_home):
    saver = Saver(ks, NB, NB)
    df = frame()
    saver.save({"df": df})
    before = blob_files(isolated_home)
    result = saver.save({"df": df, "n": len(df)}, cell="n = len(df)")
    assert result.written == [] and blob_files(isolated_home) == before
    assert restored(ks)["n"] == len(df)


def test_frames_with_any_index_and_dtypes_round_trip_by_columns(by_columns, ks):
    df = frame(1_000).set_index("s")
    multi = frame(500).set_index(["s", "b"])
    tz = pd.DataFrame({"when": pd.date_range("2024", periods=4, tz="Europe/Paris"), "nat": [pd.NaT, pd.Timestamp(0), pd.NaT, pd.Timestamp(1)],
                       "dur": pd.to_timedelta([1, 2, None, 4], unit="h"), "f": [1.0, np.nan, 3.0, np.inf]})
    Saver(ks, NB, NB).save({"df": df, "multi": multi, "tz": tz})
    ns = restored(ks)
    for name, value in (("df", df), ("multi", multi), ("tz", tz)):
        pd.testing.assert_frame_equal(ns[name], value, check_exact=True)
    assert {name: e.format for name, e in ks.manifest(NB).by_name().items()} == {
        "df": FRAME, "tz": FRAME, "multi": "pickle"}  # an index of tuples is not one Arrow gives back exactly


def test_garbage_collection_keeps_every_column_a_version_needs(by_columns, ks, isolated_home):
    saver = Saver(ks, NB, NB)
    df = frame(50_000)
    saver.save({"df": df})
    df["c"] = 1.5
    saver.save({"df": df}, cell='df["c"] = 1.5')
    assert ks.engine.collect_garbage(grace_seconds=0) >= 0
    pd.testing.assert_frame_equal(restored(ks)["df"], df)
    pd.testing.assert_frame_equal(restored(ks, 1)["df"], df.drop(columns="c"))


def test_a_damaged_column_loses_only_its_frame(by_columns, ks, isolated_home):
    df, other = frame(20_000), frame(10_000)
    Saver(ks, NB, NB).save({"df": df, "other": other, "x": 1})
    column = ks.manifest(NB).by_name()["df"].parts[1]
    damage_blob(ks.blobs, column, middle=True)
    ns: dict = {}
    result = restoring.restore(ks, NB, ns)
    assert [f["name"] for f in result.failed] == ["df"] and "damaged" in result.failed[0]["reason"]
    assert ns["x"] == 1
    pd.testing.assert_frame_equal(ns["other"], other)


def test_a_missing_column_list_is_reported_by_name(by_columns, ks, isolated_home):
    Saver(ks, NB, NB).save({"df": frame(1_000), "x": 1})
    with ks.db.write() as conn:  # as damage would, on either backend
        conn.execute("DELETE FROM kernel_frame_columns WHERE name = 'df' AND position = 2")
    ns: dict = {}
    result = restoring.restore(ks, NB, ns)
    assert result.failed == [{"name": "df", "reason": "its list of column blobs is damaged or missing"}]
    assert ns["x"] == 1


def test_small_frames_are_stored_whole_and_big_ones_by_column(ks, isolated_home):
    small, big = frame(2_000), frame(100_000)
    Saver(ks, NB, NB).save({"small": small, "big": big})
    entries = ks.manifest(NB).by_name()
    assert entries["small"].format == "arrow" and entries["small"].parts is None
    assert entries["big"].format == FRAME and len(entries["big"].parts) == 4
    ns = restored(ks)
    pd.testing.assert_frame_equal(ns["small"], small, check_exact=True)
    pd.testing.assert_frame_equal(ns["big"], big, check_exact=True)


def test_columns_stored_before_are_not_written_again(ks, isolated_home):
    ks.blobs.disk_rate = 10e9  # big columns go raw, streamed: the path a merge's columns take
    saver = Saver(ks, NB, NB)
    df = frame()
    saver.save({"df": df})
    before = blob_files(isolated_home)
    streamed = []
    real = ks.blobs.put_streamed

    def put_streamed(produce):
        name, new, size = real(produce)
        streamed.append(new)
        return name, new, size

    ks.blobs.put_streamed = put_streamed
    # A deep copy: new buffers, the same bytes (as a left merge's columns are).
    saver.save({"df": df, "copy": df.copy(deep=True)}, cell="copy = df.copy(deep=True)")
    assert streamed and not any(streamed), "the copy's big columns were hashed, not written again"
    assert blob_files(isolated_home) == before
    assert not list((isolated_home / "blobs").glob(".stream.*")), "no temporary file was even started"
    assert restored(ks)["copy"].equals(df)


# --- saves that finish after the cell ----------------------------------------------------


def test_the_cell_after_cannot_change_what_is_being_saved(shell, ks):
    run(shell, "import numpy as np, pandas as pd\n"
               "df = pd.DataFrame({'a': np.arange(300_000, dtype='float64'), 'b': np.ones(300_000)})\n"
               "arr = np.zeros(1_000_000)\nitems = [1, 2]")
    run(shell, "df.loc[0, 'a'] = -1.0\narr[0] = 7\nitems.append(3)")  # runs while the save above may be writing
    state = current(shell)
    assert state.flush(timeout=60)
    first, second = ks.versions(NB)[-1]["version"], ks.versions(NB)[0]["version"]
    old, new = restored(ks, first), restored(ks, second)
    assert old["df"].loc[0, "a"] == 0.0 and old["arr"][0] == 0 and old["items"] == [1, 2]
    assert new["df"].loc[0, "a"] == -1.0 and new["arr"][0] == 7 and new["items"] == [1, 2, 3]


def test_the_cell_after_cannot_change_a_series_being_saved(shell, ks):
    run(shell, "import numpy as np, pandas as pd\n"
               "s = pd.Series(np.arange(500_000, dtype='float64'), name='s')")
    run(shell, "s.iloc[0] = -1.0\nt = s * 2")
    assert current(shell).flush(timeout=60)
    first, second = ks.versions(NB)[-1]["version"], ks.versions(NB)[0]["version"]
    old, new = restored(ks, first), restored(ks, second)
    assert old["s"].iloc[0] == 0.0 and new["s"].iloc[0] == -1.0 and new["t"].iloc[1] == 2.0
    assert ks.manifest(NB).by_name()["s"].format == "arrow-series"


def test_every_cell_gets_its_version_in_order(shell, ks):
    for i in range(12):
        run(shell, f"step = {i}\nhistory = list(range({i} + 1))")
    current(shell).flush()
    versions = sorted(v["version"] for v in ks.versions(NB))
    assert len(versions) == 12
    for i, version in enumerate(versions):
        assert restored(ks, version)["step"] == i


def test_state_magic_waits_for_the_background_saves(shell, ks, capsys):
    run(shell, "import numpy as np\nbig = np.random.default_rng(0).random(4_000_000)")
    shell.run_line_magic("state", "")
    out = capsys.readouterr().out
    assert "big" in out and "numpy.ndarray" in out


def test_a_failing_background_save_is_reported_with_the_next_cell(shell, ks, capsys):
    run(shell, "kept = 'before'")
    state = current(shell)
    state.flush()
    before = ks.latest_version(NB)
    real = state.saver.run

    def full_disk(job):
        raise OSError(28, "No space left on device")

    state.background._run = full_disk
    result = run(shell, "kept = 'lost'\nnew = 1")
    state.flush()
    assert ks.latest_version(NB) == before
    assert "not saved" not in capsys.readouterr().err  # the cell itself ran and said nothing
    state.background._run = real
    result = run(shell, "after = 2")
    line = capsys.readouterr().err.strip()
    assert line == (f"pipulate: kernel state after cell [{result.execution_count - 1}] not saved: "
                    f"cannot write to {ks.home} (No space left on device); version {before} stays the latest, "
                    "and the cell ran as usual")
    state.flush()
    ns = restored(ks)
    assert ns["kept"] == "lost" and ns["new"] == 1 and ns["after"] == 2, "the next save checked everything"


def test_the_last_save_finishes_before_the_process_exits(isolated_home, ks):
    code = textwrap.dedent(f"""
        import os
        os.environ["PIPULATE_NOTEBOOK"] = {NB!r}
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "pipulate")
        ip.run_cell("import numpy as np\\nlast = np.arange(3_000_000)")
    """)
    run_python(code, env={"PIPULATE_HOME": str(isolated_home)})
    assert restored(ks)["last"].sum() == np.arange(3_000_000).sum()


def test_background_saves_can_be_switched_off(isolated_home, monkeypatch, ks):
    monkeypatch.setenv("PIPULATE_BACKGROUND_SAVE", "off")
    monkeypatch.setenv("PIPULATE_NOTEBOOK", NB)
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "pipulate")
        assert current(ip).background is None
        run(ip, "x = 41")
        assert restored(ks)["x"] == 41  # durable when the cell returned
    finally:
        ip.run_line_magic("unload_ext", "pipulate")
        InteractiveShell.clear_instance()


def test_a_bad_background_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PIPULATE_BACKGROUND_SAVE", "sometimes")
    with pytest.raises(ValueError, match="PIPULATE_BACKGROUND_SAVE"):
        Settings.from_env()
    monkeypatch.delenv("PIPULATE_BACKGROUND_SAVE")
    for bad, message in (("high", "PIPULATE_WORKER_NICE: invalid literal"), ("20", r"must be 0 to 19 \(nice levels\), got 20"),
                         ("-1", r"must be 0 to 19 \(nice levels\), got -1")):
        monkeypatch.setenv("PIPULATE_WORKER_NICE", bad)
        with pytest.raises(ValueError, match=message):
            Settings.from_env()


def test_unload_finishes_the_saves_and_stops_the_worker(shell, ks):
    run(shell, "import numpy as np\nx = np.ones(2_000_000)")
    state = current(shell)
    shell.run_line_magic("unload_ext", "pipulate")
    assert state.background.pending() == 0
    assert restored(ks)["x"].sum() == 2_000_000
    assert not [t for t in threading.enumerate() if t.name.startswith("pipulate-background-save") and t.is_alive()]


def test_big_columns_are_streamed_whole_and_left_overs_collected(ks, isolated_home):
    import time

    df = pd.DataFrame({"x": np.random.default_rng(2).random(400_000), "y": np.arange(400_000)})
    ks.blobs.disk_rate = 10e9  # a disk faster than compression: big columns are written raw, streamed
    Saver(ks, NB, NB).save({"df": df})
    pd.testing.assert_frame_equal(restored(ks)["df"], df)
    entry = ks.manifest(NB).by_name()["df"]
    assert all(ks.blobs.size_on_disk(b) > 3_000_000 for b in entry.parts)
    left = isolated_home / "blobs" / ".stream.1.2.3.tmp"  # what a kill during a streamed write leaves
    left.write_bytes(b"partial")
    os.utime(left, (time.time() - 7200, time.time() - 7200))
    ks.engine.collect_garbage(grace_seconds=3600)
    assert not left.exists()
    pd.testing.assert_frame_equal(restored(ks)["df"], df)


def test_a_frame_of_zeros_is_still_compressed_on_a_fast_disk(ks):
    df = pd.DataFrame({"z": np.zeros(1_000_000)})
    ks.blobs.disk_rate = 1e9  # an SSD: zstd (~3 GB/s on zeros) still saves time
    Saver(ks, NB, NB).save({"df": df})
    (column,) = ks.manifest(NB).by_name()["df"].parts
    assert ks.blobs.size_on_disk(column) < 100_000


def test_flush_with_a_timeout_says_when_saves_are_still_running(shell):
    state = current(shell)
    release = threading.Event()
    real = state.background._run
    state.background._run = lambda job: (release.wait(10), real(job))[1]
    run(shell, "slow = 1")
    assert state.flush(timeout=0.2) is False
    release.set()
    assert state.flush(timeout=10) is True


@pytest.fixture
def worker_nice(request, monkeypatch) -> int:
    """PIPULATE_WORKER_NICE set to the parameter (None: unset) before ``shell`` loads the
    extension; the nice levels the worker should then run below the kernel."""
    if request.param is None:
        monkeypatch.delenv("PIPULATE_WORKER_NICE", raising=False)
        return Settings.worker_nice
    monkeypatch.setenv("PIPULATE_WORKER_NICE", str(request.param))
    return request.param


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have their own nice value on Linux only")
@pytest.mark.parametrize("worker_nice", [None, 0, 3], indirect=True)
def test_the_worker_yields_the_cpu_to_the_cells(worker_nice, shell):
    """Saves run at a lower priority than the cells (PIPULATE_WORKER_NICE levels, 10 by
    default; 0 keeps the worker at the kernel's priority, for a machine whose other programs
    must not delay the saves); the kernel's own priority is untouched."""
    state = current(shell)
    real = state.background._run
    seen = []
    state.background._run = lambda job: (seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())),
                                         real(job))[1]
    kernel = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    run(shell, "x = 1")
    assert state.flush(timeout=10)
    assert seen == [min(19, kernel + worker_nice)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == kernel
    assert os.getpriority(os.PRIO_PROCESS, 0) == kernel


def test_an_exiting_kernel_reads_ahead_what_the_next_one_restores(shell, ks, monkeypatch):
    """Big blobs leave the page cache when written; the kernel's exit asks for the latest
    version's big blobs back, so that a restart restores from memory."""
    from pipulate import blobs as blob_files_module

    state = current(shell)
    run(shell, "import numpy as np\nx = np.random.default_rng(0).random(2_000_000)\nsmall = [1, 2]")
    asked = []
    real = state.store.prefetch_latest
    monkeypatch.setattr(state.store, "prefetch_latest", lambda nb: asked.append(real(nb)) or asked[-1])
    state.at_exit()  # what atexit runs
    assert state.background.pending() == 0
    assert asked and asked[0] >= 16_000_000  # x's blob, whole; small is inline
    assert ks.prefetch_latest("never-saved.ipynb") == 0
    monkeypatch.setattr(blob_files_module, "DROP_CACHE_BYTES", None)  # nothing was dropped: nothing to read
    assert ks.prefetch_latest(NB) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have their own nice value on Linux only")
def test_a_cell_never_waits_on_writes_at_the_workers_priority(shell, monkeypatch):
    """A huge changed array is written while the cell waits, by threads at the kernel's
    priority, even after the worker (at its lower one) has written big blobs itself."""
    from pipulate.kernel_state import formats

    monkeypatch.setattr(saving, "SNAPSHOT_COPY_BYTES", 8 << 20)  # "huge": written before the next cell
    priorities = []
    real = formats.write

    def write(prepared, blobs):
        priorities.append((prepared.size, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return real(prepared, blobs)

    monkeypatch.setattr(formats, "write", write)
    kernel = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = min(19, kernel + current(shell).background.nice)
    run(shell, "import numpy as np\nx = np.random.default_rng(0).random(500_000)")  # 4 MB: the worker's
    assert current(shell).flush(timeout=30)
    run(shell, "y = np.random.default_rng(1).random(2_000_000)")  # 16 MB: written in the hook
    assert current(shell).flush(timeout=30)
    by_size = {size // 1_000_000: nice for size, nice in priorities if size >= 1_000_000}
    assert by_size == {4: worker, 16: kernel}


def test_zeros_are_compressed_whatever_the_timing_says(ks):
    """A probe preempted by a busy machine looks slow; data that shrinks 16-fold is compressed anyway."""
    ks.blobs.disk_rate = 1e15  # no timing of zstd could beat this disk
    df = pd.DataFrame({"z": np.zeros(1_000_000)})
    Saver(ks, NB, NB).save({"df": df})
    (column,) = ks.manifest(NB).by_name()["df"].parts
    assert ks.blobs.size_on_disk(column) < 100_000
    pd.testing.assert_frame_equal(restored(ks)["df"], df)


def test_a_restore_asks_for_every_big_blob_at_once(ks, monkeypatch):
    """From a cold cache the disk gets the whole version to read ahead, not one blob per reader."""
    df = pd.DataFrame({"x": np.arange(300_000.0), "y": np.ones(300_000)})
    big = np.random.default_rng(3).random(200_000)
    Saver(ks, NB, NB).save({"df": df, "big": big, "small": [1, 2]})
    entries = ks.manifest(NB).by_name()
    asked = []
    called = threading.Event()
    real = ks.blobs.prefetch
    monkeypatch.setattr(ks.blobs, "prefetch", lambda digests, **kw: (asked.extend(digests), called.set(),
                                                                      real(digests, **kw))[-1])
    ns = restored(ks)
    assert called.wait(10)
    assert set(asked) == {entries["big"].blob, *entries["df"].parts, *([entries["df"].blob] if entries["df"].blob else [])}
    pd.testing.assert_frame_equal(ns["df"], df)
    assert (ns["big"] == big).all() and ns["small"] == [1, 2]


@pytest.mark.parametrize("with_pickle", [True, False])
def test_a_restore_reads_small_values_and_the_key_before_the_big_read_ahead(ks, monkeypatch, with_pickle):
    """From a cold cache, a small read queued behind the whole version's read-ahead waited
    ~100 ms (the key file, 435 ms for 1 GiB): the small blobs and the signing key are read
    first, then the big ones asked for. The key is needed without a pickle too."""
    big = np.random.default_rng(3).random(300_000)
    Saver(ks, NB, NB).save({"big": big, "small": np.arange(2_000), "few": [1, 2],
                            **({"gen": np.random.default_rng(1)} if with_pickle else {})})
    entries = ks.manifest(NB).by_name()
    assert entries["small"].blob and entries["big"].size > 1 << 20
    assert (entries["gen"].format == "pickle") if with_pickle else "gen" not in entries
    ks.engine._signer = None  # as in a new kernel: the key is read again (its file, or the team database)
    events = []
    read_ahead = threading.Event()
    real_prefetch, real_get, real_key = ks.blobs.prefetch, ks.blobs.get_view, ks.engine.db.signing_key

    def prefetch(digests, **kw):
        events.append(("ask", tuple(digests)))
        if entries["big"].blob in digests:
            read_ahead.set()
        return real_prefetch(digests, **kw)

    monkeypatch.setattr(ks.blobs, "prefetch", prefetch)
    monkeypatch.setattr(ks.blobs, "get_view", lambda digest: (events.append(("read", digest)), real_get(digest))[1])
    monkeypatch.setattr(ks.engine.db, "signing_key", lambda home: (events.append(("key",)), real_key(home))[1])
    ns = restored(ks)
    assert read_ahead.wait(10)
    big_asked = events.index(("ask", (entries["big"].blob,)))
    before = events[:big_asked]
    assert ("read", entries["small"].blob) in before
    assert ("key",) in before and ("read", entries["big"].blob) not in before
    assert (ns["big"] == big).all() and (ns["small"] == np.arange(2_000)).all() and ns["few"] == [1, 2]
    if with_pickle:
        assert ("read", entries["gen"].blob) in before
        assert ns["gen"].random() == np.random.default_rng(1).random()


def test_the_read_ahead_window_comes_from_the_disk_or_a_safe_default(tmp_path):
    from pipulate import blobs

    assert blobs._readahead_window(os.stat(tmp_path).st_dev) >= 128 << 10
    assert blobs._readahead_window(os.makedev(4095, 1048575)) == 128 << 10  # no such disk in sysfs
