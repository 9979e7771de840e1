"""Damage to every kind of file kernel state writes: blobs, manifests (rows in pipulate.db), the
database file itself and the key file. Each is detected and reported by name, nothing that is not
damaged is lost, and nothing foreign is unpickled (the evil pickles here would create a file).
"""
from __future__ import annotations

import fractions
import json
import os
import pickle
import struct

import numpy as np
import pandas as pd
import pytest

from pipulate import IntegrityError
from pipulate.kernel_state import KernelStateStore
from pipulate.kernel_state.restoring import restore
from pipulate.kernel_state.saving import Saver

from .blob_helpers import lose_blob, rewrite_blob, stored_bytes

NB = "damage.ipynb"


class Evil:
    """Unpickling this runs ``touch marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def build():
    arr = np.arange(200_000)
    frame = pd.DataFrame({"x": np.arange(50_000), "y": np.linspace(0, 1, 50_000)})
    return {
        "arr": arr, "alias": arr, "holder": [arr, "tail"],  # alias is arr; holder's pickle refers to arr
        "frame": frame,
        "small": {"a": [1, 2, 3], "b": "text"},  # inline JSON in the manifest row
        "word": "hello",
        "frac": fractions.Fraction(1, 3),  # a small pickle, in a blob
        "json_mod": json,  # a module, recorded by name
        "untouched": np.ones(30_000),
    }


def check_equal(name, got, want):
    if isinstance(want, np.ndarray):
        assert (got == want).all(), name
    elif isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want)
    elif name == "holder":
        assert (got[0] == want[0]).all() and got[1] == want[1]
    else:
        assert got == want, name


@pytest.fixture
def saved(isolated_home):
    ks = KernelStateStore(isolated_home)
    ns = build()
    saver = Saver(ks, NB, NB)
    result = saver.save(ns)
    assert result.created and not result.skipped
    # A second version that shares every row of the first but one: the damage below must
    # reach the rows the latest version reads, written by the version before.
    ns = {**ns, "count": 1}
    assert saver.save(ns).created
    yield ks, ns
    ks.close()


def entry(ks, name):
    return ks.manifest(NB).by_name()[name]


def restored(ks, marker=None):
    """Restore the latest version into a fresh namespace; {lost name: reason}, the namespace."""
    ns: dict = {}
    result = restore(ks, NB, ns)
    if marker is not None:
        assert not marker.exists(), "a foreign pickle was unpickled"
    return {f["name"]: f["reason"] for f in result.skipped}, ns  # skipped when saved + lost now


def assert_only_lost(ks, original, lost: set[str], reason_words: tuple[str, ...], marker=None):
    failed, ns = restored(ks, marker)
    assert set(failed) == lost, failed
    for name in lost:
        assert any(w in failed[name] for w in reason_words), (name, failed[name])
    for name, value in original.items():
        if name not in lost:
            check_equal(name, ns[name], value)
    return failed


def damaged(data: bytes, how: str) -> bytes:
    data = bytearray(data)
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "zero":
        data[:] = bytes(len(data))
    elif how == "flip":
        data[len(data) - 7] ^= 0x10
    return bytes(data)


def damage_stored_blob(blobs, digest: str, how: str) -> None:
    """``how`` done to blob ``digest`` where it is stored (the bucket too, on the team backend)."""
    if how == "missing":
        lose_blob(blobs, digest)
    else:
        rewrite_blob(blobs, digest, damaged(stored_bytes(blobs, digest), how))


# --- blobs ---------------------------------------------------------------------------------------

# what each damaged variable takes with it: alias is the same object; holder's pickle refers to arr
LOSES = {"arr": {"arr", "alias", "holder"}, "frame": {"frame"}, "frac": {"frac"}, "holder": {"holder"},
         "untouched": {"untouched"}}


@pytest.mark.parametrize("how", ["truncate", "zero", "flip", "missing"])
@pytest.mark.parametrize("victim", sorted(LOSES))
def test_damaged_blob_is_reported_by_name_and_the_rest_restored(saved, victim, how):
    ks, ns = saved
    damage_stored_blob(ks.blobs, entry(ks, victim).blob, how)
    failed = assert_only_lost(ks, ns, LOSES[victim], ("damaged", "missing", "which was lost", "not restored"))
    primary = entry(ks, victim).alias_of or victim  # the variable whose blob it is
    assert ("missing" if how == "missing" else "damaged") in failed[primary], failed


# --- manifests: rows of kernel_variables / kernel_versions -------------------------------------------

def set_row(ks, name, **columns):
    """Change the row of ``name`` that the latest version reads (the one whose range of versions holds it)."""
    version = ks.latest_version(NB)
    sets = ", ".join(f"{c} = ?" for c in columns)
    with ks.db.write() as conn:
        changed = conn.execute(
            f"UPDATE kernel_variables SET {sets} WHERE notebook = ? AND name = ? AND version <= ? "
            "AND (until IS NULL OR until > ?) RETURNING version", (*columns.values(), NB, name, version, version)
        ).fetchall()
    assert len(changed) == 1 and changed[0][0] < version, changed  # a row both versions share


def flip_text(text: str, at: int | None = None) -> str:
    at = len(text) // 2 if at is None else at
    return text[:at] + chr(ord(text[at]) ^ 0x04) + text[at + 1:]


def test_flipped_inline_value_is_detected_not_loaded_as_other_data(saved):
    ks, ns = saved
    value = entry(ks, "small").value
    assert value is not None and "[1,2,3]" in value.replace(" ", "")
    set_row(ks, "small", value=value.replace("2", "6"))  # still valid JSON: only a checksum sees it
    assert_only_lost(ks, ns, {"small"}, ("damaged",))


def test_flipped_inline_string_is_detected(saved):
    ks, ns = saved
    set_row(ks, "word", value=flip_text(entry(ks, "word").value, 2))  # "hello" -> "hlllo"
    assert_only_lost(ks, ns, {"word"}, ("damaged",))


def test_altered_module_name_is_detected_and_not_imported(saved):
    ks, ns = saved
    set_row(ks, "json_mod", value="antigravity")  # importing it would open a web browser
    assert_only_lost(ks, ns, {"json_mod"}, ("damaged",))


def test_flipped_blob_name_in_a_manifest_is_reported(saved):
    ks, ns = saved
    set_row(ks, "frame", blob=flip_text(entry(ks, "frame").blob))
    assert_only_lost(ks, ns, {"frame"}, ("missing", "damaged"))


def test_damaged_skipped_list_of_a_version_loses_nothing_else(saved):
    ks, ns = saved
    with ks.db.write() as conn:
        conn.execute("UPDATE kernel_versions SET skipped = '[{\"name\": \"x\", \"rea' WHERE notebook = ?", (NB,))
    failed, got = restored(ks)
    for name, value in ns.items():
        check_equal(name, got[name], value)
    assert any("damaged" in reason for reason in failed.values()), failed
    again = Saver(ks, NB, NB).save({**ns, "word": "saved again"})  # saving goes on
    assert again.created and restored(ks)[1]["word"] == "saved again"


@pytest.mark.parametrize("attack", ["inline-pickle", "unsigned-blob", "forged-signature", "replaced-blob-file"])
def test_foreign_pickle_in_a_manifest_or_blob_is_never_unpickled(saved, tmp_path, attack):
    ks, ns = saved
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Evil(marker))
    if attack == "inline-pickle":
        set_row(ks, "word", format="pickle", value=evil, blob=None)
        victim, words = "word", ("not signed", "damaged")
    elif attack == "replaced-blob-file":
        path = ks.blobs.path(entry(ks, "frac").blob)
        os.chmod(path, 0o600)
        path.write_bytes(struct.pack("<4sBQ", b"PPB1", 0, len(evil)) + evil)
        victim, words = "frac", ("damaged",)
    else:
        payload = evil if attack == "unsigned-blob" else b"PPSIG1" + b"\0" * 32 + evil
        set_row(ks, "frac", blob=ks.blobs.put(payload))  # a well-formed blob: its name is its hash
        victim, words = "frac", ("not signed",) if attack == "unsigned-blob" else ("altered",)
    assert_only_lost(ks, ns, {victim}, words, marker=marker)
    assert not marker.exists()


# --- the key file -------------------------------------------------------------------------------------

@pytest.mark.backends("embedded", reason="the key file is the embedded store's; the team keeps each user's key in the database (test_team)")
def test_missing_key_file_refuses_every_pickle_by_name_and_restores_the_rest(saved, isolated_home, tmp_path):
    ks, ns = saved
    ks.close()
    (isolated_home / "secret.key").unlink()
    fresh = KernelStateStore(isolated_home)
    try:
        failed = assert_only_lost(fresh, ns, {"frac", "holder"}, ("signed with another key",))
        assert set(failed) == {"frac", "holder"}
    finally:
        fresh.close()


# --- the database file ----------------------------------------------------------------------------------

def checkpoint(home):
    import apsw

    conn = apsw.Connection(str(home / "pipulate.db"))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@pytest.mark.backends("embedded", reason="damages the SQLite file")
@pytest.mark.parametrize("how", ["truncate", "zero-pages", "flip-page-types"])
def test_damaged_database_file_is_reported_by_name(isolated_home, how):
    ks = KernelStateStore(isolated_home)
    saver = Saver(ks, NB, NB)
    for i in range(300):  # enough rows for several pages of every table
        saver.save({f"v{j}": f"value {i} {j} " * 10 for j in range(20)})
    ks.close()
    checkpoint(isolated_home)
    db = isolated_home / "pipulate.db"
    data = bytearray(db.read_bytes())
    page = 4096
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "zero-pages":
        data[page * 2: len(data) - page] = bytes(len(data) - page * 3)
    else:
        for start in range(page, len(data), page):  # every b-tree page's type byte
            data[start] ^= 0x5A
    db.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"pipulate\.db.*damaged"):
        ks = KernelStateStore(isolated_home)
        try:
            for nb in ks.notebooks():
                restore(ks, nb["id"], {})
        finally:
            ks.close()
