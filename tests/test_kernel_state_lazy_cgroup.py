"""A namespace bigger than the memory a kernel may use comes back, mapped: the kernel runs in a
memory cgroup (v1, as this machine mounts it) limited below the namespace's size.

The test process joins the cgroup only while it starts the kernel (a child stays in its
parent's cgroup), so only the kernel is limited; page cache it touches is charged to it and
given back under the limit, the memory it allocates is not.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

MIB = 1 << 20
MEMORY = Path("/sys/fs/cgroup/memory")


def own_memory_cgroup() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return MEMORY / path.lstrip("/")
    raise AssertionError("this machine gives processes no memory cgroup (v1): the test needs one")


@contextlib.contextmanager
def memory_limit(limit: int):
    """A child memory cgroup limited to ``limit`` bytes; yields a function that runs a
    callable with this process inside it (what it starts stays inside)."""
    parent = own_memory_cgroup()
    group = parent / f"pipulate-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))

        def inside(start):
            (group / "cgroup.procs").write_text(str(os.getpid()))
            try:
                return start()
            finally:
                (parent / "cgroup.procs").write_text(str(os.getpid()))

        yield group, inside
    finally:
        group.rmdir()


def test_a_namespace_bigger_than_the_kernels_memory_limit_is_restored_and_used(kernels):
    k, _ = kernels.start("lazy.ipynb")
    k.ok("import numpy as np\nrng = np.random.default_rng(6)\n"
         "a1, a2, a3, a4 = (rng.random(16 * 2**20) for _ in range(4))\n"  # 4 x 128 MiB, incompressible
         "counter = 41")
    namespace, limit = 512 * MIB, 320 * MIB
    k.kill9()
    with memory_limit(limit) as (group, inside):
        k, first = inside(lambda: kernels.start("lazy.ipynb"))
        try:
            assert "restored" in first and "a4" in first, first
            assert k.ok("counter += 1\nprint(counter, float(a1[:4].sum()) > 0)").split() == ["42", "True"]
            peak = int((group / "memory.max_usage_in_bytes").read_text())
            assert peak <= limit < namespace, (peak, limit)
        finally:
            k.kill9()
        # The limit is real: read first (as before lazy restore), the same kernel is killed by it.
        with pytest.raises(RuntimeError, match="died"):
            inside(lambda: kernels.start("lazy.ipynb", extra_env={"PIPULATE_LAZY_RESTORE": "0"}))
