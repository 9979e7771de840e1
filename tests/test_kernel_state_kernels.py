"""Kernel-state persistence with real ipykernels (jupyter_client), no mocks."""
from __future__ import annotations

import os
import pickle
import random
import struct
import time

import pytest

from .kernel_helpers import SPEC, Kernel


pytestmark = pytest.mark.timeout(300)


BUILD = """
import numpy as np
import pandas as pd
df = pd.DataFrame({"x": [1, 2, 3], "name": ["a", "b", "c"], "when": pd.date_range("2024-01-01", periods=3)})
arr = np.arange(12, dtype=np.float32).reshape(3, 4)
d = {"k": [1, 2, 3], "nested": {"s": "text"}}
square = lambda v: v * v
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __eq__(self, other):
        return (self.x, self.y) == (other.x, other.y)
    def norm2(self):
        return self.x ** 2 + self.y ** 2 + offset
offset = 100
p = Point(3, 4)
a = [1, 2, {"deep": True}]
b = a
holder = {"arr": arr, "items": a}
runs = [np.arange(2**18, dtype=np.float64) + i for i in range(2)]  # 2 MiB each: out of band (``buffers``)
gen = (i for i in range(10))
"""

CHECK = """
import numpy as np, pandas as pd
assert isinstance(df, pd.DataFrame), type(df)
pd.testing.assert_frame_equal(df, pd.DataFrame({"x": [1, 2, 3], "name": ["a", "b", "c"], "when": pd.date_range("2024-01-01", periods=3)}))
assert type(arr) is np.ndarray and arr.dtype == np.float32 and arr.shape == (3, 4)
assert (arr == np.arange(12, dtype=np.float32).reshape(3, 4)).all()
arr[0, 0] = 42  # restored arrays are writable
assert d == {"k": [1, 2, 3], "nested": {"s": "text"}}
assert square(7) == 49
assert type(p) is Point and p == Point(3, 4)
assert p.norm2() == 125
offset = 1000
assert p.norm2() == 1025, "restored methods see the notebook's globals, not a copy"
assert b is a and a == [1, 2, {"deep": True}]
assert holder["arr"] is arr and holder["items"] is a
assert type(runs[1]) is np.ndarray and runs[1].flags.writeable and [float(r[-1]) for r in runs] == [262143.0, 262144.0]
assert "gen" not in globals()
assert np.__name__ == "numpy" and pd.__name__ == "pandas"
print("CHECK OK")
"""


def test_variables_come_back_after_restart(kernels, ks):
    k, out = kernels.start("analysis.ipynb")
    assert "restored" not in out
    k.ok(BUILD)
    shown = k.ok("%state")
    assert "gen" in shown and "generator" in shown
    for name, fmt in [("df", "arrow"), ("arr", "npy"), ("d", "json"), ("square", "pickle"),
                      ("Point", "pickle"), ("p", "pickle"), ("np", "module")]:
        assert any(line.split()[:1] == [name] and fmt in line for line in shown.splitlines()), (name, shown)
    assert "same object as a" in shown
    k.close()

    k2, out = kernels.start("analysis.ipynb")
    assert "restored" in out and "analysis.ipynb" in out, out
    assert "gen (cannot pickle 'generator' object; cell [2] of an earlier kernel)" in out, out
    assert "CHECK OK" in k2.ok(CHECK)
    summary = ks.summary("analysis.ipynb")
    assert summary["has_saved_state"] and "df" in summary["variable_names"]
    assert set(summary) == {"has_saved_state", "saved_at", "variable_count", "variable_names",
                            "file_size_bytes", "checksum", "versions", "comes_back"}
    how = {v["name"]: (v["how"], v["detail"]) for v in summary["comes_back"]}
    assert how["df"] == ("stored", "arrow") and how["square"] == ("stored", "pickle")
    assert how["gen"] == ("rebuilt", "cells [2]: cannot pickle 'generator' object")


def test_failing_cell_does_not_save_and_later_cell_does(kernels, ks):
    k, _ = kernels.start("fail.ipynb")
    k.ok("x = 1")
    before = ks.versions("fail.ipynb")
    _, err = k.run("y = 2\nraise ValueError('boom')")
    assert err and "boom" in err
    assert ks.versions("fail.ipynb") == before
    assert "y" not in ks.summary("fail.ipynb")["variable_names"]
    k.ok("z = 3")
    names = ks.summary("fail.ipynb")["variable_names"]
    assert {"x", "y", "z"} <= set(names)
    assert len(ks.versions("fail.ipynb")) == len(before) + 1


def test_two_notebooks_do_not_mix(kernels, ks):
    k1, _ = kernels.start("one.ipynb")
    k2, _ = kernels.start("sub/two.ipynb")
    k1.ok("only_one = 'first'\nshared_name = 1")
    k2.ok("only_two = 'second'\nshared_name = 2")
    k1.close()
    k2.close()
    ids = {nb["id"]: nb["name"] for nb in ks.notebooks()}
    assert ids == {"one.ipynb": "one.ipynb", "sub--two.ipynb": "sub/two.ipynb"}
    k1, _ = kernels.start("one.ipynb")
    k2, _ = kernels.start("sub/two.ipynb")
    assert "OK" in k1.ok("assert shared_name == 1 and only_one == 'first' and 'only_two' not in globals()\nprint('OK')")
    assert "OK" in k2.ok("assert shared_name == 2 and only_two == 'second' and 'only_one' not in globals()\nprint('OK')")


def test_magics_and_their_errors(kernels, ks):
    k, _ = kernels.start("magic.ipynb")
    k.ok("v = 1")
    k.ok("v = 2\nw = 'new'")
    versions = k.ok("%state versions")
    assert versions.splitlines()[1].startswith("2") and versions.splitlines()[2].startswith("1")
    diff = k.ok("%state diff 1 2")
    assert "added: w" in diff and "modified: v" in diff
    _, err = k.run("%state restore 99")
    assert err and "no version 99" in err
    _, err = k.run("%state restore 99999999999999999999")  # past SQLite's integers
    assert err and "no version 99999999999999999999" in err
    _, err = k.run("%state diff 1")
    assert err and "two versions" in err
    _, err = k.run("%state restore x")
    assert err and "whole number" in err
    _, err = k.run("%state frobnicate")
    assert err and "unknown subcommand" in err
    out = k.ok("%state restore 1")
    assert "from version 1" in out
    assert "1" in k.ok("print(v)")
    assert "nothing changed" in k.ok("%state save")
    assert "cleared" in k.ok("%state clear")
    assert ks.summary("magic.ipynb")["has_saved_state"] is False
    assert "nothing saved yet" in k.ok("%state")


def test_select_restore_chooses_what_the_next_kernel_loads(kernels, ks):
    k, _ = kernels.start("pick.ipynb")
    k.ok("value = 'first'")
    k.ok("value = 'second'")
    k.ok("value = 'third'")
    k.close()
    versions = [v["version"] for v in ks.versions("pick.ipynb")]
    assert versions == [3, 2, 1]
    chosen = ks.select_restore("pick.ipynb", 1)
    assert chosen["version"] == 1 and chosen["notebook"] == "pick.ipynb"
    with pytest.raises(KeyError):
        ks.select_restore("pick.ipynb", 42)
    with pytest.raises(KeyError):
        ks.select_restore("nobody.ipynb")
    k, out = kernels.start("pick.ipynb")
    assert "from version 1" in out
    assert "first" in k.ok("print(value)")
    k.close()
    # The choice is used once: the following start loads the latest again.
    k, out = kernels.start("pick.ipynb")
    assert "first" in k.ok("print(value)")  # the previous kernel's state was 'first' (restored)


def _blob_of(ks, notebook, name):
    entry = ks.manifest(notebook).by_name()[name]
    return entry, ks.blobs.path(entry.blob)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_blob_loses_only_its_variable(kernels, ks, damage):
    k, _ = kernels.start("damaged.ipynb")
    k.ok("import numpy as np\ngood = np.arange(100000)\nvictim = np.ones(50000)\nother = {'fine': True}\n"
         "obj = complex(1, 2)")
    k.close()
    entry, path = _blob_of(ks, "damaged.ipynb", "victim")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) - 100] ^= 0x01
    os.chmod(path, 0o600)
    path.write_bytes(bytes(raw))
    k, out = kernels.start("damaged.ipynb")
    assert "victim" in out and "damaged" in out, out
    assert "OK" in k.ok("assert 'victim' not in globals()\nassert good.sum() == 4999950000\n"
                        "assert other == {'fine': True} and obj == 1+2j\nprint('OK')")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_blob_file(path, payload: bytes):
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(struct.pack("<4sBQ", b"PPB1", 0, len(payload)) + payload)


@pytest.mark.parametrize("attack", ["replaced-file", "unsigned-blob", "forged-signature"])
def test_foreign_pickle_is_refused_and_never_runs(kernels, ks, tmp_path, attack):
    k, _ = kernels.start("foreign.ipynb")
    k.ok("class Thing:\n    pass\nthing = Thing()\nkeep = [1, 2, 3]")
    k.close()
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(marker))
    if attack == "replaced-file":
        # The blob file of `thing` replaced by a foreign pickle: its hash no longer matches.
        victim = "thing"
        _, path = _blob_of(ks, "foreign.ipynb", victim)
        _write_blob_file(path, evil)
        expected = "damaged"
    else:
        # A well-formed blob (its name is its hash) holding a foreign pickle, and the
        # manifest pointed at it: the signature check refuses it before unpickling.
        from pipulate.blobs import content_hash

        victim = "keep"
        payload = evil if attack == "unsigned-blob" else b"PPSIG1" + b"\0" * 32 + evil
        digest = ks.blobs.put(payload)
        latest = ks.latest_version("foreign.ipynb")
        with ks.db.write() as conn:
            # the row the latest version reads: the one whose range of versions holds it
            changed = conn.execute(
                "UPDATE kernel_variables SET blob = ?, content_hash = ?, format = 'pickle', value = NULL "
                "WHERE notebook = ? AND name = ? AND version <= ? AND (until IS NULL OR until > ?) RETURNING 1",
                (digest, content_hash(payload), "foreign.ipynb", victim, latest, latest)).fetchall()
        assert len(changed) == 1
        expected = "not signed" if attack == "unsigned-blob" else "altered"
    k, out = kernels.start("foreign.ipynb")
    assert victim in out.split("Skipped:")[-1] and expected in out, out
    survivor = "keep" if victim == "thing" else "thing"
    assert "OK" in k.ok(f"assert {victim!r} not in globals() and {survivor!r} in globals()\nprint('OK')")
    assert not marker.exists()


def _kill_loop(kernels, ks, rounds, size_mib):
    """Kill -9 the kernel at random moments of a large save; every restart gets a whole version."""
    n = size_mib * 1024 * 1024 // 8
    k, _ = kernels.start("crash.ipynb")
    k.ok("import numpy as np\nmarker = -1")
    started = time.monotonic()
    k.ok(f"big = np.random.default_rng(0).random({n})\nbig[0] = 0.0\nmarker = 0")
    save_time = time.monotonic() - started
    rng = random.Random(1234)
    committed_markers = {0}
    previous = 0
    for i in range(1, rounds + 1):
        # Start the next big save and kill the kernel somewhere inside it.
        k.send(f"big = np.random.default_rng({i}).random({n})\nbig[0] = float({i})\nmarker = {i}")
        time.sleep(rng.uniform(0.0, save_time * 1.2))
        k.kill9()
        k, out = kernels.start("crash.ipynb")
        assert "Skipped" not in out and "restored" in out, out
        check = k.ok("assert big[0] == marker, (big[0], marker)\n"
                     "assert big.shape == ({n},)\nprint('MARKER', marker)".replace("{n}", str(n)))
        marker = int(check.split("MARKER")[1].split()[0])
        assert marker in (previous, i), (marker, previous, i)
        committed_markers.add(marker)
        previous = marker
    k.close()
    assert ks.summary("crash.ipynb")["has_saved_state"]
    return committed_markers


def test_kill_nine_during_large_save_leaves_a_whole_version(kernels, ks):
    _kill_loop(kernels, ks, rounds=12, size_mib=64)


@pytest.mark.slow
def test_kill_nine_during_large_save_many_times(kernels, ks):
    _kill_loop(kernels, ks, rounds=60, size_mib=128)


def test_big_unchanged_array_is_not_rewritten(kernels, ks):
    k, _ = kernels.start("big.ipynb")
    k.ok("import numpy as np\nbig = np.random.default_rng(0).random(4_000_000)\nsmall = 1")
    first = ks.manifest("big.ipynb").by_name()["big"]
    k.ok("small = 2")
    second = ks.manifest("big.ipynb").by_name()
    assert second["big"].blob == first.blob and second["small"].value == "2"
    k.ok("big[10] = -1.0")  # mutated in place: same object, new content
    third = ks.manifest("big.ipynb").by_name()["big"]
    assert third.blob != first.blob
    k.ok("view = big[::2]")
    k.ok("view[0] = -5.0")  # changes `big` through a view that the cell names
    fourth = ks.manifest("big.ipynb").by_name()["big"]
    assert fourth.blob != third.blob
    k.ok("def poke():\n    big[1] = 7.0")
    k.ok("poke()")  # a notebook function may touch any global: full check
    fifth = ks.manifest("big.ipynb").by_name()["big"]
    assert fifth.blob != fourth.blob


def test_autoloaded_extension_restores_and_announces_in_first_cell(kernels, ks):
    """The workstation's kernel spec loads the extension at start-up (no cell running):
    its restore line comes with whatever cell the user runs first."""
    k, _ = kernels.start("auto.ipynb")
    k.ok("kept = {'a': 1}")
    k.close()
    k, _ = kernels.start("auto.ipynb", load=None)  # the stock kernel: nothing restored
    assert "NameError" in (k.run("kept")[1] or "")
    k.close()
    k = Kernel(kernels.home, "auto.ipynb", kernels.cwd, load=SPEC)
    kernels.started.append(k)
    out = k.ok("print('first cell')")
    assert "restored 1 variable of auto.ipynb" in out and "first cell" in out, out
    assert "restored" not in k.ok("print(kept)")
    assert "{'a': 1}" in k.ok("print(kept)")


def test_plain_ipython_gets_a_stable_default_notebook(kernels, ks):
    k, _ = kernels.start(None)
    k.ok("plain = 42")
    k.close()
    k, out = kernels.start(None)
    assert "restored 1 variable" in out and "IPython in" in out, out
    assert "42" in k.ok("print(plain)")
    [nb] = ks.notebooks()
    assert nb["id"].startswith("ipython-")


def test_notebook_name_from_config(kernels, ks):
    k, _ = kernels.start("ignored.ipynb", extra_env={"PIPULATE_NOTEBOOK": "chosen/name.ipynb"})
    k.ok("x = 'from config'")
    assert [nb["id"] for nb in ks.notebooks()] == ["chosen--name.ipynb"]


def test_jupyter_absolute_session_path_is_made_relative(kernels, ks, tmp_path):
    """jupyter_server sets JPY_SESSION_NAME to the notebook's absolute path."""
    root = tmp_path / "notebooks"
    (root / "sub").mkdir(parents=True)
    k, _ = kernels.start(str(root / "sub" / "nb.ipynb"), extra_env={"PIPULATE_NOTEBOOKS_DIR": str(root)})
    k.ok("y = 1")
    assert [(nb["id"], nb["name"]) for nb in ks.notebooks()] == [("sub--nb.ipynb", "sub/nb.ipynb")]


def test_a_failing_save_never_breaks_the_cell(kernels, ks):
    k, _ = kernels.start("broken.ipynb")
    k.ok("first = 1")
    # Make this kernel's store fail from now on (as a full disk or a locked database would).
    k.ok("st = get_ipython()._pipulate_kernel_state\n"
         "def boom(*a, **kw):\n    raise OSError('disk full')\n"
         "st.store.commit_version = boom")
    out, err = k.run("second = 2\nprint('cell ran', second)")
    assert err is None and "cell ran 2" in out
    assert "kernel state after cell [" in out and "not saved" in out and "disk full" in out
    assert ks.summary("broken.ipynb")["variable_names"] == ["first"]
