"""Big arrays and frames inside containers (``pipulate.kernel_state.buffers``), through the
kernel-state store on both backends: their buffers are stored out of band, one blob each,
and come back mapped (or read) as ordinary writable arrays with aliasing kept; the buffer
list is signed with the pickle; garbage collection and re-saves treat buffer blobs right.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipulate.errors import UntrustedDataError
from pipulate.kernel_state import KernelStateStore
from pipulate.kernel_state.restoring import restore
from pipulate.kernel_state.saving import Saver
from pipulate.settings import Settings

MIB = 1 << 20
N = 1 << 20  # 8 MiB of float64: out of band (>= 1 MiB) and mapped (>= 8 MiB in all)


class Holder:
    """A notebook object with an array attribute."""


def namespace() -> dict:
    rng = np.random.default_rng(3)
    inner = rng.random(N)
    holder = Holder()
    holder.arr = rng.random(N)
    top = rng.random(N)
    return {
        "runs": [rng.random(N) for _ in range(2)],
        "data": {"train": inner, "again": inner, "frame": pd.DataFrame({"x": rng.random(N), "k": np.arange(N)}),
                 "zeros": np.zeros(N), "strided": rng.random(2 * N)[::2], "small": np.arange(10)},
        "pair": (rng.random(N), "label"),
        "holder": holder,
        "top": top,
        "shares": {"top": top, "n": 1},  # holds a top-level variable: a reference, as before
    }


def read_bytes() -> int:
    """What this process has read so far (``rchar``: page cache included)."""
    with open("/proc/self/io") as f:
        return int(f.read().split("rchar: ")[1].split()[0])


def blob_digests(ks, notebook: str) -> dict[str, list[str]]:
    return {e.name: list(e.parts or []) for e in ks.manifest(notebook).entries}


def files_of(ks, digests) -> dict[str, str]:
    return {d: hashlib.sha256(ks.blobs.path(d).read_bytes()).hexdigest() for d in digests}


def check_equal(got: dict, want: dict) -> None:
    for i in range(2):
        assert np.array_equal(got["runs"][i], want["runs"][i])
    for key in ("train", "zeros", "strided", "small"):
        assert np.array_equal(got["data"][key], want["data"][key])
    assert got["data"]["frame"].equals(want["data"]["frame"])
    assert np.array_equal(got["pair"][0], want["pair"][0]) and got["pair"][1] == "label"
    assert np.array_equal(got["holder"].arr, want["holder"].arr)
    assert np.array_equal(got["shares"]["top"], want["top"])


@pytest.mark.parametrize("lazy", [True, False])
def test_containers_keep_big_buffers_out_of_band_and_restore_them(ks, lazy):
    ns = namespace()
    Saver(ks, "nb", "nb").save(ns, full=True)
    parts = blob_digests(ks, "nb")
    # One blob per big buffer: two arrays in the list; in the dict the aliased array once,
    # the frame's two blocks and the zeros; none for the strided view or the small array.
    assert len(parts["runs"]) == 2 and len(parts["pair"]) == 1 and len(parts["holder"]) == 1
    assert len(parts["data"]) == 4, parts
    assert parts["shares"] == [] and parts["top"] == []
    before = files_of(ks, [d for ds in parts.values() for d in ds])

    got: dict = {}
    read_before = read_bytes()
    result = restore(ks, "nb", got, mapped_unchecked=lazy)
    read = read_bytes() - read_before
    assert result.failed == [] and sorted(result.restored) == sorted(ns)
    # 56 MiB of buffers stored raw: mapped, the restore reads none of it (only the pickles,
    # 8 MiB of them the strided array's in-band copy, the zeros and the database); read first, all.
    assert read < 10 * MIB if lazy else read > 64 * MIB, read
    # Mapped when lazy, except the zeros (compressed on disk: read and checked now).
    if lazy:
        assert set(result.mapped["runs"]) == set(parts["runs"]) and "data" in result.mapped
        assert not ({d for ds in result.mapped.values() for d in ds} & set(ks.manifest("nb").by_name()["data"].parts[-1:]))
    else:
        assert result.mapped == {}
    check_equal(got, ns)
    arrays = [*got["runs"], got["data"]["train"], got["pair"][0], got["holder"].arr, got["data"]["zeros"]]
    assert all(type(a) is np.ndarray and a.flags.writeable for a in arrays)
    assert got["data"]["train"] is got["data"]["again"]
    assert got["shares"]["top"] is got["top"]
    assert type(got["holder"]).__name__ == "Holder" and type(got["data"]["frame"]) is pd.DataFrame

    # Writes stay in this process: no buffer blob changes.
    for a in arrays:
        a[:1000] = -1.0
    got["data"]["frame"].loc[0, "x"] = -2.0
    assert files_of(ks, before) == before
    assert got["data"]["again"][0] == -1.0
    # ... and are saved as a new version, which a restore brings back; the old one is intact.
    saver = Saver(ks, "nb", "nb")
    saver.prime(got, ks.manifest("nb").entries)
    assert saver.save(got, full=True).created
    again: dict = {}
    restore(ks, "nb", again, mapped_unchecked=lazy)
    assert again["runs"][1][999] == -1.0 and again["data"]["frame"].loc[0, "x"] == -2.0
    first: dict = {}
    restore(ks, "nb", first, version=1, mapped_unchecked=lazy)
    check_equal(first, ns)


def test_resaving_unchanged_buffers_writes_no_blob(ks, backend):
    ns = namespace()
    saver = Saver(ks, "nb", "nb")
    saver.save(ns, full=True)
    runs = blob_digests(ks, "nb")["runs"]
    inodes = {d: ks.blobs.path(d).stat().st_ino for d in runs}
    ns["runs"].append(np.arange(5))  # the list changed, its big arrays did not
    result = saver.save(ns, full=True)
    assert result.written == ["runs"]
    assert blob_digests(ks, "nb")["runs"] == runs
    assert {d: ks.blobs.path(d).stat().st_ino for d in runs} == inodes


def swap_rows(ks, notebook: str, name: str) -> None:
    """Swap the first two buffer blobs of ``name`` in the database (both are sound blobs)."""
    [row] = ks.db.rows("SELECT version FROM kernel_variables WHERE notebook = ? AND name = ? AND until IS NULL",
                       (notebook, name))
    with ks.db.write() as conn:
        conn.execute("UPDATE kernel_frame_columns SET position = -1 WHERE notebook = ? AND version = ? "
                     "AND name = ? AND position = 0", (notebook, row[0], name))
        conn.execute("UPDATE kernel_frame_columns SET position = 0 WHERE notebook = ? AND version = ? "
                     "AND name = ? AND position = 1", (notebook, row[0], name))
        conn.execute("UPDATE kernel_frame_columns SET position = 1 WHERE notebook = ? AND version = ? "
                     "AND name = ? AND position = -1", (notebook, row[0], name))


@pytest.mark.parametrize("lazy", [True, False])
def test_a_swapped_or_missing_buffer_list_is_refused_by_the_signature(ks, lazy):
    ns = namespace()
    Saver(ks, "nb", "nb").save(ns, full=True)
    swap_rows(ks, "nb", "runs")
    with ks.db.write() as conn:
        conn.execute("DELETE FROM kernel_frame_columns WHERE notebook = ? AND name = ?", ("nb", "pair"))
    got: dict = {}
    result = restore(ks, "nb", got, mapped_unchecked=lazy)
    failed = {f["name"]: f["reason"] for f in result.failed}
    assert set(failed) == {"runs", "pair"}, failed
    assert all("not the one its pickle was signed with" in reason for reason in failed.values()), failed
    assert "runs" not in got and "pair" not in got
    check = {k: v for k, v in namespace().items() if k not in ("runs", "pair")}
    assert np.array_equal(got["holder"].arr, check["holder"].arr) and got["data"]["frame"].equals(check["data"]["frame"])


def test_a_pickle_with_buffers_is_refused_under_another_list(ks):
    """Signed bytes whose list names other blobs than the entry: refused before unpickling."""
    from pipulate.kernel_state import buffers

    data = buffers.signed_body(b"\x80\x05N.", ["0" * 32])
    with pytest.raises(UntrustedDataError, match="buffer blobs"):
        buffers.split_body(memoryview(data), ["1" * 32], "variable 'x'")
    with pytest.raises(UntrustedDataError, match="buffer blobs"):
        buffers.split_body(memoryview(b"\x80\x05N."), ["1" * 32], "variable 'x'")
    assert bytes(buffers.split_body(memoryview(data), ["0" * 32], "x")) == b"\x80\x05N."


def test_gc_keeps_buffer_blobs_of_kept_versions_and_removes_dropped_ones(isolated_home, backend):
    ks = KernelStateStore(isolated_home, settings=replace(Settings.from_env(), keep_versions=2))
    try:
        saver = Saver(ks, "nb", "nb")
        rng = np.random.default_rng(9)
        made = []
        for i in range(4):
            saver.save({"runs": [rng.random(N // 4), np.full(N // 4, float(i)) + rng.random(N // 4)]}, full=True)
            made.append(blob_digests(ks, "nb")["runs"])
        assert all(len(p) == 2 for p in made)
        ks.engine.collect_garbage(grace_seconds=0)
        for parts in made[:2]:
            assert not any(ks.blobs.exists(d) for d in parts)
        for parts in made[2:]:
            assert all(ks.blobs.exists(d) for d in parts)
        got: dict = {}
        assert restore(ks, "nb", got).failed == [] and len(got["runs"]) == 2
    finally:
        ks.close()


def test_a_container_saved_before_buffers_went_out_of_band_still_restores(ks):
    """A version written by the code before (the arrays inside the one signed pickle, no list)."""
    import xxhash

    from pipulate.kernel_state.pickling import dumps
    from pipulate.kernel_state.store import Entry

    value = {"train": np.random.default_rng(1).random(N), "n": 3}
    data, _ = dumps(value, {})
    assert len(data) > N * 8  # in band
    blob = ks.blobs.put(ks.signer.sign(data))
    ks.commit_version("old", "old", [Entry("data", "dict", "pickle", len(data), xxhash.xxh3_128_hexdigest(data),
                                           blob)], [])
    for lazy in (True, False):
        got: dict = {}
        result = restore(ks, "old", got, mapped_unchecked=lazy)
        assert result.failed == [] and result.mapped == {}
        assert np.array_equal(got["data"]["train"], value["train"]) and got["data"]["n"] == 3
