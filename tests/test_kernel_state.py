"""Kernel state without a kernel process: ids, saving, restoring, the store API, the CLI."""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import sqlite3
import threading
from dataclasses import replace

import apsw
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from pipulate.cli import main as cli_main
from pipulate.kernel_state import KernelStateStore, notebook_id_for_path, validate_notebook_id
from pipulate.kernel_state.ids import detect_notebook, display_path
from pipulate.kernel_state.frames import FRAME
from pipulate.kernel_state import saving
from pipulate.kernel_state.restoring import restore
from pipulate.kernel_state.saving import Saver
from pipulate.kernel_state.store import Entry
from pipulate.settings import Settings

from .blob_helpers import lose_blob, rewrite_blob


def make_ns(code: str = "") -> dict:
    ns = {"__name__": "__main__"}
    exec(code, ns)
    return ns


# --- ids ------------------------------------------------------------------------

@pytest.mark.parametrize("good", ["hello_world.ipynb", "sub--x.ipynb", "a", "A-b_c.9", "x" * 255])
def test_valid_ids(good):
    assert validate_notebook_id(good) == good


@pytest.mark.parametrize("bad", ["", ".hidden", "..", "a..b", "a/b", "a\\b", "x" * 256, "é.ipynb",
                                 "a b", "%2e%2e", None, 3, "a\0b"])
def test_invalid_ids_are_refused(bad):
    with pytest.raises(ValueError):
        validate_notebook_id(bad)


@pytest.mark.parametrize("path, expected", [
    ("hello_world.ipynb", "hello_world.ipynb"),
    ("sub/x.ipynb", "sub--x.ipynb"),
    ("a/b/c.ipynb", "a--b--c.ipynb"),
])
def test_ids_from_paths(path, expected):
    assert notebook_id_for_path(path) == expected


def test_ids_that_would_collide_get_a_hash():
    ids = {notebook_id_for_path(p) for p in
           ["a/b.ipynb", "a--b.ipynb", "my notebook.ipynb", "my_notebook.ipynb", ".x.ipynb", "x.ipynb",
            "../../etc/passwd", "ünï.ipynb", "a" * 400 + ".ipynb", "a" * 401 + ".ipynb"]}
    assert len(ids) == 10
    for i in ids:
        validate_notebook_id(i)


@hsettings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_any_path_gives_a_safe_id(path):
    validate_notebook_id(notebook_id_for_path(path))


def test_display_path_is_relative_to_the_notebooks_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPULATE_NOTEBOOKS_DIR", str(tmp_path))
    assert display_path(str(tmp_path / "sub" / "x.ipynb")) == "sub/x.ipynb"
    assert display_path("rel/y.ipynb") == "rel/y.ipynb"


class FakeShell:
    def __init__(self, ns=None):
        self.user_ns = ns or {}
        self.config = {}


def test_detect_notebook_order(monkeypatch, tmp_path):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("PIPULATE_NOTEBOOK", raising=False)
    monkeypatch.chdir(tmp_path)
    plain = detect_notebook(FakeShell())
    assert plain[0].startswith("ipython-") and plain == detect_notebook(FakeShell())
    assert detect_notebook(FakeShell({"__session__": "sub/n.ipynb"})) == ("sub--n.ipynb", "sub/n.ipynb")
    monkeypatch.setenv("JPY_SESSION_NAME", "env.ipynb")
    assert detect_notebook(FakeShell())[0] == "env.ipynb"
    shell = FakeShell({"__session__": "sub/n.ipynb"})
    shell.config = {"Pipulate": {"notebook": "configured"}}
    assert detect_notebook(shell) == ("configured", "configured")
    monkeypatch.setenv("PIPULATE_NOTEBOOK", "from env/x.ipynb")
    nb_id, name = detect_notebook(shell)
    assert name == "from env/x.ipynb"
    validate_notebook_id(nb_id)


# --- saving and restoring ------------------------------------------------------------

def save(ks, ns, notebook="nb", cell=None, full=False, saver=None):
    saver = saver or Saver(ks, notebook, notebook)
    return saver, saver.save(ns, cell=cell, full=full)


def test_round_trip_keeps_types_values_and_aliases(ks):
    ns = make_ns(
        "import numpy as np, pandas as pd, collections, datetime\n"
        "arr = np.arange(20).reshape(4, 5).T\n"          # Fortran-ordered
        "strided = np.arange(30)[::3]\n"                 # not contiguous
        "dt = np.array(['2024-01-01'], dtype='datetime64[D]')\n"
        "df = pd.DataFrame({'a': [1.5, None], 'b': ['x', 'y']}, index=['r1', 'r2'])\n"
        "ser = pd.Series([1, 2], name='s')\n"
        "odd = pd.DataFrame({1: [1]})\n"                 # not Arrow-safe: pickled
        "od = collections.OrderedDict(a=1)\n"
        "when = datetime.date(2024, 1, 2)\n"
        "t = (1, 'two', None)\n"
        "shared = [1, 2]\n"
        "same = shared\n"
        "holder = {'inner': shared}\n"
        "def f(x):\n    return x + base\n"
        "base = 10\n")
    _, result = save(ks, ns)
    assert result.created and not result.skipped
    target = {}
    restored = restore(ks, "nb", target)
    assert not restored.failed
    assert (target["arr"] == ns["arr"]).all() and target["arr"].flags.f_contiguous
    assert (target["strided"] == ns["strided"]).all()
    assert target["dt"].dtype == ns["dt"].dtype and (target["dt"] == ns["dt"]).all()
    pd.testing.assert_frame_equal(target["df"], ns["df"])
    pd.testing.assert_series_equal(target["ser"], ns["ser"])
    pd.testing.assert_frame_equal(target["odd"], ns["odd"])
    assert type(target["od"]) is type(ns["od"]) and target["od"] == ns["od"]
    assert target["when"] == ns["when"] and target["t"] == ns["t"]
    assert target["same"] is target["shared"]
    assert target["np"] is np
    assert target["f"](1) == 11
    target["base"] = 20
    assert target["f"](1) == 21, "restored functions use the namespace they are restored into"
    kinds = {v["name"]: v["format"] for v in ks.variables("nb")["variables"]}
    # a small frame is stored whole (big ones column by column: test_kernel_state_background.py)
    assert kinds["arr"] == "npy" and kinds["df"] == "arrow" and kinds["ser"] == "arrow-series"
    assert kinds["t"] == "json+t" and kinds["np"] == "module" and kinds["f"] == "pickle"


def test_unpicklable_values_are_skipped_with_reasons(ks, tmp_path):
    f = open(tmp_path / "f.txt", "w")
    sock = socket.socket()
    conn = sqlite3.connect(":memory:")
    try:
        ns = make_ns("ok = 1\ngen = (i for i in range(3))\n")
        ns.update(fh=f, sock=sock, lock=threading.Lock(), conn=conn)
        _, result = save(ks, ns)
        reasons = {s["name"]: s["reason"] for s in result.skipped}
        assert set(reasons) == {"gen", "sock", "conn"}
        assert all(reasons.values())
        info = ks.variables("nb")
        assert [v["name"] for v in info["variables"]] == ["fh", "lock", "ok"]
        assert {s["name"] for s in info["skipped"]} == set(reasons)
    finally:
        f.close()
        sock.close()
        conn.close()


def test_a_value_that_breaks_isinstance_is_skipped_and_the_rest_saved(ks):
    # A value whose __class__ raises breaks isinstance() and pickling; it must cost only itself.
    class Broken:
        @property
        def __class__(self):
            raise RuntimeError("no class today")

    ns = make_ns("ok = 1\ndata = [1, 2]\n")
    ns["broken"] = Broken()
    saver = Saver(ks, "nb", "nb.ipynb")
    result = saver.save(ns, cell="broken\nok = 1")
    assert {s["name"] for s in result.skipped} == {"broken"}
    assert "no class today" in result.skipped[0]["reason"]
    target: dict = {}
    restore(ks, "nb", target)
    assert target["ok"] == 1 and target["data"] == [1, 2] and "broken" not in target


def test_a_dead_weakref_proxy_comes_back_dead_with_its_type(ks):
    # isinstance() on a dead proxy raises ReferenceError: the save looks at type() only.
    import weakref

    class Thing:
        pass

    class CallableThing:
        def __call__(self):
            return 1

    ns = make_ns("ok = 1\n")
    ns["dead"], ns["dead_callable"] = weakref.proxy(Thing()), weakref.proxy(CallableThing())
    result = Saver(ks, "nb", "nb.ipynb").save(ns, cell="dead\ndead_callable\nok = 1")
    assert result.skipped == []
    target: dict = {}
    assert not restore(ks, "nb", target).failed
    assert type(target["dead"]) is weakref.ProxyType and type(target["dead_callable"]) is weakref.CallableProxyType
    with pytest.raises(ReferenceError):
        target["dead"].anything
    assert target["ok"] == 1


def test_ipython_names_and_persist_lists(ks):
    ns = make_ns("a = 1\nb = 2\nc = 3\n_private = 4\n")
    ns.update({"In": [""], "Out": {}, "_": 5, "__": 6, "_i": "", "_i3": "x", "_3": 7, "_oh": {},
               "exit": object(), "get_ipython": lambda: None, "__builtins__": {}})
    _, result = save(ks, ns)
    names = [v["name"] for v in ks.variables("nb")["variables"]]
    assert names == ["_private", "a", "b", "c"]
    ns["__skip_persist__"] = ["b"]
    save(ks, ns)
    assert [v["name"] for v in ks.variables("nb")["variables"]] == ["_private", "a", "c"]
    ns["__persist__"] = ["a", "b", "c"]
    save(ks, ns)
    assert [v["name"] for v in ks.variables("nb")["variables"]] == ["a", "c"]
    ns["__persist__"] = "a"  # not a list: ignored, reported
    _, result = save(ks, ns)
    assert any(s["name"] == "__persist__" for s in result.skipped)


def test_only_changed_variables_are_written(ks):
    ns = make_ns("import numpy as np\nbig = np.random.default_rng(0).random(2_000_000)\nsmall = [1]\n")
    saver, first = save(ks, ns)
    assert set(first.written) == {"big"}  # small JSON stays inline in the manifest
    ns["small"].append(2)
    _, second = save(ks, ns, cell="small.append(2)", saver=saver)
    assert second.created and second.written == []
    ns["big"][5] = 0.5
    _, third = save(ks, ns, cell="big[5] = 0.5", saver=saver)
    assert third.written == ["big"]
    _, fourth = save(ks, ns, cell="x = 1", saver=saver)
    assert not fourth.created and fourth.version == third.version  # nothing changed: no version
    ns["big"][6] = 0.25  # behind the heuristic's back (no name in the cell)...
    _, fifth = save(ks, ns, cell="pass", saver=saver)
    assert not fifth.created
    _, sixth = save(ks, ns, full=True, saver=saver)  # ... `%state save` checks everything
    assert sixth.written == ["big"]



def _typed(value):
    """``value`` with every atom's type spelled out: 1, 1.0 and True differ, and so does dict order."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, repr(value))


SMALL_CHANGES = [
    ("lst[0] = True", lambda ns: ns["lst"].__setitem__(0, True)),  # equal to 1, not the same
    ("lst.append(None)", lambda ns: ns["lst"].append(None)),
    ("d['k'] = 1.0", lambda ns: ns["d"].__setitem__("k", 1.0)),
    ("d['tags'].append('z')", lambda ns: ns["d"]["tags"].append("z")),
    ("k moved last", lambda ns: ns["d"].__setitem__("k", ns["d"].pop("k"))),
    ("t[1][0] = 20", lambda ns: ns["t"][1].__setitem__(0, 20)),
    ("deep[0][0][0].append(1)", lambda ns: ns["deep"][0][0][0].append(1)),
]


def test_small_containers_changed_behind_the_cells_back_are_saved(ks):
    """Small lists, tuples and dicts of atoms are taken as unchanged only while they hold the very
    same objects: every change below, made where the cell's text does not name it, is saved."""
    ns = {"lst": [1, "a", 2.5], "d": {"k": 1, "tags": ["x", "y"]}, "t": (1, [2, 3]), "s": "text",
          "deep": [[[[0]]]]}
    saver, first = save(ks, ns)
    for label, change in SMALL_CHANGES:
        change(ns)
        _, result = save(ks, ns, cell="pass", saver=saver)
        assert result.created, label
        target = {}
        restore(ks, "nb", target)
        assert {n: _typed(v) for n, v in target.items()} == {n: _typed(v) for n, v in ns.items()}, label
    ns["lst"][1] = "".join(["a"])  # an equal str, but a new object: looked at, and found the same
    _, same = save(ks, ns, cell="pass", saver=saver)
    assert not same.created



def test_a_small_dict_is_saved_anew_when_sharing_starts_or_ends(ks):
    """A dict of lists left as it was is saved anew when one of its lists becomes (or stops
    being) a variable of its own: the restored variables share what the kernel's shared."""
    ns = {"d": {"x": [1, 2], "n": 1}}
    saver, _ = save(ks, ns)
    ns["lst"] = ns["d"]["x"]
    save(ks, ns, cell='lst = d["x"]', saver=saver)
    target = {}
    restore(ks, "nb", target)
    assert target["lst"] is target["d"]["x"]
    del ns["lst"]
    save(ks, ns, cell="del lst", saver=saver)
    target = {}
    assert not restore(ks, "nb", target).failed
    assert target == {"d": {"x": [1, 2], "n": 1}}

atoms = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5))
small_values = st.recursive(atoms, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)), max_leaves=12)


@given(start=small_values, steps=st.lists(st.tuples(st.integers(0, 50), small_values), max_size=6))
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_change_to_a_small_container_is_saved(ks, start, steps):
    """Random nested lists and dicts, each step replacing one inner item in place: the latest
    version always holds what the namespace holds."""
    ns = {"v": [start]}
    saver = Saver(ks, "prop", "prop")
    saver.save(ns, cell="pass")
    for where, value in steps:
        containers = [c for c in _containers(ns["v"])]
        holder = containers[where % len(containers)]
        if isinstance(holder, list):
            if holder:
                holder[where % len(holder)] = value
            else:
                holder.append(value)
        else:
            holder[str(where)] = value
        saver.save(ns, cell="pass")
        target = {}
        restore(ks, "prop", target)
        assert _typed(target["v"]) == _typed(ns["v"])


def _containers(value, depth=0):
    if isinstance(value, (list, dict)) and depth < 3:
        yield value
        for item in (value.values() if isinstance(value, dict) else value):
            yield from _containers(item, depth + 1)

def test_same_content_shares_blobs_across_notebooks(ks):
    a = make_ns("import numpy as np\nx = np.ones(100_000)\n")
    b = make_ns("import numpy as np\ny = np.ones(100_000)\n")
    save(ks, a, "one")
    save(ks, b, "two")
    blob_a = ks.manifest("one").by_name()["x"].blob
    blob_b = ks.manifest("two").by_name()["y"].blob
    assert blob_a == blob_b


def test_retention_keeps_last_n_and_collects_blobs(isolated_home):
    ks = KernelStateStore(isolated_home, settings=Settings(keep_versions=3))
    try:
        saver = Saver(ks, "nb", "nb")
        blobs = []
        for i in range(6):
            ns = {"arr": np.full(50_000, float(i)) + np.arange(50_000)}
            saver.save(ns, full=True)
            blobs.append(ks.manifest("nb").by_name()["arr"].blob)
        assert [v["version"] for v in ks.versions("nb")] == [6, 5, 4]
        with pytest.raises(KeyError, match="no version 1"):
            ks.manifest("nb", 1)
        removed = ks.engine.collect_garbage(grace_seconds=0)
        assert removed >= 3
        assert not any(ks.blobs.exists(b) for b in blobs[:3])
        assert all(ks.blobs.exists(b) for b in blobs[3:])
    finally:
        ks.close()


def test_compression_where_it_pays_and_switch(isolated_home):
    ns = {"zeros": np.zeros(1_000_000), "noise": np.random.default_rng(0).random(200_000)}
    ks = KernelStateStore(isolated_home)
    Saver(ks, "c", "c").save(ns)
    m = ks.manifest("c").by_name()
    assert ks.blobs.size_on_disk(m["zeros"].blob) < m["zeros"].size / 10
    assert ks.blobs.size_on_disk(m["noise"].blob) >= m["noise"].size
    ks.close()
    off = KernelStateStore(isolated_home / "other", settings=Settings(compress=False))
    Saver(off, "c", "c").save({"zeros": np.zeros(1_000_001)})
    e = off.manifest("c").by_name()["zeros"]
    assert off.blobs.size_on_disk(e.blob) >= e.size
    off.close()


def test_max_variable_bytes(isolated_home):
    ks = KernelStateStore(isolated_home, settings=Settings(max_variable_bytes=1000))
    _, result = save(ks, {"big": np.zeros(1000), "small": 1, "blob": b"x" * 5000})
    assert {s["name"] for s in result.skipped} == {"big", "blob"}
    assert "max_variable_bytes" in result.skipped[0]["reason"]
    ks.close()


# --- the store API ------------------------------------------------------------------

def test_store_api_shapes_and_errors(ks):
    empty = ks.summary("nothing.ipynb")
    assert empty == {"has_saved_state": False, "saved_at": None, "variable_count": 0, "variable_names": [],
                     "file_size_bytes": 0, "checksum": None, "versions": [], "comes_back": []}
    saver, _ = save(ks, {"a": 1, "arr": np.arange(10_000)}, "api.ipynb")
    saver.save({"a": 2, "arr": np.arange(10_000), "b": "x"})
    s = ks.summary("api.ipynb")
    assert s["has_saved_state"] and s["variable_names"] == ["a", "arr", "b"] and s["variable_count"] == 3
    assert s["file_size_bytes"] > 1000 and len(s["checksum"]) == 32
    assert [v["version"] for v in s["versions"]] == [2, 1]
    assert set(s["versions"][0]) == {"version", "saved_at", "variable_count", "size_bytes"}
    v1 = ks.variables("api.ipynb", 1)
    assert v1["version"] == 1 and [v["name"] for v in v1["variables"]] == ["a", "arr"]
    assert set(v1["variables"][0]) == {"name", "type", "size", "format"} and v1["skipped"] == []
    nbs = ks.notebooks()
    assert nbs == [{"id": "api.ipynb", "name": "api.ipynb", "saved_at": s["saved_at"],
                    "variable_count": 3, "versions": 2}]
    assert ks.diff("api.ipynb", 1, 2) == {"from": 1, "to": 2, "added": ["b"], "deleted": [], "modified": ["a"]}
    with pytest.raises(KeyError):
        ks.variables("api.ipynb", 9)
    with pytest.raises(KeyError):
        ks.select_restore("api.ipynb", 9)
    with pytest.raises(KeyError):
        ks.select_restore("unknown.ipynb")
    with pytest.raises(ValueError):
        ks.select_restore("api.ipynb", "1")
    sel = ks.select_restore("api.ipynb", 1)
    assert sel["notebook"] == "api.ipynb" and sel["version"] == 1
    assert ks.take_restore_selection("api.ipynb") == 1
    assert ks.take_restore_selection("api.ipynb") is None
    assert ks.select_restore("api.ipynb")["version"] == 2
    for bad in ("../x", ".hidden", "a/b", ""):
        for call in (ks.summary, ks.clear, ks.variables, ks.select_restore, ks.versions):
            with pytest.raises(ValueError):
                call(bad)
    assert ks.clear("api.ipynb") is True
    assert ks.clear("api.ipynb") is False
    assert ks.summary("api.ipynb")["has_saved_state"] is False


def test_selected_version_survives_retention(isolated_home):
    ks = KernelStateStore(isolated_home, settings=Settings(keep_versions=2))
    saver = Saver(ks, "r", "r")
    for i in range(3):
        saver.save({"i": i})
    ks.select_restore("r", 2)
    for i in range(3, 6):
        saver.save({"i": i})
    assert [v["version"] for v in ks.versions("r")] == [6, 5, 2]
    ks.close()


def test_damaged_inline_and_missing_blob_lose_one_variable(ks):
    saver, _ = save(ks, {"arr": np.arange(1000), "keep": "yes", "obj": {1, 2}}, "dmg")
    entry = ks.manifest("dmg").by_name()["arr"]
    lose_blob(ks.blobs, entry.blob)
    target = {}
    result = restore(ks, "dmg", target)
    assert target == {"keep": "yes", "obj": {1, 2}}
    assert result.failed[0]["name"] == "arr" and "missing" in result.failed[0]["reason"]


# --- command line ----------------------------------------------------------------------

def test_cli_list_show_clear(ks, capsys):
    save(ks, {"alpha": 1, "arr": np.arange(5)}, "sub--n.ipynb")
    with ks.db.write() as conn:
        conn.execute("UPDATE kernel_notebooks SET name = 'sub/n.ipynb'")
    assert cli_main(["state", "list"]) == 0
    out = capsys.readouterr().out
    assert "sub--n.ipynb" in out and "sub/n.ipynb" in out
    assert cli_main(["state", "show", "sub/n.ipynb"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "npy" in out and "version" in out
    assert cli_main(["state", "show", "sub--n.ipynb", "--version", "7"]) == 1
    assert "no version 7" in capsys.readouterr().err
    assert cli_main(["state", "show", "missing.ipynb"]) == 1
    assert "no saved state" in capsys.readouterr().err
    assert cli_main(["state", "clear", "sub--n.ipynb"]) == 0
    assert cli_main(["state", "clear", "sub--n.ipynb"]) == 1
    assert cli_main(["state", "list"]) == 0
    assert "no notebook" in capsys.readouterr().out


@pytest.mark.parametrize("version", [2**63, -(2**63) - 1, 10**30])
def test_versions_past_the_database_integers_are_unknown_versions(ks, capsys, version):
    Saver(ks, "nb", "nb.ipynb").save({"x": 1})
    for call in (lambda: ks.manifest("nb", version), lambda: ks.select_restore("nb", version),
                 lambda: ks.variables("nb", version), lambda: ks.diff("nb", 1, version)):
        with pytest.raises(KeyError, match=f"no version {version}"):
            call()
    assert cli_main(["state", "show", "nb", "--version", str(version)]) == 1
    assert f"no version {version}" in capsys.readouterr().err
    assert ks.manifest("nb").version == 1


def test_cli_bad_notebook_names(ks, capsys):
    assert cli_main(["state", "show", "../../etc/passwd"]) == 1  # mapped to a safe id, unknown
    err = capsys.readouterr().err
    assert "no saved state" in err and "/etc" not in err.replace("../../etc/passwd", "")
    with pytest.raises(SystemExit):
        cli_main(["state", "frobnicate"])


@pytest.mark.parametrize("data", [b"\0" * 200_000, os.urandom(3_000_000)])
def test_blob_views_are_checked(ks, data):
    from pipulate.errors import IntegrityError

    digest = ks.blobs.put(data)
    assert bytes(ks.blobs.get_view(digest)) == data
    raw = bytearray(ks.blobs.path(digest).read_bytes())
    raw[-5] ^= 0xFF
    rewrite_blob(ks.blobs, digest, bytes(raw))
    with pytest.raises(IntegrityError):
        ks.blobs.get_view(digest)
    rewrite_blob(ks.blobs, digest, bytes(raw[:20]))
    with pytest.raises(IntegrityError):
        ks.blobs.get_view(digest)
    lose_blob(ks.blobs, digest)
    with pytest.raises(IntegrityError, match="missing"):
        ks.blobs.get_view(digest)


@pytest.mark.parametrize("small_frame_bytes, stored_as", [(0, "arrow-columns"), (1 << 20, "arrow")])
def test_dataframes_round_trip_exactly(ks, monkeypatch, small_frame_bytes, stored_as):
    monkeypatch.setattr(saving, "SMALL_FRAME_BYTES", small_frame_bytes)
    frames = {
        "floats": pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": np.arange(3, dtype=np.float32)}),
        "ints": pd.DataFrame({"i": np.arange(5, dtype=np.int16), "u": np.arange(5, dtype=np.uint64)}),
        "mixed": pd.DataFrame({"s": ["x", None, "z"], "t": pd.date_range("2024", periods=3, tz="Europe/Paris"),
                               "c": pd.Categorical(["a", "b", "a"]), "flag": [True, False, True],
                               "n": pd.array([1, None, 3], dtype="Int64")}),
        "indexed": pd.DataFrame({"v": [1.5, 2.5]}, index=pd.Index(["r1", "r2"], name="row")),
        "ranged": pd.DataFrame({"v": [1, 2, 3]}, index=pd.RangeIndex(10, 16, 2)),
        "empty": pd.DataFrame({"v": pd.Series([], dtype="float64")}),
    }
    save(ks, dict(frames), "frames")
    target = {}
    result = restore(ks, "frames", target)
    assert not result.failed
    formats_ = {v["name"]: v["format"] for v in ks.variables("frames")["variables"]}
    for name, df in frames.items():
        assert formats_[name] == stored_as, name
        pd.testing.assert_frame_equal(target[name], df, check_exact=True)


def test_big_numeric_frames_come_back_writable_and_equal(ks):
    df = pd.DataFrame({"a": np.random.default_rng(1).random(100_000), "b": np.arange(100_000, dtype=np.int32)})
    save(ks, {"df": df}, "wf")
    target = {}
    restore(ks, "wf", target)
    back = target["df"]
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    back.loc[0, "a"] = -1.0
    back["b"] += 1
    assert back.loc[0, "a"] == -1.0 and back["b"].iloc[0] == 1
    assert df.loc[0, "a"] != -1.0


def test_equal_atoms_are_not_aliases(ks):
    ns = {"x": 5, "y": 5, "s": "same", "t": "same", "lst": [1], "ref": None}
    ns["ref"] = ns["lst"]
    save(ks, ns, "atoms")
    info = {v["name"]: v for v in ks.variables("atoms")["variables"]}
    assert "alias_of" not in info["x"] and "alias_of" not in info["y"] and "alias_of" not in info["t"]
    assert info["ref"]["alias_of"] == "lst"


def test_every_command_and_setting_is_documented():
    from pathlib import Path

    from pipulate.kernel_state import magics

    doc = (Path(__file__).resolve().parent.parent / "docs" / "kernel-state.md").read_text()
    for sub in ("save", "versions", "restore [V]", "diff A B", "clear"):
        assert f"%state {sub}" in doc and f"%state {sub}" in magics.__doc__
    for action in ("list", "show NOTEBOOK", "clear NOTEBOOK"):
        assert f"pipulate state {action}" in doc
    for name in ("autosave", "autorestore", "keep_versions", "max_variable_bytes", "compress", "inline_limit",
                 "__persist__", "__skip_persist__", "PIPULATE_NOTEBOOK", "select_restore"):
        assert name in doc, name


def test_objects_shared_between_variables_stay_shared(ks):
    ns = make_ns(
        "import numpy as np, pandas as pd\n"
        "a = np.arange(10)\n"
        "lst = [1, 2]\n"
        "df = pd.DataFrame({'x': [1.0, 2.0]})\n"
        "c = [a, lst]\n"
        "d = {'k': lst, 'n': 1}\n"
        "t = (a, 'x')\n"
        "class Box:\n    pass\n"
        "box = Box()\n"
        "box.frame = df\n"
        "box.items = lst\n")
    saver, _ = save(ks, ns, "share")
    formats_ = {v["name"]: v["format"] for v in ks.variables("share")["variables"]}
    assert formats_["lst"] == "json" and formats_["a"] == "npy" and formats_["d"] == "pickle"
    target = {}
    result = restore(ks, "share", target)
    assert not result.failed
    assert target["c"][0] is target["a"] and target["c"][1] is target["lst"]
    assert target["d"]["k"] is target["lst"] and target["t"][0] is target["a"]
    assert target["box"].frame is target["df"] and target["box"].items is target["lst"]
    target["lst"].append(3)
    assert target["d"]["k"] == [1, 2, 3]
    # A change to `lst` alone rewrites `lst`, not the values that hold it.
    ns["lst"].append(3)
    _, again = save(ks, ns, cell="lst.append(3)", saver=saver)
    assert again.created and "d" not in again.written and "box" not in again.written
    # If the shared variable is lost, the holders say so; the rest comes back.
    entry = ks.manifest("share").by_name()["a"]
    lose_blob(ks.blobs, entry.blob)
    target = {}
    result = restore(ks, "share", target)
    failed = {f["name"]: f["reason"] for f in result.failed}
    assert set(failed) == {"a", "c", "t"} and "'a'" in failed["c"]
    assert target["d"]["k"] is target["lst"]


def test_module_entries_are_imported_by_name_only(ks):
    save(ks, {"json_mod": __import__("json"), "keep": 1}, "mods")
    with ks.db.write() as conn:
        conn.execute("UPDATE kernel_variables SET value = 'os; import this' WHERE name = 'json_mod'")
    target = {}
    result = restore(ks, "mods", target)
    assert target == {"keep": 1} and result.failed[0]["name"] == "json_mod"
    assert "not a module name" in result.failed[0]["reason"]


def test_cli_empty_notebook_name(ks, capsys):
    assert cli_main(["state", "clear", " "]) == 2
    assert "give a notebook id or path" in capsys.readouterr().err


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    | st.tuples(children, children),
    max_leaves=20)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), json_like, max_size=6))
def test_any_plain_namespace_round_trips(isolated_home, values):
    ks = KernelStateStore(isolated_home)
    try:
        nb = "prop"
        ks.clear(nb)
        Saver(ks, nb, nb).save(dict(values))
        target = {}
        if values:
            result = restore(ks, nb, target)
            assert not result.failed
        assert target == values
    finally:
        ks.close()


# --- manifests stored by ranges of versions --------------------------------------------------------

def var_rows(ks, notebook, where="TRUE", params=()) -> list[tuple]:
    """(version, name, until) of the notebook's kernel_variables rows matching ``where``."""
    return ks.db.rows(f"SELECT version, name, until FROM kernel_variables WHERE notebook = ? AND ({where}) "
                      "ORDER BY version, name", (notebook, *params))


def test_a_save_after_a_one_variable_change_writes_one_row(ks):
    ns = {f"v{i}": i for i in range(200)}
    ns.update(arr=np.arange(100_000), frame=pd.DataFrame({"a": np.arange(1000), "b": np.ones(1000)}),
              counter=0, alias=None)
    ns["alias"] = ns["arr"]
    saver, first = save(ks, ns, "one")
    rows = var_rows(ks, "one")
    assert len(rows) == 204 and {v for v, _, _ in rows} == {first.version}
    columns = ks.db.rows("SELECT count(*) FROM kernel_frame_columns WHERE notebook = 'one'")[0][0]
    ns["counter"] += 1
    _, second = save(ks, ns, "one", cell="counter += 1", saver=saver)
    assert second.created and second.version == first.version + 1
    assert var_rows(ks, "one", "version = ?", (second.version,)) == [(second.version, "counter", None)]
    assert var_rows(ks, "one", "until IS NOT NULL") == [(first.version, "counter", second.version)]
    assert len(var_rows(ks, "one")) == 205
    assert ks.db.rows("SELECT count(*) FROM kernel_frame_columns WHERE notebook = 'one'")[0][0] == columns
    assert ks.manifest("one", first.version).by_name()["counter"].value == "0"
    assert ks.latest_checksum("one") == (second.version, ks.summary("one")["checksum"], "[]")
    assert ks.latest_checksum("none") is None
    assert ks.manifest("one").by_name()["counter"].value == "1"
    assert ks.diff("one", first.version, second.version) == {
        "from": first.version, "to": second.version, "added": [], "deleted": [], "modified": ["counter"]}
    target = {}
    assert not restore(ks, "one", target).failed and target["counter"] == 1 and target["alias"] is target["arr"]


def test_deleting_a_variable_closes_its_row(ks):
    saver, first = save(ks, {"a": 1, "b": [1, 2], "c": "x"}, "del")
    _, second = save(ks, {"a": 1, "c": "x"}, "del", saver=saver)
    assert second.created
    assert var_rows(ks, "del", "version = ?", (second.version,)) == []  # nothing new to write
    assert var_rows(ks, "del", "until IS NOT NULL") == [(first.version, "b", second.version)]
    assert [e.name for e in ks.manifest("del", first.version).entries] == ["a", "b", "c"]
    assert [e.name for e in ks.manifest("del").entries] == ["a", "c"]
    assert [v["name"] for v in ks.variables("del")["variables"]] == ["a", "c"]
    assert ks.diff("del", first.version, second.version)["deleted"] == ["b"]
    assert ks.summary("del")["variable_names"] == ["a", "c"]
    _, third = save(ks, {"a": 1, "b": [1, 2], "c": "x"}, "del", saver=saver)  # back again: a new row
    assert var_rows(ks, "del", "version = ?", (third.version,)) == [(third.version, "b", None)]
    assert ks.diff("del", second.version, third.version)["added"] == ["b"]


class FullManifests:
    """What the store held with one full manifest per version: the reference the ranges must match."""

    def __init__(self, keep):
        self.keep, self.versions, self.selected, self.next = keep, {}, None, 1

    def commit(self, entries):
        version, self.next = self.next, self.next + 1
        self.versions[version] = sorted((replace(e, parts=list(e.parts) if e.parts is not None else None)
                                         for e in entries), key=lambda e: e.name)
        newest = sorted(self.versions, reverse=True)
        if len(newest) >= self.keep:
            for v in [v for v in newest if v < newest[self.keep - 1] and v != self.selected]:
                del self.versions[v]
        return version

    def clear(self):
        self.versions, self.selected, self.next = {}, None, 1

    def diff(self, a, b):
        old, new = {e.name: e for e in self.versions[a]}, {e.name: e for e in self.versions[b]}
        return {"from": a, "to": b, "added": sorted(set(new) - set(old)), "deleted": sorted(set(old) - set(new)),
                "modified": sorted(n for n in set(old) & set(new) if (old[n].content_hash, old[n].format,
                                   old[n].alias_of) != (new[n].content_hash, new[n].format, new[n].alias_of))}


def check_same_as_full_manifests(ks, notebook, model):
    assert [v["version"] for v in ks.versions(notebook)] == sorted(model.versions, reverse=True)
    for v, entries in model.versions.items():
        got = ks.manifest(notebook, v)
        assert got.entries == entries, v
        assert [x["name"] for x in ks.variables(notebook, v)["variables"]] == [e.name for e in entries]
    for a in model.versions:
        for b in model.versions:
            assert ks.diff(notebook, a, b) == model.diff(a, b)
    if model.versions:
        latest = model.versions[max(model.versions)]
        assert ks.summary(notebook)["variable_names"] == [e.name for e in latest]
    # Retention kept exactly what the kept versions need: every row lies over a kept version,
    # at most one row per name is open, no frame column outlives its row...
    assert ks.db.rows(
        "SELECT count(*) FROM kernel_variables v WHERE NOT EXISTS (SELECT 1 FROM kernel_versions k "
        "WHERE k.notebook = v.notebook AND k.version >= v.version AND (v.until IS NULL OR k.version < v.until))"
    ) == [(0,)]
    assert ks.db.rows("SELECT count(*) FROM (SELECT 1 FROM kernel_variables WHERE until IS NULL "
                      "GROUP BY notebook, name HAVING count(*) > 1) AS open_twice") == [(0,)]
    assert ks.db.rows("SELECT count(*) FROM kernel_frame_columns c WHERE NOT EXISTS (SELECT 1 FROM "
                      "kernel_variables v WHERE v.notebook = c.notebook AND v.version = c.version "
                      "AND v.name = c.name)") == [(0,)]
    # ... so garbage collection keeps the blobs of the kept versions, and only those.
    needed = {b for entries in model.versions.values() for e in entries for b in [e.blob, *(e.parts or [])] if b}
    assert ks.db.referenced_blobs() == needed


def _random_entry(rng, name, serial, put):
    """An entry of a random kind; ``put`` stores a blob (by its text) and returns its name."""
    kind = rng.choice(["json", "blob", "frame"])
    if kind == "json":
        return Entry(name, "int", "json", 2, f"h{serial}", None, str(serial))
    if kind == "blob":  # blobs shared between variables and versions now and then
        return Entry(name, "bytes", "pickle", 100 + serial, f"h{serial}", put(f"blob{serial % 40}"))
    parts = [put(f"col{serial}-{i}") for i in range(rng.randint(1, 4))]
    return Entry(name, "pandas.DataFrame", FRAME, 1000, f"h{serial}", put(f"schema{serial}"), None, None, parts)


def _with_aliases(primaries: dict, aliases: dict) -> list:
    """The entries of a version: each primary, and each alias as a copy of its primary."""
    return [*primaries.values(), *(replace(primaries[of], name=n, alias_of=of) for n, of in aliases.items())]


@pytest.mark.parametrize("seed", range(4))
def test_every_kept_version_is_what_full_manifests_held(isolated_home, seed):
    """Adds, changes, deletes, aliases, frames, retention, selected versions, clears, and a second
    store (another process) committing in between: every kept version's manifest and diff are
    those of one full manifest per version, and no row is kept or lost that should not be."""
    rng = random.Random(seed)
    keep = rng.choice([1, 2, 3, 5])
    stores = [KernelStateStore(isolated_home, settings=Settings(keep_versions=keep)) for _ in range(2)]
    model = FullManifests(keep)
    primaries: dict[str, Entry] = {}
    aliases: dict[str, str] = {}  # alias -> primary
    serial = 0

    def put(text):
        return stores[0].blobs.put(text.encode())

    try:
        for step in range(150):
            serial += 1
            op = rng.choices(["add", "change", "column", "type", "delete", "alias", "same", "select", "take",
                              "clear"], [5, 5, 2, 1, 3, 2, 1, 1, 1, 0.2])[0]
            names = sorted(primaries)
            if op == "add" or not names:
                name = f"v{rng.randrange(30)}"
                aliases.pop(name, None)
                if name in primaries:
                    continue
                primaries[name] = _random_entry(rng, name, serial, put)
            elif op == "change":
                name = rng.choice(names)
                primaries[name] = _random_entry(rng, name, serial, put)
            elif op == "column":
                frames_ = [n for n in names if primaries[n].format == FRAME]
                if not frames_:
                    continue
                e = primaries[rng.choice(frames_)]
                parts = list(e.parts)
                parts[rng.randrange(len(parts))] = put(f"col{serial}-x")
                primaries[e.name] = replace(e, content_hash=f"h{serial}", parts=parts)
            elif op == "type":
                name = rng.choice(names)
                primaries[name] = replace(primaries[name], type=f"t{serial}")
            elif op == "delete":
                name = rng.choice(names + sorted(aliases))
                if name in aliases:
                    del aliases[name]
                else:
                    old = primaries.pop(name)
                    held = sorted(n for n, of in aliases.items() if of == name)
                    if held:  # the first alias becomes the primary, as Saver groups them
                        primaries[held[0]] = replace(old, name=held[0])
                        del aliases[held[0]]
                        for n in held[1:]:
                            aliases[n] = held[0]
            elif op == "alias":
                name, of = f"a{rng.randrange(10)}", rng.choice(names)
                if name in primaries:
                    continue
                aliases[name] = of
            elif op == "select" and model.versions:
                version = rng.choice([None, *model.versions])
                rng.choice(stores).select_restore("nb", version)
                model.selected = version
                continue
            elif op == "take":
                assert rng.choice(stores).take_restore_selection("nb") == model.selected
                model.selected = None
                continue
            elif op == "clear":
                rng.choice(stores).clear("nb")
                model.clear()
                continue
            entries = _with_aliases(primaries, aliases)
            rng.shuffle(entries)
            store = stores[0] if rng.random() < 0.8 else stores[1]
            skipped = [{"name": "gen", "reason": "cannot pickle"}] if rng.random() < 0.2 else []
            made = store.commit_version("nb", "nb", entries, skipped)
            assert made.version == model.commit(entries)
            assert ks_skipped(store, made.version) == skipped
            check_same_as_full_manifests(stores[step % 2], "nb", model)
    finally:
        for s in stores:
            s.close()


def ks_skipped(ks, version):
    return ks.manifest("nb", version).skipped


def test_another_store_clearing_and_saving_again_is_seen(isolated_home):
    """A notebook cleared and saved again elsewhere, up to the same version number, is not taken
    for the one this store committed last."""
    one, two = KernelStateStore(isolated_home), KernelStateStore(isolated_home)
    try:
        a = Entry("a", "int", "json", 1, "h1", None, "1")
        b = Entry("b", "int", "json", 1, "h2", None, "2")
        one.commit_version("nb", "nb", [a], [])
        one.commit_version("nb", "nb", [a, b], [])
        two.clear("nb")
        two.commit_version("nb", "nb", [b], [])
        two.commit_version("nb", "nb", [replace(b, value="3", content_hash="h3")], [])
        made = one.commit_version("nb", "nb", [a, b], [])
        assert made.version == 3
        assert one.manifest("nb", 3).entries == [a, b]
        assert two.manifest("nb", 2).by_name()["b"].value == "3"
    finally:
        one.close()
        two.close()


def test_retention_keeps_a_selected_version_whole(isolated_home):
    ks = KernelStateStore(isolated_home, settings=Settings(keep_versions=2))
    try:
        saver = Saver(ks, "sel", "sel")
        base = {"arr": np.arange(50_000.0), "frame": pd.DataFrame({"x": np.arange(2000)}), "n": 0, "gone": "soon"}
        saver.save(dict(base))
        saver.save({**base, "n": 1})
        chosen = ks.latest_version("sel")
        kept = ks.manifest("sel", chosen)
        ks.select_restore("sel", chosen)
        ns = {"n": 2, "frame": base["frame"], "arr": base["arr"]}
        for i in range(2, 8):  # every variable changes or goes, some again and again
            ns = {**ns, "n": i, "arr": np.arange(50_000.0) * i}
            if i == 4:
                ns["frame"] = pd.DataFrame({"x": np.arange(2000), "y": np.ones(2000)})
            saver.save(ns)
        assert [v["version"] for v in ks.versions("sel")] == [8, 7, chosen]
        assert ks.manifest("sel", chosen).entries == kept.entries
        target = {}
        assert not restore(ks, "sel", target, chosen).failed
        assert target["n"] == 1 and target["gone"] == "soon" and (target["arr"] == base["arr"]).all()
        pd.testing.assert_frame_equal(target["frame"], base["frame"])
        old_arr = kept.by_name()["arr"].blob
        assert old_arr in ks.db.referenced_blobs()
        ks.engine.collect_garbage(grace_seconds=0)
        assert ks.blobs.exists(old_arr)
        # Once the selection is used, the next save lets the version go, and its rows and blobs with it.
        assert ks.take_restore_selection("sel") == chosen
        saver.save({**ns, "n": 100})
        assert [v["version"] for v in ks.versions("sel")] == [9, 8]
        assert var_rows(ks, "sel", "version <= ?", (chosen,)) == []
        ks.engine.collect_garbage(grace_seconds=0)
        assert not ks.blobs.exists(old_arr)
    finally:
        ks.close()


OLD_SCHEMA = """
CREATE TABLE kernel_notebooks (id TEXT PRIMARY KEY, name TEXT NOT NULL, created TEXT NOT NULL,
    updated TEXT NOT NULL, next_version INTEGER NOT NULL DEFAULT 1, restore_version INTEGER);
CREATE TABLE kernel_versions (notebook TEXT NOT NULL, version INTEGER NOT NULL, saved_at TEXT NOT NULL,
    variable_count INTEGER NOT NULL, size_bytes INTEGER NOT NULL, checksum TEXT NOT NULL,
    skipped TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (notebook, version));
CREATE TABLE kernel_variables (notebook TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,
    type TEXT NOT NULL, format TEXT NOT NULL, size INTEGER NOT NULL, content_hash TEXT NOT NULL, blob TEXT,
    value, alias_of TEXT, PRIMARY KEY (notebook, version, name));
CREATE TABLE kernel_frame_columns (notebook TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,
    position INTEGER NOT NULL, blob TEXT NOT NULL, PRIMARY KEY (notebook, version, name, position));
CREATE INDEX kernel_variables_by_blob ON kernel_variables(blob) WHERE blob IS NOT NULL;
"""


def old_commit(conn, notebook, version, entries, skipped=()):
    """What the store wrote before ranges: the whole manifest, every version (its SQL)."""
    from pipulate.kernel_state.store import manifest_checksum

    conn.execute("INSERT INTO kernel_notebooks (id, name, created, updated) VALUES (?, ?, 't', 't') "
                 "ON CONFLICT (id) DO UPDATE SET updated = excluded.updated", (notebook, notebook))
    conn.execute("UPDATE kernel_notebooks SET next_version = ? WHERE id = ?", (version + 1, notebook))
    conn.execute("INSERT INTO kernel_versions (notebook, version, saved_at, variable_count, size_bytes, checksum, "
                 "skipped) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (notebook, version, f"2024-01-0{version % 9 + 1}", len(entries),
                  sum(e.size for e in entries if e.alias_of is None), manifest_checksum(entries),
                  json.dumps(list(skipped))))
    conn.executemany("INSERT INTO kernel_variables (notebook, version, name, type, format, size, content_hash, "
                     "blob, value, alias_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(notebook, version, e.name, e.type, e.format, e.size, e.content_hash, e.blob, e.value,
                       e.alias_of) for e in entries])
    conn.executemany("INSERT INTO kernel_frame_columns (notebook, version, name, position, blob) "
                     "VALUES (?, ?, ?, ?, ?)",
                     [(notebook, version, e.name, i, b) for e in entries if e.parts is not None and e.alias_of is None
                      for i, b in enumerate(e.parts)])


def old_retention(conn, notebook, version):
    """What the store did before ranges to drop a version."""
    for table in ("kernel_variables", "kernel_frame_columns", "kernel_versions"):
        conn.execute(f"DELETE FROM {table} WHERE notebook = ? AND version = ?", (notebook, version))


@pytest.mark.backends("embedded", reason="upgrades an old SQLite file")
def test_an_old_database_of_full_manifests_is_upgraded_once_and_keeps_saving(tmp_path, isolated_home):
    """A database written before ranges (one row per variable per version) is upgraded when a store
    opens it: every version reads as before, blobs stay referenced, and saving goes on incrementally."""
    # The versions, saved (blobs and all) by a store, then written into an old-layout database.
    scratch, home = tmp_path / "scratch", isolated_home
    src = KernelStateStore(scratch, settings=Settings(keep_versions=100))
    saver = Saver(src, "old", "old")
    frame = pd.DataFrame({"x": np.arange(100_000), "y": np.linspace(0, 1, 100_000)})  # stored by columns
    namespaces = [
        {"arr": np.arange(40_000), "frame": frame, "n": 1, "word": "a"},
        {"arr": np.arange(40_000), "frame": frame, "n": 2, "word": "a", "same": None},
        {"arr": np.arange(40_000) * 2, "frame": frame, "n": 2, "word": "b"},
        {"arr": np.arange(40_000) * 2, "frame": frame.assign(z=1), "n": 2},
        {"arr": np.arange(40_000) * 2, "frame": frame.assign(z=1), "n": 3, "word": "a"},
        {"arr": np.arange(40_000) * 3, "frame": frame.assign(z=1), "n": 3, "word": "a"},
    ]
    namespaces[1]["same"] = namespaces[1]["arr"]  # an alias
    for ns in namespaces:
        assert saver.save(ns).created
    versions = {v: src.manifest("old", v) for v in range(1, 7)}
    src.close()
    shutil.copytree(scratch / "blobs", home / "blobs")
    with contextlib.closing(sqlite3.connect(home / "pipulate.db")) as conn, conn:
        conn.executescript(OLD_SCHEMA)
        for v, m in versions.items():
            old_commit(conn, "old", v, m.entries, [{"name": "gen", "reason": "cannot pickle"}] if v == 3 else [])
        old_commit(conn, "other", 1, [Entry("k", "int", "json", 1, "hk", None, "7")])
        # retention under the old code, with version 2 selected for the next restore: a gap
        for v in (1, 3):
            old_retention(conn, "old", v)
        conn.execute("UPDATE kernel_notebooks SET restore_version = 2 WHERE id = 'old'")
        # an orphan row, of a version no longer kept
        conn.execute("INSERT INTO kernel_variables (notebook, version, name, type, format, size, content_hash, "
                     "blob, value) VALUES ('old', 1, 'lost', 'int', 'json', 1, 'h', 'orphan-blob', NULL)")
        before = conn.execute("SELECT count(*) FROM kernel_variables").fetchone()[0]
    kept = [2, 4, 5, 6]

    # Two stores open it at once: one upgrades, the other waits and finds it done.
    opened, errors = [], []

    def open_store():
        try:
            s = KernelStateStore(home, settings=Settings(keep_versions=3))
            s.versions("old")
            opened.append(s)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(opened) == 2
    ks, other = opened
    try:
        assert [v["version"] for v in ks.versions("old")] == sorted(kept, reverse=True)
        for v in kept:
            got = ks.manifest("old", v)
            assert got.entries == versions[v].entries, v
            assert got.skipped == versions[v].skipped
        assert ks.manifest("other").entries == [Entry("k", "int", "json", 1, "hk", None, "7")]
        assert ks.diff("old", 2, 6) == {"from": 2, "to": 6, "added": [], "deleted": ["same"],
                                        "modified": ["arr", "frame", "n"]}
        rows = ks.db.rows("SELECT count(*) FROM kernel_variables")[0][0]
        assert rows < before - 1  # equal consecutive rows became one, the orphan went
        assert var_rows(ks, "old", "name = 'frame'") == [(2, "frame", 4), (4, "frame", None)]
        assert var_rows(ks, "old", "name = 'arr'") == [(2, "arr", 4), (4, "arr", 6), (6, "arr", None)]
        assert var_rows(ks, "old", "name = 'word'") == [(2, "word", 4), (5, "word", None)]
        assert "orphan-blob" not in ks.db.referenced_blobs()
        needed = {b for v in kept for e in versions[v].entries for b in [e.blob, *(e.parts or [])] if b}
        assert needed <= ks.db.referenced_blobs()
        ks.engine.collect_garbage(grace_seconds=0)
        target = {}
        assert not restore(ks, "old", target, 2).failed and target["same"] is target["arr"]
        pd.testing.assert_frame_equal(target["frame"], frame)

        # Opening it again changes nothing.
        again = KernelStateStore(home)
        assert again.db.rows("SELECT count(*) FROM kernel_variables")[0][0] == rows
        again.close()

        # Saving goes on: only what changed gets a row, and retention works across upgraded rows.
        saver = Saver(ks, "old", "old")
        ns = {**namespaces[5], "n": 4}
        made = saver.save(ns)
        assert made.created and made.version == 7
        assert var_rows(ks, "old", "version = 7") == [(7, "n", None)]  # arr and frame: same blobs as version 6
        assert [v["version"] for v in ks.versions("old")] == [7, 6, 5, 2]  # 2 is still selected
        assert ks.take_restore_selection("old") == 2
        saver.save({**ns, "n": 5})
        assert [v["version"] for v in ks.versions("old")] == [8, 7, 6]
        target = {}
        assert not restore(ks, "old", target, 6).failed and target["n"] == 3 and target["word"] == "a"
        assert (target["arr"] == namespaces[5]["arr"]).all()
        pd.testing.assert_frame_equal(target["frame"], frame.assign(z=1))
        assert restore(ks, "old", {}).manifest.by_name()["n"].value == "5"

        # A process still running the old code cannot mix its full manifests in, nor drop rows
        # later versions share: its save fails instead.
        with pytest.raises(apsw.ConstraintError, match="older pipulate"):
            with ks.db.write() as conn:
                old_commit(conn, "old", 9, ks.manifest("old").entries)
        with pytest.raises(apsw.ConstraintError, match="older pipulate"):
            with ks.db.write() as conn:
                old_retention(conn, "old", 6)
        assert [v["version"] for v in ks.versions("old")] == [8, 7, 6]
    finally:
        ks.close()
        other.close()
