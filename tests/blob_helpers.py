"""Damage or lose a blob where it really lives, on either blob backend.

Blob files in the home are the blobs themselves on the embedded backend, but only a cache of the
bucket on the team backend: a test of a damaged or missing blob changes the bucket too there.
"""
from __future__ import annotations


def _bucket_key(blobs, digest: str) -> str | None:
    from pipulate.team.s3 import S3BlobStore

    return blobs.key(digest) if isinstance(blobs, S3BlobStore) else None


def stored_bytes(blobs, digest: str) -> bytes:
    """The bytes of blob ``digest`` where it is stored (the bucket's copy on S3)."""
    key = _bucket_key(blobs, digest)
    if key is None:
        return blobs.path(digest).read_bytes()
    from pipulate.team.s3 import filesystem

    return filesystem().cat_file(key)


def damage_blob(blobs, digest: str, middle: bool = False) -> None:
    """Flip one byte of blob ``digest`` where it is stored: its last, or its middle one (inside
    an array's or a column's data, past its header)."""
    data = bytearray(stored_bytes(blobs, digest))
    data[len(data) // 2 if middle else -1] ^= 0xFF
    rewrite_blob(blobs, digest, bytes(data))


def rewrite_blob(blobs, digest: str, data: bytes) -> None:
    """Replace the stored bytes of blob ``digest`` with ``data`` (the test's damage)."""
    key = _bucket_key(blobs, digest)
    if key is not None:
        from pipulate.team.s3 import filesystem

        filesystem().pipe(key, data)
    blobs.path(digest).write_bytes(data)


def lose_blob(blobs, digest: str) -> None:
    """Delete blob ``digest`` wherever it is stored."""
    key = _bucket_key(blobs, digest)
    if key is not None:
        from pipulate.team.s3 import filesystem

        filesystem().rm(key)
    blobs.path(digest).unlink(missing_ok=True)
