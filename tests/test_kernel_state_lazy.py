"""Big arrays restored mapped (``pipulate.kernel_state.lazy``), in real kernels from the
workstation's kernel spec: ordinary writable arrays, aliasing and sharing kept, writes that
never reach a blob file, a damaged blob refused by name, and a first save that reads none
of the mapped data.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from .blob_helpers import damage_blob
from .kernel_helpers import json_probe

pytestmark = pytest.mark.timeout(300)

MIB = 1 << 20
BUILD = """
import numpy as np
rng = np.random.default_rng(7)
a = rng.random(2 * 2**20)                          # 16 MiB of random floats: stored raw, mapped
b = a                                              # the same object
f = np.asfortranarray(rng.random((1100, 1000)))    # Fortran order, 8.8 MB
zeros = np.zeros(2 * 2**20)                        # compressed on disk: read, not mapped
small = np.arange(10)
holder = {"arr": a, "n": 1}                        # a pickle that shares ``a``
"""

# What the kernel holds, as one JSON line; an expression, looked at silently (no save).
PROBE = r"""print((lambda np, ns, json: json.dumps({
    "names": sorted(n for n in ("a", "b", "f", "zeros", "small", "holder") if n in ns),
    "mapped": sorted(n for n in ("a", "f", "zeros", "small") if n in ns and "mmap" in repr([
        type(getattr(base, "obj", None)) for base in (ns[n].base, getattr(ns[n].base, "base", None))])),
    "plain": all(type(ns[n]) is np.ndarray for n in ("a", "f", "zeros", "small") if n in ns),
    "writable": {n: ns[n].flags.writeable and ns[n].flags.aligned for n in ("a", "f", "zeros") if n in ns},
    "aliased": "a" in ns and ns.get("b") is ns["a"] and ns.get("holder", {}).get("arr") is ns["a"],
    "rchar": int(open("/proc/self/io").read().split("rchar: ")[1].split()[0]),
    "mapped_rss": sum(int(line.split()[1]) * 1024
                      for block in __import__("re").split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", open("/proc/self/smaps").read())
                      if "/blobs/" in block.split("\n")[0]
                      for line in block.split("\n") if line.startswith("Rss:")),
}))(__import__("numpy"), get_ipython().user_ns, __import__("json")))"""

# The checks of the mapped blobs, waited for silently (what a cell that names them does).
SETTLE_CHECKS = "get_ipython()._pipulate_kernel_state.checks.before_save(get_ipython().user_ns)"

EQUAL = """
rng = np.random.default_rng(7)
assert np.array_equal(a, rng.random(2 * 2**20))
assert np.array_equal(f, rng.random((1100, 1000))) and f.flags.f_contiguous
assert not zeros.any() and small.tolist() == list(range(10)) and holder["n"] == 1
print("equal")
"""


def probe(k) -> dict:
    return json_probe(k, PROBE)


def silently(k, code: str) -> None:
    reply = k.kc.execute_interactive(code, silent=True, store_history=False, timeout=120, allow_stdin=False,
                                     output_hook=lambda m: None)
    assert reply["content"]["status"] == "ok", reply["content"]


def blob_files(home: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (home / "blobs").rglob("*") if p.is_file()}


def restarted(kernels, k, extra_env=None):
    k.kill9()
    return kernels.start("lazy.ipynb", extra_env=extra_env)


def test_big_arrays_come_back_mapped_writable_and_shared(kernels, isolated_home):
    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    k, out = restarted(kernels, k)
    assert "restored" in out, out
    seen = probe(k)
    assert seen["names"] == ["a", "b", "f", "holder", "small", "zeros"], seen
    assert seen["mapped"] == ["a", "f"], seen  # the compressed and the small ones are read
    assert seen["plain"] and all(seen["writable"].values()) and seen["aliased"], seen
    # Nothing of the mapped data is read by the restore (a page of header each at most).
    assert seen["mapped_rss"] < MIB, seen
    assert k.ok(EQUAL).strip().endswith("equal")

    # A write stays in the kernel: no blob file changes, whatever version holds it.
    before = blob_files(isolated_home)
    assert before
    k.ok("a[:1000] = -1.0\nf[0, 0] = 5.0\nassert b[0] == -1.0 and holder['arr'][999] == -1.0")
    after = blob_files(isolated_home)
    assert {p: after.get(p) for p in before} == before
    # The write is saved as a new version; the restore brings it back, still shared.
    k, _ = restarted(kernels, k)
    assert k.ok("print(a[0], a[1000] != -1.0, f[0, 0], b is a, holder['arr'] is a)").split() == \
        ["-1.0", "True", "5.0", "True", "True"]


def test_a_damaged_blob_is_refused_by_name(kernels, ks, isolated_home):
    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    k.kill9()
    [notebook] = ks.notebooks()
    manifest = ks.manifest(notebook["id"])
    blob = {e.name: e for e in manifest.entries}["a"].blob
    damage_blob(ks.blobs, blob, middle=True)  # inside the array's data, not its header

    k, first = kernels.start("lazy.ipynb")
    # This cell names ``a``: it waits for that check. The message may come with the first
    # cell already, if the check was done by then.
    out, err = k.run("print(sorted({'a', 'b', 'f', 'holder', 'small', 'zeros'} & set(dir())))")
    assert err is None, err
    assert "['f', 'small', 'zeros']" in out, out
    for name in ("a", "b", "holder"):
        assert (first + out).count(f"variable {name!r} was not restored") == 1, first + out
    assert "damaged" in first + out
    out, err = k.run("a.sum()")
    assert err is not None and "NameError" in err


def test_first_save_after_a_lazy_restore_reads_no_mapped_blob(kernels):
    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    k, _ = restarted(kernels, k)
    silently(k, SETTLE_CHECKS)  # the background checks read the blobs: let them finish first
    before = probe(k)
    assert before["mapped"] == ["a", "f"], before
    k.ok("n_items = 2")  # saved, in the background, then waited for
    after = probe(k)
    assert after["mapped_rss"] - before["mapped_rss"] < MIB, (before, after)
    assert after["rchar"] - before["rchar"] < 4 * MIB, (before, after)  # the zeros and the database, no more
    # The save kept the arrays: the next restore has them all.
    k, _ = restarted(kernels, k)
    assert k.ok(EQUAL).strip().endswith("equal")
    assert probe(k)["aliased"]


def test_lazy_restore_off_reads_everything(kernels):
    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    k, _ = restarted(kernels, k, extra_env={"PIPULATE_LAZY_RESTORE": "0"})
    seen = probe(k)
    assert seen["mapped"] == [] and seen["mapped_rss"] == 0, seen
    assert seen["plain"] and all(seen["writable"].values()) and seen["aliased"], seen
    assert k.ok(EQUAL).strip().endswith("equal")


def test_a_blob_truncated_under_its_mapping_ends_the_kernel_and_is_refused_next(kernels, ks):
    """What the docs promise: a mapped blob file cut short after its check passed (something
    outside pipulate did it) ends the kernel when code touches the missing pages (SIGBUS);
    the next start refuses that variable by name and restores the others."""
    import os
    import time

    k, _ = kernels.start("lazy.ipynb")
    k.ok(BUILD)
    k, _ = restarted(kernels, k)
    silently(k, SETTLE_CHECKS)
    [notebook] = ks.notebooks()
    path = ks.blobs.path({e.name: e for e in ks.manifest(notebook["id"]).entries}["a"].blob)
    os.truncate(path, path.stat().st_size // 2)
    k.send("float(a.sum())")
    deadline = time.monotonic() + 120
    while k.km.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not k.km.is_alive()
    k.close()

    k, first = kernels.start("lazy.ipynb")
    assert "Skipped: a (blob" in first and "is damaged (truncated)" in first, first
    assert k.ok("print(sorted({'a', 'b', 'f', 'small'} & set(dir())))").strip() == "['f', 'small']"
