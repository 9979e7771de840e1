"""Big buffers of a pickled variable stored out of band, one raw blob each (pickle protocol 5, PEP 574).

A list, dict, tuple or object that holds big numpy arrays (or DataFrames, whose blocks are
arrays) would otherwise be one pickle with every byte in it, read whole at a restore. Here
``pickling.dumps`` is given a ``Collector``: numpy hands it each contiguous array's memory
as a ``PickleBuffer``, and those of ``OUT_OF_BAND_BYTES`` or more are left out of the
pickle. Each is stored as its own content-addressed blob (raw and aligned when
compression does not pay, so it can be mapped), and the entry lists their names in order
(``Entry.parts``, stored like a frame's columns, so garbage collection and ``store
copy`` see them). Smaller buffers, non-contiguous arrays and object arrays stay in band.

The signed pickle blob starts with the list of buffer names (``_MAGIC``), so its HMAC
covers the list: a swapped or foreign list in the database is refused before anything
is unpickled. A restore hands ``pickle.loads`` the buffers in order: mapped copy-on-write
(``lazy``; their hash checks run in the background like a top-level array's) or read and
checked. numpy rebuilds its arrays as views over them (``numpy.ndarray``, writable: a
private mapping is), and the pickle's memo keeps aliasing inside the value.
"""
from __future__ import annotations

import json
import pickle

import xxhash

from ..blobs import BIG_BLOB
from ..errors import UntrustedDataError

# From this size a raw blob's payload is stored aligned (``blobs.ALIGNED_OFFSET``), so a
# restore can map it; smaller buffers cost less in the pickle than a blob file of their own.
OUT_OF_BAND_BYTES = BIG_BLOB
_MAGIC = b"PPOOB1"


class Collector:
    """A ``buffer_callback``: takes big contiguous buffers out of band, in pickle order."""

    def __init__(self):
        self.views: list[memoryview] = []

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: pickled in band
            return True
        if view.nbytes < OUT_OF_BAND_BYTES:
            return True
        self.views.append(view)
        return False

    def reset(self) -> None:
        self.views = []


def signed_body(data: bytes, digests: list[str]) -> bytes:
    """What is signed and stored for a pickle with out-of-band buffers: their names, then the pickle."""
    if not digests:
        return data
    return _MAGIC + json.dumps(digests).encode() + b"\n" + data


def split_body(payload: memoryview, parts: list[str] | None, what: str) -> memoryview:
    """The pickle in a verified ``payload``, after checking that the buffer names it was
    signed with are the entry's ``parts``; UntrustedDataError otherwise."""
    signed: list[str] = []
    if payload[:len(_MAGIC)] == _MAGIC:
        end = bytes(payload[:64 * 1024]).find(b"\n", len(_MAGIC))
        if end < 0:
            end = bytes(payload).find(b"\n", len(_MAGIC))
        try:
            signed = json.loads(bytes(payload[len(_MAGIC):end]))
        except ValueError:
            signed = None
        payload = payload[end + 1:]
    if signed != list(parts or []):
        raise UntrustedDataError(f"{what}: its list of buffer blobs is not the one its pickle was signed "
                                 "with; refusing to unpickle it")
    return payload


def digests_of(views: list[memoryview]) -> list[str]:
    """The blob names of the buffers (xxh3-128 of their bytes, as ``BlobStore`` names them)."""
    return [xxhash.xxh3_128_hexdigest(v) for v in views]


def settle(views: list[memoryview], digests: list[str], blobs, copy_limit: int) -> list[tuple[str, object]]:
    """Make what the save writes later immune to the cells that run meanwhile: buffers the
    store has are only touched (never written again), new ones copied up to ``copy_limit``
    bytes in all (as a changed top-level array is), the others written now. Returns the
    (name, bytes) still to write."""
    later = []
    for view, digest in zip(views, digests):
        if blobs.touch(digest):
            continue
        if view.nbytes <= copy_limit:
            later.append((digest, bytes(view)))
            copy_limit -= view.nbytes
        else:
            blobs.put_chunks([view], digest=digest)
    return later


def write(extra: dict, blobs) -> None:
    """Put a prepared pickle's buffers, each its own blob (compressed where that pays): those
    ``settle`` left, or all of them when it did not run (a frame snapshot pickled by the
    save itself, which no cell can change). A blob the store has is not written again."""
    pending = extra.get("pending")
    if pending is None:
        pending = zip(extra.get("parts", ()), extra.get("views", ()))
    for digest, data in pending:
        blobs.put_chunks([data], digest=digest)
