"""Arrays and frames inside containers restored mapped (``pipulate.kernel_state.buffers``), in
real kernels from the workstation's kernel spec: a list, dict, tuple and object attribute
holding big arrays and a numeric frame come back equal, ordinary, writable and aliased over
mapped buffer blobs that a write never reaches; the restore reads none of them; a damaged
buffer blob is refused by name before a cell uses its variable; the memory stays well under
the data's size.
"""
from __future__ import annotations


import pytest

from .blob_helpers import damage_blob
from .kernel_helpers import json_probe
from .test_kernel_state_lazy import SETTLE_CHECKS, blob_files, restarted, silently

pytestmark = pytest.mark.timeout(300)

MIB = 1 << 20
BUILD = """
import numpy as np, pandas as pd
rng = np.random.default_rng(13)
class Box:
    pass
top = rng.random(2**20)                                        # 8 MiB, top-level
runs = [rng.random(2**20) for _ in range(2)]                   # 2 x 8 MiB in a list
inner = rng.random(2**20)
data = {"train": inner, "again": inner, "top": top,            # aliased inside; a top-level one
        "frame": pd.DataFrame({"x": rng.random(2**20), "k": rng.integers(0, 2**40, 2**20)}),
        "zeros": np.zeros(2**20)}                              # compressed on disk: read
pair = (rng.random(2**20), "label")
box = Box()
box.arr = rng.random(2**20)
del inner
"""
EQUAL = """
rng = np.random.default_rng(13)
assert np.array_equal(top, rng.random(2**20))
assert all(np.array_equal(r, rng.random(2**20)) for r in runs)
assert np.array_equal(data["train"][1:], rng.random(2**20)[1:])       # row 0: written by a test
assert np.array_equal(data["frame"]["x"].to_numpy(), rng.random(2**20))
assert np.array_equal(data["frame"]["k"].to_numpy(), rng.integers(0, 2**40, 2**20))
assert not data["zeros"].any()
assert np.array_equal(pair[0], rng.random(2**20)) and pair[1] == "label"
assert np.array_equal(box.arr, rng.random(2**20))
print("equal")
"""

# What the kernel holds, looked at silently (no save): which arrays lie in a mapped blob
# file, their types and flags, aliasing, and the kernel's reads and memory.
PROBE = r"""print((lambda ns, json, re: (lambda maps: json.dumps({
    "names": sorted(n for n in ("top", "runs", "data", "pair", "box") if n in ns),
    "arrays": {label: {"mapped": any(lo <= a.__array_interface__["data"][0] < hi for lo, hi in maps),
                       "plain": type(a).__name__ == "ndarray", "writable": bool(a.flags.writeable)}
               for label, a in ([("runs0", ns["runs"][0]), ("runs1", ns["runs"][1])] if "runs" in ns else [])
               + ([("train", ns["data"]["train"]), ("zeros", ns["data"]["zeros"]),
                   ("x", ns["data"]["frame"]["x"].to_numpy()), ("k", ns["data"]["frame"]["k"].to_numpy())]
                  if "data" in ns else [])
               + ([("pair", ns["pair"][0])] if "pair" in ns else [])
               + ([("box", ns["box"].arr)] if "box" in ns else [])},
    "aliased": "data" in ns and ns["data"]["train"] is ns["data"]["again"] and ns["data"]["top"] is ns["top"],
    "frame": type(ns["data"]["frame"]).__module__ + "." + type(ns["data"]["frame"]).__name__ if "data" in ns else None,
    "rchar": int(open("/proc/self/io").read().split("rchar: ")[1].split()[0]),
    "hwm": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024,
    "mapped_rss": sum(int(line.split()[1]) * 1024
                      for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", open("/proc/self/smaps").read())
                      if "/blobs/" in block.split("\n")[0]
                      for line in block.split("\n") if line.startswith("Rss:")),
}))([tuple(int(x, 16) for x in line.split()[0].split("-"))
     for line in open("/proc/self/maps").read().splitlines() if "/blobs/" in line]))(
    get_ipython().user_ns, __import__("json"), __import__("re")))"""


def probe(k) -> dict:
    return json_probe(k, PROBE)


def test_containers_come_back_mapped_writable_and_aliased(kernels, ks, isolated_home):
    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    k, out = restarted(kernels, k)
    assert "restored" in out, out
    seen = probe(k)
    assert seen["names"] == ["box", "data", "pair", "runs", "top"], seen
    arrays = seen["arrays"]
    assert all(a["plain"] for a in arrays.values()), arrays
    assert all(a["writable"] for name, a in arrays.items() if name not in ("x", "k")), arrays  # pandas: read-only views
    assert {name for name, a in arrays.items() if a["mapped"]} == {"runs0", "runs1", "train", "x", "k", "pair", "box"}
    assert seen["aliased"] and seen["frame"].startswith("pandas") and seen["frame"].endswith("DataFrame"), seen
    # The restore read none of the mapped data (a page of header each at most).
    assert seen["mapped_rss"] < MIB, seen
    assert k.ok(EQUAL).strip().endswith("equal")

    # A write stays in the kernel: no blob file changes, whatever version holds it.
    silently(k, SETTLE_CHECKS)
    before = blob_files(isolated_home)
    k.ok("runs[1][:1000] = -1.0\ndata['train'][0] = -2.0\ndata['frame'].loc[0, 'x'] = -3.0\n"
         "box.arr[5] = 7.0\nassert data['again'][0] == -2.0")
    after = blob_files(isolated_home)
    assert {p: after.get(p) for p in before} == before
    # The write is saved as a new version; the restore brings it back, still aliased.
    k, _ = restarted(kernels, k)
    out = k.ok("print(runs[1][999], data['again'][0], data['frame'].loc[0, 'x'], box.arr[5], "
               "data['train'] is data['again'], data['top'] is top)")
    assert out.split() == ["-1.0", "-2.0", "-3.0", "7.0", "True", "True"], out
    versions = ks.versions(ks.notebooks()[0]["id"])
    assert len(versions) >= 2


def test_the_first_save_after_a_lazy_restore_reads_no_mapped_buffer(kernels):
    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    k, _ = restarted(kernels, k)
    silently(k, SETTLE_CHECKS)  # the background checks read the blobs: let them finish first
    before = probe(k)
    k.ok("label = 'changed'")  # saved, in the background, then waited for
    after = probe(k)
    assert after["mapped_rss"] - before["mapped_rss"] < MIB, (before, after)
    assert after["rchar"] - before["rchar"] < 4 * MIB, (before, after)  # the database, no more
    k, _ = restarted(kernels, k)
    assert k.ok(EQUAL).strip().endswith("equal")


def test_a_damaged_buffer_blob_is_refused_by_name(kernels, ks):
    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    k.kill9()
    [notebook] = ks.notebooks()
    entry = ks.manifest(notebook["id"]).by_name()["runs"]
    damage_blob(ks.blobs, entry.parts[1], middle=True)  # inside the second array's data

    k, first = kernels.start("lazy.ipynb")
    # This cell names ``runs``: it waits for that check.
    out, err = k.run("print(sorted({'top', 'runs', 'data', 'pair', 'box'} & set(dir())))")
    assert err is None, err
    assert "['box', 'data', 'pair', 'top']" in out, out
    assert (first + out).count("variable 'runs' was not restored") == 1, first + out
    assert "damaged" in first + out
    assert k.ok(EQUAL.replace("assert all(np.array_equal(r, rng.random(2**20)) for r in runs)",
                              "rng.random(2**20), rng.random(2**20)")).strip().endswith("equal")


def test_containers_far_bigger_than_the_kernels_memory_use_are_restored(kernels):
    """The kernel's peak resident memory (VmHWM) after a restore of 512 MiB held in a list and
    a dict, against the same namespace read first (``PIPULATE_LAZY_RESTORE=0``)."""
    k, _ = kernels.start("lazy.ipynb")
    k.ok("import numpy as np, pandas as pd\nrng = np.random.default_rng(5)\n"
         "runs = [rng.random(8 * 2**20) for _ in range(4)]\n"  # 4 x 64 MiB in a list
         "store = {'a': rng.random(16 * 2**20), "  # 128 MiB in a dict, with a 128 MiB frame
         "'frame': pd.DataFrame({'v': rng.random(8 * 2**20), 'w': rng.random(8 * 2**20)})}\n"
         "counter = 41")
    namespace = 512 * MIB
    k, _ = restarted(kernels, k)
    assert k.ok("counter += 1\nprint(counter)").strip() == "42"
    lazy = probe(k)
    assert lazy["hwm"] < namespace // 2 and lazy["mapped_rss"] < MIB, lazy
    assert k.ok("print(round(float(sum(r.sum() for r in runs) + store['a'].sum() + "
                "store['frame'].to_numpy().sum()) / 2**20))").strip() == "32"
    k, _ = restarted(kernels, k, extra_env={"PIPULATE_LAZY_RESTORE": "0"})
    assert k.ok("print(counter)").strip() == "42"
    eager = probe(k)
    assert eager["hwm"] > namespace and eager["mapped_rss"] == 0, eager
