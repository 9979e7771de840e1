"""Frames restored mapped, and memory, in real kernels from the workstation's kernel spec
(``pipulate.kernel_state.lazy``): big numeric columns come back as writable numpy columns
over their mapped blob files in ordinary DataFrames, aliasing kept; a write reaches no blob
file and the save after it reads only the column written; a damaged column blob is refused
by name; and a namespace far bigger than the kernel's peak resident memory is restored and
its small variables used.
"""
from __future__ import annotations


import pytest

from .blob_helpers import damage_blob
from .kernel_helpers import json_probe
from .test_kernel_state_lazy import SETTLE_CHECKS, blob_files, restarted, silently

pytestmark = pytest.mark.timeout(300)

MIB = 1 << 20
ROWS = 1_500_000
BUILD = f"""
import numpy as np, pandas as pd
rng = np.random.default_rng(11)
df = pd.DataFrame({{"x": rng.random({ROWS}),                    # 12 MB each: stored raw, mapped
                   "k": rng.integers(0, 2**40, {ROWS}),
                   "z": np.zeros({ROWS})}})                     # compressed on disk: read
same = df
box = {{"frame": df, "n": 3}}
label = "small"
"""
EQUAL = f"""
rng = np.random.default_rng(11)
assert np.array_equal(df["x"].to_numpy()[1:], rng.random({ROWS})[1:])  # row 0: written by a test
assert np.array_equal(df["k"].to_numpy(), rng.integers(0, 2**40, {ROWS}))
assert not df["z"].any() and list(df.columns)[:3] == ["x", "k", "z"] and df.index.equals(pd.RangeIndex({ROWS}))
print("equal")
"""

# What the kernel holds, as one JSON line; looked at silently (no save). ``files``: the
# resident bytes of each blob file mapped into the kernel, by blob name.
PROBE = r"""print((lambda ns, json, re: json.dumps({
    "names": sorted(n for n in ("df", "same", "box", "label") if n in ns),
    "plain": type(ns.get("df")).__name__ == "DataFrame" and type(ns["df"]).__module__.startswith("pandas"),
    "aliased": "df" in ns and ns.get("same") is ns["df"] and ns.get("box", {}).get("frame") is ns["df"],
    "rchar": int(open("/proc/self/io").read().split("rchar: ")[1].split()[0]),
    "hwm": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024,
    "files": (lambda blocks: {
        "".join(block.split("\n")[0].split("/blobs/")[1].split()[0].split("/")):
            sum(int(line.split()[1]) * 1024 for line in block.split("\n") if line.startswith("Rss:"))
        for block in blocks if "/blobs/" in block.split("\n")[0]})(
        re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", open("/proc/self/smaps").read())),
}))(get_ipython().user_ns, __import__("json"), __import__("re")))"""


def probe(k) -> dict:
    return json_probe(k, PROBE)


def column_blobs(ks, name: str = "df") -> dict[str, str]:
    """{column: blob} of the latest saved version of ``name``."""
    import pyarrow as pa

    [notebook] = ks.notebooks()
    entry = {e.name: e for e in ks.manifest(notebook["id"]).entries}[name]
    schema = pa.ipc.read_schema(pa.py_buffer(ks.blobs.get(entry.blob)))
    return dict(zip(schema.names, entry.parts))


def test_frames_come_back_mapped_writable_and_shared(kernels, ks, isolated_home):
    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    blobs = column_blobs(ks)
    k, out = restarted(kernels, k)
    assert "restored" in out, out
    seen = probe(k)
    assert seen["names"] == ["box", "df", "label", "same"], seen
    assert seen["plain"] and seen["aliased"], seen
    # The big random columns are mapped (the zeros compress: read), and nothing of them is read yet.
    assert set(seen["files"]) == {blobs["x"], blobs["k"]}, (seen["files"], blobs)
    assert sum(seen["files"].values()) < MIB, seen

    # Writes stay in the kernel: no blob file changes. The save after them encodes only the
    # column written: the other mapped column is not read to find out it did not change.
    silently(k, SETTLE_CHECKS)
    before_files = blob_files(isolated_home)
    k.ok("same.loc[0, 'x'] = -1.0")
    assert k.ok("df['w'] = df['x'] * 2\nprint(df.loc[0, 'w'], box['frame'] is df)").split() == ["-2.0", "True"]
    after_files = blob_files(isolated_home)
    assert {p: after_files.get(p) for p in before_files} == before_files
    seen = probe(k)
    assert seen["files"].get(blobs["k"], 0) < MIB, seen
    assert column_blobs(ks)["k"] == blobs["k"] and column_blobs(ks)["x"] != blobs["x"]

    k, _ = restarted(kernels, k)
    out = k.ok("print(df.loc[0, 'x'], df.loc[0, 'w'], same is df, box['frame'] is df, list(df.columns))")
    assert out.strip().split(maxsplit=4) == ["-1.0", "-2.0", "True", "True", "['x', 'k', 'z', 'w']"], out
    assert k.ok(EQUAL).strip().endswith("equal")
    assert k.ok("df.loc[1, 'k'] = 7\nprint(df.loc[1, 'k'], same.loc[1, 'k'])").split() == ["7", "7"]


def test_the_first_save_after_a_lazy_restore_reads_no_mapped_column(kernels, ks):
    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    k, _ = restarted(kernels, k)
    silently(k, SETTLE_CHECKS)  # the background checks read the blobs: let them finish first
    before = probe(k)
    assert len(before["files"]) == 2, before
    k.ok("label = 'changed'")  # saved, in the background, then waited for
    after = probe(k)
    assert sum(after["files"].values()) - sum(before["files"].values()) < MIB, (before, after)
    assert after["rchar"] - before["rchar"] < 4 * MIB, (before, after)  # the database, no more
    k, _ = restarted(kernels, k)
    assert k.ok(EQUAL).strip().endswith("equal")
    assert k.ok("print(label)").strip() == "changed"


def test_a_damaged_column_is_refused_by_name(kernels, ks):
    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    k.kill9()
    damage_blob(ks.blobs, column_blobs(ks)["k"], middle=True)  # inside the column's data, not its Arrow header

    k, first = kernels.start("lazy.ipynb")
    out, err = k.run("print(sorted({'df', 'same', 'box', 'label'} & set(dir())))")
    assert err is None, err
    assert "['label']" in out, out
    for name in ("df", "same", "box"):
        assert (first + out).count(f"variable {name!r} was not restored") == 1, first + out
    assert "damaged" in first + out


def test_a_namespace_far_bigger_than_the_kernels_memory_use_is_restored(kernels):
    """``ulimit -v`` cannot show this (a mapping takes address space as reading would): the
    kernel's peak resident memory (VmHWM) is the measure, against the same namespace read
    first (``PIPULATE_LAZY_RESTORE=0``)."""
    k, _ = kernels.start("lazy.ipynb")
    k.ok("import numpy as np, pandas as pd\nrng = np.random.default_rng(5)\n"
         "a1, a2, a3 = (rng.random(16 * 2**20) for _ in range(3))\n"  # 3 x 128 MiB
         "frame = pd.DataFrame({'v': rng.random(8 * 2**20), 'w': rng.random(8 * 2**20)})\n"  # 128 MiB
         "counter = 41")
    namespace = 512 * MIB
    k, _ = restarted(kernels, k)
    assert k.ok("counter += 1\nprint(counter)").strip() == "42"
    lazy = probe(k)
    assert lazy["hwm"] < namespace // 2, lazy
    assert sum(lazy["files"].values()) < MIB and len(lazy["files"]) == 5, lazy
    # Read first, the same kernel holds all of it.
    k, _ = restarted(kernels, k, extra_env={"PIPULATE_LAZY_RESTORE": "0"})
    assert k.ok("print(counter)").strip() == "42"
    eager = probe(k)
    assert eager["hwm"] > namespace and eager["files"] == {}, eager


MIXED = """
import numpy as np, pandas as pd
rng = np.random.default_rng(4)
n = 1_000_000
{name} = pd.DataFrame({{"x": rng.random(n), "s": [f"name {{i}}" for i in rng.integers(0, 10**6, n)],
                      "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**8, n), unit="s"),
                      "c": pd.Categorical(rng.choice(["a", "b", "c"], n))}}, index=pd.Index(rng.permutation(n)))
"""


def test_mixed_frames_map_the_columns_pandas_uses_in_place(kernels, ks):
    """Strings (pandas' Arrow-backed ``str``), naive datetimes and a non-range index are
    mapped too; a categorical, which pandas converts, is read."""
    k, _ = kernels.start("lazy.ipynb")
    k.ok(MIXED.format(name="mixed"))
    blobs = column_blobs(ks, "mixed")
    k, _ = restarted(kernels, k)
    seen = probe(k)
    assert set(seen["files"]) == {blobs[c] for c in ("x", "s", "ts", "__index_level_0__")}, (seen, blobs)
    assert sum(seen["files"].values()) < MIB, seen
    out = k.ok(MIXED.format(name="expected") + "print(mixed.equals(expected), mixed.dtypes.equals(expected.dtypes),"
               " type(mixed).__name__, str(mixed['s'].dtype))\ndel expected")
    assert out.split() == ["True", "True", "DataFrame", "str"], out
    out = k.ok("first = mixed.index[0]\nmixed.loc[first, 'x'] = -1.0\n"
               "mixed.loc[first, 'ts'] = pd.Timestamp('2020-01-01')\nmixed.iloc[1, 1] = 'zz'\n"
               "print(mixed.loc[first, 'x'], mixed.loc[first, 'ts'].year, mixed.iloc[1, 1])")
    assert out.split() == ["-1.0", "2020", "zz"], out
    k, _ = restarted(kernels, k)
    assert k.ok("print(mixed.loc[first, 'x'], mixed.iloc[1, 1], len(mixed))").split() == ["-1.0", "zz", "1000000"]
