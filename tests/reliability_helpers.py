"""Shared pieces of the reliability suite (tests/test_reliability*.py).

- ``read_only(folder)``: make a folder read-only for this process (bind mount as root, else chmod);
- ``KERNEL_WRITER``: a plain process that runs notebook cells in an IPython shell with
  ``%load_ext pipulate`` (so every cell's variables are saved by the real extension), writing
  ``pip`` steps from inside the cells, and saving a second notebook through ``Saver`` directly;
- ``check_kernel_store``: after a crash, every kept version of every notebook and every job loads whole;
- ``free_port``, ``tree_snapshot``: for the server and the "nothing outside data/ touched" checks.
"""
from __future__ import annotations

import os
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def read_only(folder: Path):
    """Make ``folder`` read-only for this process and its children, also when running as root."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
            yield
        finally:
            # Lazy: a kernel may still hold a file it opened through the read-only view,
            # and a plain umount would then fail and leave the mount behind for good.
            subprocess.run(["umount", "--lazy", str(folder)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file and folder under ``root`` (but ``skip``)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None:
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            out[str(p.relative_to(root))] = (st.st_size if not p.is_dir() else 0, st.st_mtime_ns)
    return out


# --- a writer process saving kernel state and pip values in a loop ----------------------------

# argv: notebook id, seconds to run (0: forever), writer number.
# Every cell: a counter n, an array whose every element is n (big every few cells, so kills
# land inside blob writes too), an alias of it, a dict, a function reading the global n, and
# pip steps. The extension saves after the cell (finishing in the background, so kills land
# inside background saves too); a second notebook is saved with Saver.
# Prints "ACK <n> <kernel version> <other version>" once a cell and both saves returned.
KERNEL_WRITER = r'''
import os, random, sys, time
from IPython.core.interactiveshell import InteractiveShell

notebook, seconds, writer = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
os.environ["PIPULATE_NOTEBOOK"] = notebook
ip = InteractiveShell.instance()
ip.run_cell("%load_ext pipulate", store_history=False)   # restores the last committed version
state = ip._pipulate_kernel_state
from pipulate import pip
from pipulate.kernel_state.saving import Saver
ip.push({"pip": pip, "writer": writer}, interactive=False)  # hidden: never saved
other = Saver(state.store, notebook + ".b", notebook + ".b")
ns_b = {}
ip.run_cell("import numpy as np", store_history=False)
n = ip.user_ns.get("n", -1) + 1
rng = random.Random(os.getpid())
deadline = time.monotonic() + seconds
print("START", n, flush=True)
while not seconds or time.monotonic() < deadline:
    big = rng.random() < 0.3
    size = 300_000 if big else 100
    code = (f"n = {n}\n"
            f"arr = np.full({size}, n, dtype=np.int64)\n"
            "same = arr\n"
            "info = {'n': n, 'text': 'x' * (n % 50), 'items': list(range(n % 7))}\n"
            "square = lambda v: v * v + n\n"
            f"pip.set('shared', f'w{{writer}}-{{n:06d}}', n.to_bytes(4, 'little') * {25_000 if big else 10})\n"
            "pip.set(f'job{n % 3}', f'w{writer}', n)\n"
            "pip.set('hot', 'last', [writer, n])\n")
    result = ip.run_cell(code, store_history=False)
    if not result.success:
        print("CELL FAILED", result.error_in_exec, file=sys.stderr, flush=True)
        sys.exit(3)
    state.flush()  # the cell's save runs in the background; acknowledge it once it is durable
    saved = state.last_result
    ns_b.update(m=n, data=bytes([n % 256]) * (size * 8), pair=(n, str(n)), tags={n, -n})
    other_saved = other.save(ns_b)
    print("ACK", n, saved.version, other_saved.version, flush=True)
    n += 1
'''


def check_kernel_version(ns: dict, writer: int | None = None) -> int:
    """A restored version of KERNEL_WRITER's notebook is whole and self-consistent; returns n."""
    import numpy as np

    if "n" not in ns:  # the save of the writer's `import numpy` cell, killed before the first loop cell's
        assert set(ns) == {"np"}, sorted(ns)
        return -1
    n = ns["n"]
    assert isinstance(ns["arr"], np.ndarray) and ns["arr"].dtype == np.int64 and (ns["arr"] == n).all()
    assert len(ns["arr"]) in (300_000, 100)
    assert ns["same"] is ns["arr"]
    assert ns["info"] == {"n": n, "text": "x" * (n % 50), "items": list(range(n % 7))}
    assert ns["square"](3) == 9 + n
    assert ns["np"] is np
    return n


def check_other_version(ns: dict) -> int:
    m = ns["m"]
    assert ns["data"] in (bytes([m % 256]) * 2_400_000, bytes([m % 256]) * 800)
    assert ns["pair"] == (m, str(m)) and ns["tags"] == {m, -m}
    return m


def restore_whole(ks, notebook: str, version: int | None = None) -> dict:
    """Restore ``version`` into a fresh namespace; fail unless every variable came back."""
    from pipulate.kernel_state.restoring import restore

    ns: dict = {}
    result = restore(ks, notebook, ns, version)
    assert not result.failed, (notebook, version, result.failed)
    return ns


def check_kernel_store(home: Path, notebook: str) -> tuple[int, int, int]:
    """After a kill: the store opens; every kept version of both notebooks loads whole; every job
    loads whole and job ``shared`` is an unbroken prefix. Returns (kernel n, other m, pip steps)."""
    from pipulate import Pipulate
    from pipulate.kernel_state import KernelStateStore

    ks = KernelStateStore(home)
    try:
        latest = {}
        for nb in ks.notebooks():
            check = check_other_version if nb["id"].endswith(".b") else check_kernel_version
            for v in ks.versions(nb["id"]):
                got = check(restore_whole(ks, nb["id"], v["version"]))
                latest.setdefault(nb["id"], got)  # versions come newest first
        pip = Pipulate(home)
        try:
            steps = pip.read("shared")
            for i, (name, value) in enumerate(steps.items()):
                assert name == f"w0-{i:06d}", (i, name)
                assert value in (i.to_bytes(4, "little") * 10, i.to_bytes(4, "little") * 25_000)
            for job in pip.jobs():
                pip.read(job)
        finally:
            pip.close()
        n, m = latest.get(notebook, -1), latest.get(notebook + ".b", -1)
        # pip steps of a cell are written before its save, so the store is never behind the kernel
        assert n < len(steps) and m <= n, (n, m, len(steps))
        return n, m, len(steps)
    finally:
        ks.close()
