"""A content-addressed store of byte strings: a blob's name is its hash.

Blobs are written to a temporary name, fsynced and renamed, so a file under
its final name is always whole; its hash is checked again on every read, so
damage is found before anything is decoded. The same bytes are stored once,
whoever writes them (pipeline steps, kernel-state versions, notebook versions).

File layout: ``blobs/ab/cdef...`` holding a 13-byte header (magic, codec,
raw size) and the payload, compressed with zstd where that pays.
"""
from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

import xxhash

from .errors import IntegrityError

_MAGIC = b"PPB1"
_HEADER = struct.Struct("<4sBQ")  # magic, codec, raw size
_RAW, _ZSTD = 0, 1
_PROBE = 256 * 1024
MIN_COMPRESS_SIZE = 4096
# Past this size zstd must at least halve a blob to be used: compressing (~500 MB/s
# here) and decompressing cost more time than writing and reading the difference.
BIG_BLOB = 1 << 20
_BIG_READ = 1 << 20
_READ_CHUNK = 4 << 20


def content_hash(data: bytes | memoryview) -> str:
    """The name a blob of ``data`` gets: 128-bit xxh3, hex."""
    return xxhash.xxh3_128_hexdigest(data)


def _zstd():
    import pyarrow as pa

    return pa.Codec("zstd", compression_level=1)


def _compression_pays(data: memoryview, total: int) -> bool:
    """Compress a sample: compress the whole only when it shrinks by a fifth (by half when big)."""
    sample = data[:_PROBE]
    wanted = 0.5 if total >= BIG_BLOB else 0.8
    return len(_zstd().compress(sample, asbytes=True)) < wanted * len(sample)


def _uninitialised(size: int):
    """A writable buffer of ``size`` bytes, not zero-filled first when numpy is at hand."""
    np = sys.modules.get("numpy")
    empty = getattr(np, "empty", None)  # None while numpy is still being imported
    if empty is not None and size >= _BIG_READ:
        try:
            return empty(size, dtype="uint8")
        except Exception:
            pass
    return bytearray(size)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """``put`` bytes, get their hash; ``get`` the hash, get the bytes back, checked."""

    def __init__(self, root: Path, compress: bool = True):
        self.root = Path(root)
        self.compress = compress
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if len(digest) != 32 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a blob name: {digest!r}")
        return self.root / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put(self, data: bytes | memoryview, digest: str | None = None,
            compress: bool | None = None) -> str:
        """Store ``data`` durably (fsynced) and return its hash; a no-op if present."""
        return self.put_chunks([data], digest, compress)

    def put_chunks(self, chunks, digest: str | None = None, compress: bool | None = None) -> str:
        """``put`` the concatenation of ``chunks`` (buffers) without joining them first.

        For large values made of a small header and a big buffer (an array's
        ``.npy`` header and its memory): no copy of the buffer is made unless
        compression pays. ``digest``, when given, must be the hash of the joined bytes.
        """
        views = [memoryview(c).cast("B") for c in chunks]
        if digest is None:
            hasher = xxhash.xxh3_128()
            for v in views:
                hasher.update(v)
            digest = hasher.hexdigest()
        path = self.path(digest)
        if path.exists():
            # Fresh mtime: garbage collection spares young blobs, and a writer that
            # found this one is about to commit a reference to it.
            os.utime(path)
            return digest
        total = sum(len(v) for v in views)
        compress = self.compress if compress is None else compress
        codec = _RAW
        if compress and total >= MIN_COMPRESS_SIZE and _compression_pays(max(views, key=len), total):
            joined = views[0] if len(views) == 1 else b"".join(views)
            codec, views = _ZSTD, [memoryview(_zstd().compress(joined, asbytes=True))]
        self._write(path, _HEADER.pack(_MAGIC, codec, total), views)
        return digest

    @staticmethod
    def _write(path: Path, header: bytes, parts) -> None:
        """Write to a temporary name, fsync, rename, fsync the folder: whole or absent."""
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(header)
                for part in parts:
                    f.write(part)
                f.flush()
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def get_view(self, digest: str) -> memoryview:
        """Like ``get``, but a writable view of one buffer filled straight from the file.

        The payload is read in chunks that are hashed while still in the CPU's
        cache, so checking costs little more than reading; nothing is copied again.
        """
        path = self.path(digest)
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise IntegrityError(f"blob {digest} is missing") from None
        with f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                raise IntegrityError(f"blob {digest} is damaged (truncated)")
            magic, codec, size = _HEADER.unpack(head)
            if magic != _MAGIC or codec not in (_RAW, _ZSTD):
                raise IntegrityError(f"blob {digest} is damaged (bad header)")
            stored = os.fstat(f.fileno()).st_size - _HEADER.size
            if codec == _RAW and stored != size:
                raise IntegrityError(f"blob {digest} is damaged (truncated)")
            view = memoryview(_uninitialised(stored)).cast("B")
            hasher = xxhash.xxh3_128()
            got = 0
            while got < stored:
                n = f.readinto(view[got:got + _READ_CHUNK])
                if not n:
                    raise IntegrityError(f"blob {digest} is damaged (truncated)")
                if codec == _RAW:
                    hasher.update(view[got:got + n])
                got += n
        if codec == _ZSTD:
            try:
                # A mutable Arrow buffer: writable views without another copy.
                view = memoryview(_zstd().decompress(view, decompressed_size=size)).cast("B")
            except Exception:
                raise IntegrityError(f"blob {digest} is damaged (does not decompress)") from None
            if len(view) != size:
                raise IntegrityError(f"blob {digest} is damaged (content does not match its hash)")
            hasher.update(view)
        if hasher.hexdigest() != digest:
            raise IntegrityError(f"blob {digest} is damaged (content does not match its hash)")
        return view

    def get(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; IntegrityError if missing or damaged."""
        return bytes(self.get_view(digest))

    def size_on_disk(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def collect(self, referenced: set[str], grace_seconds: float = 3600.0) -> int:
        """Delete blobs no one references; returns how many.

        Blobs younger than ``grace_seconds`` are kept: a writer puts its blobs
        before it commits the row that references them.
        """
        removed = 0
        cutoff = time.time() - grace_seconds
        for sub in self.root.iterdir():
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sub.iterdir():
                digest = sub.name + f.name
                try:
                    if digest in referenced:
                        continue
                    if f.stat().st_mtime > cutoff:
                        continue
                    f.unlink()
                    removed += 1
                except FileNotFoundError:
                    continue
        return removed
