"""``pip`` (pipulate.store) with its blobs on S3 (PIPULATE_BLOBS_URL, a real SeaweedFS server):
test_store.py's blob tests again, and damage in the bucket reported by job and step.
Until the records move to PostgreSQL (PIPULATE_DATABASE_URL), they stay in SQLite here."""
from __future__ import annotations

import numpy as np
import pytest

from pipulate.errors import IntegrityError

from .blob_helpers import damage_blob, lose_blob
from .s3_server import client
from .test_store import (  # noqa: F401  (collected here again, on the S3 store below)
    test_delete_removes_job_and_collects_its_blobs,
    test_large_values_live_in_blob_files_and_small_ones_inline,
    test_shared_blobs_survive_deleting_one_of_their_jobs,
    test_value_round_trips_with_its_type,
    test_values_round_trip_in_a_fresh_process,
)

pytestmark = pytest.mark.backends("embedded", reason="records in SQLite, blobs on S3 (s3_blobs): the mix is the point")


@pytest.fixture
def store(s3_blobs, isolated_home):
    """``Pipulate`` on the test's home, its blobs in the test's bucket."""
    from pipulate import Pipulate
    from pipulate.team.s3 import S3BlobStore

    p = Pipulate(isolated_home)
    assert isinstance(p.blobs, S3BlobStore) and p.blobs.url == s3_blobs
    yield p
    p.close()


def test_the_blobs_are_in_the_bucket(store, s3_server):
    store.set("where", "big", np.arange(100_000))
    (digest,) = store.db.rows("SELECT blob FROM steps WHERE step='big'")[0]
    assert client(s3_server).exists(store.blobs.key(digest))


def test_damage_in_the_bucket_is_reported_by_job_and_step(store, s3_server):
    store.set("dmg", "big", np.arange(100_000))
    store.set("dmg", "ok", 1)
    (digest,) = store.db.rows("SELECT blob FROM steps WHERE step='big'")[0]
    damage_blob(store.blobs, digest)
    store.blobs.path(digest).unlink()  # a machine without the cached copy
    with pytest.raises(IntegrityError, match=r"job 'dmg' step 'big'.*damaged"):
        store.get("dmg", "big")
    assert store.get("dmg", "ok") == 1
    lose_blob(store.blobs, digest)
    with pytest.raises(IntegrityError, match=r"job 'dmg' step 'big'.*missing"):
        store.get("dmg", "big")
