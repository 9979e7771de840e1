"""The blob-store contract on both backends (blob files; S3 on a real SeaweedFS server), and
what only the S3 store does: uploads before returning, a cache that can be thrown away,
a server that dies and comes back."""
from __future__ import annotations

import time

import numpy as np
import pytest

from pipulate.blobs import ALIGNED_OFFSET, BlobStore, content_hash, open_blobs
from pipulate.errors import IntegrityError, StoreUnavailableError
from pipulate.settings import Settings

from .blob_helpers import damage_blob, lose_blob
from .s3_server import client

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.backends("embedded", reason="sets up each blob store by itself (blob_store)")]


@pytest.fixture(params=["files", "s3"])
def blob_store(request, isolated_home):
    """The test's blob store, on each backend: (store, backend name)."""
    if request.param == "s3":
        request.getfixturevalue("s3_blobs")
    store = open_blobs(isolated_home, Settings.from_env())
    assert (request.param == "s3") == (type(store) is not BlobStore)
    return store, request.param


# --- the contract, on both backends -----------------------------------------------------------

def test_put_get_round_trip_and_same_bytes_are_stored_once(blob_store):
    store, _ = blob_store
    small, big = b"hello" * 10, np.arange(300_000, dtype=np.int64).tobytes()  # 2.4 MB: raw, aligned
    zeros = bytes(200_000)  # compressed
    digests = [store.put(small), store.put(big), store.put(zeros)]
    assert digests == [content_hash(small), content_hash(big), content_hash(zeros)]
    assert store.put(big) == digests[1]
    assert [store.get(d) for d in digests] == [small, big, zeros]
    assert all(store.exists(d) for d in digests) and not store.exists("0" * 32)
    assert store.put_chunks([b"abc", b"def"]) == content_hash(b"abcdef")
    assert store.get(content_hash(b"abcdef")) == b"abcdef"
    mapped = store.map_private(digests[1])
    assert mapped is not None and bytes(mapped) == big
    store.check(digests[1])


def test_put_streamed_stores_what_was_produced(blob_store):
    store, _ = blob_store
    pieces = [b"x" * 100, np.ones(200_000).tobytes(), b"tail"]

    def produce(sink):
        for piece in pieces:
            sink.write(piece)

    digest, new, size = store.put_streamed(produce)
    assert (digest, new, size) == (content_hash(b"".join(pieces)), True, sum(map(len, pieces)))
    assert store.put_streamed(produce)[1] is False
    assert store.get(digest) == b"".join(pieces)


def test_collect_deletes_only_old_unreferenced_blobs(blob_store):
    store, _ = blob_store
    keep, drop = store.put(b"keep me" * 1000), store.put(b"drop me" * 1000)
    assert store.collect({keep}, grace_seconds=3600) == 0  # young: spared
    assert store.collect({keep}, grace_seconds=0) == 1
    assert store.exists(keep) and not store.exists(drop)
    assert store.get(keep) == b"keep me" * 1000
    with pytest.raises(IntegrityError, match="missing"):
        store.get(drop)


def test_damaged_and_missing_blobs_are_detected_before_use(blob_store):
    store, name = blob_store
    data = np.arange(100_000).tobytes()
    digest = store.put(data)
    damage_blob(store, digest)
    if name == "s3":
        store.path(digest).unlink()  # the cached copy dropped: read from the damaged bucket
    with pytest.raises(IntegrityError, match=f"blob {digest} is damaged"):
        store.get(digest)
    with pytest.raises(IntegrityError, match="damaged"):
        store.check(digest)
    lose_blob(store, digest)
    with pytest.raises(IntegrityError, match=f"blob {digest} is missing"):
        store.get(digest)
    assert store.put(data) == digest and store.get(digest) == data  # put again: whole again


def test_bad_blob_names_are_refused(blob_store):
    store, _ = blob_store
    for bad in ["../../etc/passwd", "ABC", "0" * 31, 7]:
        with pytest.raises(ValueError, match="not a blob name"):
            store.get(bad)


# --- S3 only ---------------------------------------------------------------------------------

def test_a_put_is_in_the_bucket_when_it_returns_in_the_blob_file_format(s3_blobs, s3_server, isolated_home):
    store = open_blobs(isolated_home, Settings.from_env())
    data = np.arange(200_000).tobytes()
    digest = store.put(data)
    in_bucket = client(s3_server).cat_file(store.key(digest))
    assert in_bucket == store.path(digest).read_bytes()  # the cache holds the same file
    files = BlobStore(isolated_home / "plain-blobs", compress=True)
    assert files.path(files.put(data)).read_bytes() == in_bucket  # the format BlobStore writes


def test_reads_download_into_an_empty_cache(s3_blobs, isolated_home):
    store = open_blobs(isolated_home, Settings.from_env())
    big = np.arange(2_000_000, dtype=np.float64).tobytes()  # 16 MB: raw, aligned, mappable
    digest = store.put(big)
    small = store.put(b"small" * 100)
    cache = isolated_home / "blobs"
    for path in cache.rglob("*"):
        if path.is_file():
            path.unlink()
    fresh = open_blobs(isolated_home, Settings.from_env())
    assert fresh.prefetch([small]) > 0 and fresh.path(small).exists()
    mapped = fresh.map_private(digest)
    assert mapped is not None and bytes(mapped) == big
    fresh.check(digest)
    assert fresh.size_on_disk(digest) == len(big) + ALIGNED_OFFSET


def test_the_blobs_url_is_checked(isolated_home):
    for bad in ["http://bucket/x", "s3://", "s3:///prefix", "s3://bucket/p?x=1"]:
        with pytest.raises(ValueError, match="PIPULATE_BLOBS_URL"):
            open_blobs(isolated_home, Settings(blobs_url=bad))
    assert type(open_blobs(isolated_home, Settings(blobs_url=""))) is BlobStore


def test_a_bucket_that_does_not_exist_is_a_clear_error(s3_blobs, isolated_home):
    store = open_blobs(isolated_home, Settings(blobs_url="s3://no-such-bucket-here/blobs"))
    with pytest.raises(StoreUnavailableError, match="s3://no-such-bucket-here/blobs cannot be written: "
                                                    "no bucket 'no-such-bucket-here'"):
        store.put(b"x" * 1000)


def test_a_dead_server_is_one_clear_line_and_the_next_call_after_it_is_back_works(
        s3_blobs, s3_server, isolated_home):
    store = open_blobs(isolated_home, Settings.from_env())
    before = store.put(b"before" * 100)
    s3_server.kill()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            store.put(b"while it is down" * 100)
        message = str(caught.value)
        assert s3_blobs in message and "\n" not in message, message
        assert time.monotonic() - started < 60  # bounded: timeouts and few retries
        with pytest.raises(StoreUnavailableError, match="cannot"):
            store.exists(before)
    finally:
        s3_server.start()
    assert store.put(b"after" * 100) == content_hash(b"after" * 100)
    assert store.exists(before) and store.get(content_hash(b"after" * 100)) == b"after" * 100
