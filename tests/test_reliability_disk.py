"""Disk full and a read-only data folder while a real kernel (jupyter_client + ipykernel) saves its state.

A save fails with one clear line on stderr, the cell's result is intact, the kernel keeps working
(and saving again once there is room), and the previous version stays intact and restorable.
Saves finish after the cell (background saves), so the line comes with the next cell.
"""
from __future__ import annotations

import re

import pytest


from .reliability_helpers import read_only, restore_whole

pytestmark = pytest.mark.timeout(300)


def warning_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("pipulate:")]


def failure_line(out: str, why: str, version: int, home) -> None:
    (line,) = warning_lines(out)
    pattern = (r"pipulate: kernel state after cell \[\d+\] not saved: "
               + re.escape(f"cannot write to {home} ({why}); version {version} stays the latest, "
                           "and the cell ran as usual"))
    assert re.fullmatch(pattern, line), line


def assert_previous_intact(ks, notebook, version, expected: dict):
    assert ks.latest_version(notebook) == version
    ns = restore_whole(ks, notebook, version)
    for name, value in expected.items():
        assert ns[name] == value, name
    return ns


def test_disk_full_during_a_kernel_save(kernels, ks, isolated_home):
    k, _ = kernels.start("full.ipynb")
    k.ok("import numpy as np\nkept = [1, 2, 3]\nnote = 'before'")
    before = ks.latest_version("full.ipynb")
    # Files of this kernel may not grow past 2 MB from now on (a full disk, as far as it can tell).
    k.ok("import resource as _res, signal as _sig\n_sig.signal(_sig.SIGXFSZ, _sig.SIG_IGN)\n"
         "_res.setrlimit(_res.RLIMIT_FSIZE, (2_000_000, _res.getrlimit(_res.RLIMIT_FSIZE)[1]))")
    before = ks.latest_version("full.ipynb")
    out, err = k.run("big = np.random.default_rng(0).random(1_000_000)  # 8 MB that does not compress\n"
                     "print('cell result', big.shape, round(float(big[:3].sum()), 6))")
    assert err is None, err
    assert "cell result (1000000,)" in out and not warning_lines(out), out
    # The kernel keeps working; the next cell says the save failed.
    out = k.ok("print('ok', len(kept), note)")
    assert "ok 3 before" in out
    failure_line(out, "File too large", before, isolated_home)
    assert_previous_intact(ks, "full.ipynb", before, {"kept": [1, 2, 3], "note": "before"})
    assert not list((isolated_home / "blobs").rglob("*.tmp")), "a half-written blob was left behind"
    # Once there is room again, the next save checks and saves everything.
    out = k.ok("_res.setrlimit(_res.RLIMIT_FSIZE, (_res.RLIM_INFINITY, _res.getrlimit(_res.RLIMIT_FSIZE)[1]))\n"
               "note = 'after'")
    failure_line(out, "File too large", before, isolated_home)  # the save of the cell before, still too big
    out = k.ok("done = True")
    assert not warning_lines(out), out
    latest = ks.latest_version("full.ipynb")
    assert latest > before
    ns = restore_whole(ks, "full.ipynb", latest)
    assert ns["note"] == "after" and ns["big"].shape == (1_000_000,)
    assert_previous_intact(ks, "full.ipynb", latest, {"kept": [1, 2, 3]})
    restore_whole(ks, "full.ipynb", before)  # the earlier version is still there too


def test_read_only_data_folder_during_kernel_saves(kernels, ks, isolated_home):
    k, _ = kernels.start("ro.ipynb")
    k.ok("import numpy as np\nkept = {'a': 1}\nnote = 'before'")
    before = ks.latest_version("ro.ipynb")
    with read_only(isolated_home):
        out, err = k.run("arr = np.ones(300_000)\nprint('cell result', arr.sum())")
        assert err is None, err
        assert "cell result 300000.0" in out and not warning_lines(out), out
        out = k.ok("print('ok', note)")  # the kernel keeps working; this cell reports the failed save
        assert "ok before" in out
        failure_line(out, "Read-only file system", before, isolated_home)
        # A kernel started now restores the previous version, and its own saves fail clearly.
        k2, announce = kernels.start("ro.ipynb")
        assert "restored" in announce and "Skipped" not in announce, announce
        out, err = k2.run("assert kept == {'a': 1} and note == 'before'\nmore = np.zeros(200_000)\nprint('k2 ok')")
        assert err is None and "k2 ok" in out, (err, out)
        out = k2.ok("print('k2 still ok')")
        assert "k2 still ok" in out
        (line,) = warning_lines(out)
        assert "kernel state after cell" in line and "not saved" in line and "read-only" in line.lower(), line
        k2.close()
    assert_previous_intact(ks, "ro.ipynb", before, {"kept": {"a": 1}, "note": "before"})
    # Writable again: the first kernel's next save checks and saves what it holds.
    out = k.ok("note = 'after'")
    failure_line(out, "Read-only file system", before, isolated_home)  # the cell before's save
    out = k.ok("done = True")
    assert not warning_lines(out), out
    ns = restore_whole(ks, "ro.ipynb", ks.latest_version("ro.ipynb"))
    assert ns["note"] == "after" and ns["arr"].sum() == 300_000
