"""Kernel state with its blobs on S3 (PIPULATE_BLOBS_URL, a real SeaweedFS server), in real
kernels started from the workstation's kernel spec: a round trip, a machine thrown away,
and the server killed in the middle of saves. The records stay in SQLite here."""
from __future__ import annotations

import shutil

import pytest

from pipulate.kernel_state import KernelStateStore
from pipulate.signing import KEY_FILE

from .s3_server import client
from .test_kernel_state_kernels import BUILD, CHECK

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.backends("embedded", reason="records in SQLite, blobs on S3 (s3_blobs): the mix is the point")]

BIG = """
import numpy as np
big = np.random.default_rng(7).random(2 * 2**20)  # 16 MiB: stored raw, restored mapped
big_sum = float(big.sum())
"""
BIG_CHECK = "print('BIG OK', big.shape == (2 * 2**20,) and float(big.sum()) == big_sum)"


def referenced_in_bucket(home, server, url) -> tuple[set, set]:
    """(blobs the records name, those of them the bucket lacks)."""
    store = KernelStateStore(home)
    try:
        named = store.db.referenced_blobs()
        fs = client(server)
        return named, {b for b in named if not fs.exists(store.blobs.key(b))}
    finally:
        store.close()


def test_kernel_state_round_trip_with_blobs_on_s3(kernels, s3_blobs, s3_server, isolated_home):
    k, _ = kernels.start("team.ipynb")
    k.ok(BUILD)
    k.ok(BIG)
    k.close()
    named, lacking = referenced_in_bucket(isolated_home, s3_server, s3_blobs)
    assert named and not lacking

    k2, out = kernels.start("team.ipynb")
    assert "restored" in out, out
    assert "CHECK OK" in k2.ok(CHECK)
    assert "BIG OK True" in k2.ok(BIG_CHECK)


def test_a_machine_thrown_away_gets_its_state_back_from_the_bucket(kernels, s3_blobs, s3_server, isolated_home):
    k, _ = kernels.start("team.ipynb")
    k.ok(BUILD)
    k.ok(BIG)
    k.close()
    # Everything local but the records and the signing key goes: the blob cache, notes, ...
    # (the key is the user's own; how it follows a user across machines is the records' side).
    keep = {"pipulate.db", "pipulate.db-wal", "pipulate.db-shm", KEY_FILE}
    for path in isolated_home.iterdir():
        if path.name in keep:
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert not list(isolated_home.glob("blobs/*/*"))

    k2, out = kernels.start("team.ipynb")
    assert "restored" in out, out
    assert "CHECK OK" in k2.ok(CHECK)
    assert "BIG OK True" in k2.ok(BIG_CHECK)
    assert list(isolated_home.glob("blobs/*/*")), "the cache fills again"


def test_the_server_killed_in_the_middle_of_saves(kernels, s3_blobs, s3_server, isolated_home):
    k, _ = kernels.start("fault.ipynb")
    k.ok("import numpy as np\nbefore = np.arange(500_000)")
    # Saves of new big values in flight (a background save per cell) when the server dies.
    k.send("\n".join(f"v{i} = np.random.default_rng({i}).random(1_000_000)" for i in range(6)))
    s3_server.kill()
    try:
        outputs = [k.run("during = np.random.default_rng(99).random(1_000_000)\nprint('cell ran')"),
                   k.run("print('next cell ran')")]
        for out, err in outputs:
            assert err is None, err
        assert "cell ran" in outputs[0][0] and "next cell ran" in outputs[1][0]
        said = [line for out, _ in outputs for line in out.splitlines() if line.startswith("pipulate:")]
        assert said, outputs
        for line in said:  # one line each, naming the store and what is kept
            assert "not saved" in line and s3_blobs in line and "cell ran as usual" in line, line
    finally:
        s3_server.start()
    named, lacking = referenced_in_bucket(isolated_home, s3_server, s3_blobs)
    assert not lacking, f"versions name blobs the bucket lacks: {lacking}"

    # Saving resumes by itself once the server is back.
    k.ok("after = 1")
    out = k.ok("print('resumed')")
    assert not [line for line in out.splitlines() if line.startswith("pipulate:")], out
    names = KernelStateStore(isolated_home).summary("fault.ipynb")["variable_names"]
    assert {"before", "during", "after", "v5"} <= set(names), names
    named, lacking = referenced_in_bucket(isolated_home, s3_server, s3_blobs)
    assert not lacking

    k.close()
    k2, out = kernels.start("fault.ipynb")
    assert "restored" in out
    assert "ok" in k2.ok("assert during.shape == (1_000_000,) and after == 1 and v5.shape == (1_000_000,)\nprint('ok')")
