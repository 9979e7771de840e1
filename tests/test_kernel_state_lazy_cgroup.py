"""A namespace bigger than the memory a kernel may use comes back, mapped: the kernel runs in a
memory cgroup (v1, as this machine mounts it) limited below the namespace's size.

Only the kernel joins the group: its interpreter does, first thing at start (a
``sitecustomize`` on its PYTHONPATH), before the extension restores anything. Page cache the
kernel touches is charged to the group and given back under the limit; memory it allocates is not.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

MIB = 1 << 20
MEMORY = Path("/sys/fs/cgroup/memory")
JOIN = """import os
_procs = os.environ.pop("PIPULATE_TEST_CGROUP_PROCS", None)
if _procs:
    with open(_procs, "w") as _f:
        _f.write(str(os.getpid()))
"""


def own_memory_cgroup() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return MEMORY / path.lstrip("/")
    raise AssertionError("this machine gives processes no memory cgroup (v1): the test needs one")


@contextlib.contextmanager
def memory_limit(limit: int, tmp_path: Path):
    """A child memory cgroup limited to ``limit`` bytes; yields it and the environment that
    makes a Python process join it as it starts."""
    group = own_memory_cgroup() / f"pipulate-test-{os.getpid()}"
    group.mkdir()
    site = tmp_path / "join-cgroup"
    site.mkdir()
    (site / "sitecustomize.py").write_text(JOIN)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        yield group, {"PYTHONPATH": path, "PIPULATE_TEST_CGROUP_PROCS": str(group / "cgroup.procs")}
    finally:
        group.rmdir()


def test_a_namespace_bigger_than_the_kernels_memory_limit_is_restored_and_used(kernels, tmp_path):
    k, _ = kernels.start("lazy.ipynb")
    k.ok("import numpy as np\nrng = np.random.default_rng(6)\n"
         "a1, a2, a3, a4 = (rng.random(16 * 2**20) for _ in range(4))\n"  # 4 x 128 MiB, incompressible
         "counter = 41")
    namespace, limit = 512 * MIB, 320 * MIB
    k.kill9()
    with memory_limit(limit, tmp_path) as (group, join):
        k, first = kernels.start("lazy.ipynb", extra_env=join)
        try:
            assert "restored" in first and "a4" in first, first
            assert k.ok("import os\nprint(open(f'/proc/{os.getpid()}/cgroup').read().count('pipulate-test'))"
                        ).strip() == "1", "the kernel is not in the limited group"
            assert k.ok("counter += 1\nprint(counter, float(a1[:4].sum()) > 0)").split() == ["42", "True"]
            peak = int((group / "memory.max_usage_in_bytes").read_text())
            assert peak <= limit < namespace, (peak, limit)
        finally:
            k.kill9()
        # The limit is real: read first (as before lazy restore), the same kernel is killed by it.
        with pytest.raises(RuntimeError, match="died"):
            kernels.start("lazy.ipynb", extra_env={**join, "PIPULATE_LAZY_RESTORE": "0"})
