"""A content-addressed store of byte strings: a blob's name is its hash.

Blobs are written to a temporary name, fsynced and renamed, so a file under
its final name is always whole; its hash is checked again on every read, so
damage is found before anything is decoded. The same bytes are stored once,
whoever writes them (pipeline steps, kernel-state versions, notebook versions).

File layout: ``blobs/ab/cdef...`` holding a 13-byte header (magic, codec,
raw size) and the payload, compressed with zstd where that pays; a big raw payload
starts at byte 64 (zeros between), aligned for mapping.
"""
from __future__ import annotations

import contextlib
import functools
import mmap
import os
import re
import struct
import sys
import threading
import time
from pathlib import Path

import xxhash

from .errors import IntegrityError

_MAGIC = b"PPB1"
_HEADER = struct.Struct("<4sBQ")  # magic, codec, raw size
# _RAW_ALIGNED: raw, the payload at ALIGNED_OFFSET (zeros after the header), so that data
# aligned within the payload (an .npy array's, at a multiple of 64) is aligned in the file
# too, and a restore can map it and use it in place (``kernel_state.lazy``).
_RAW, _ZSTD, _RAW_ALIGNED = 0, 1, 2
ALIGNED_OFFSET = 64
_PROBE = 256 * 1024
MIN_COMPRESS_SIZE = 4096
# Past this size a blob is compressed only when that saves time (see _compression_pays).
BIG_BLOB = 1 << 20
# Before this process has timed a big write: the disk speed assumed (bytes/s).
ASSUMED_DISK_RATE = 400e6
# Reading a blob back decompresses it: counted as half the compression time again.
_RESTORE_WEIGHT = 1.5
# A sample that shrinks to this fraction is compressed without timing it: zstd runs at
# several GB/s on such data, faster than any disk writes the bytes it saves, and one
# preempted timing of a 256 KiB sample must not decide to write gigabytes of zeros.
_ALWAYS_PAYS_RATIO = 1 / 16
_BIG_READ = 1 << 20
# Blobs from this size leave the page cache once written (``_drop_cached``); None: never.
DROP_CACHE_BYTES: int | None = 1 << 20
# ``BlobStore.prefetch``: at most this much is read ahead, in steps of a readahead window.
PREFETCH_LIMIT = 4 << 30
_PREFETCH_STEP = 128 << 10  # when the disk's own read-ahead window cannot be read
_WINDOWS: dict[int, int] = {}  # st_dev -> read-ahead window (bytes)
_READ_CHUNK = 4 << 20
_NAME = re.compile(r"[0-9a-f]{32}")
_FOUND: dict[str, dict[str, float]] = {}


def content_hash(data: bytes | memoryview) -> str:
    """The name a blob of ``data`` gets: 128-bit xxh3, hex."""
    return xxhash.xxh3_128_hexdigest(data)


@functools.cache
def _zstd():
    import pyarrow as pa

    return pa.Codec("zstd", compression_level=1)  # stateless calls: one codec serves every thread


def _compression_pays(data: memoryview, total: int, disk_rate: float) -> bool:
    """Compress a sample and decide for the whole blob.

    Small blobs: when the sample shrinks by a fifth (space is what counts). Big blobs:
    only when compressing (and decompressing on restore) costs less time than writing
    the bytes it saves at ``disk_rate`` - zeros or repeated values on any disk, text
    on a slow disk, rarely anything on a fast SSD, where zstd (~0.5-1 GB/s) is slower
    than the disk and would slow down every save and restore.
    """
    sample = data[:_PROBE]
    codec = _zstd()
    started = time.perf_counter()
    ratio = len(codec.compress(sample, asbytes=True)) / max(1, len(sample))
    if total < BIG_BLOB:
        return ratio < 0.8
    if ratio < _ALWAYS_PAYS_RATIO:
        return True
    seconds_per_byte = (time.perf_counter() - started) / max(1, len(sample))
    return ratio < 0.5 and seconds_per_byte * _RESTORE_WEIGHT < (1 - ratio) / disk_rate


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


class _HashingSink:
    """A write-only file for ``pyarrow.PythonFile``: hashes each piece as it comes, and
    writes it to ``fd`` (None: only hashes, to learn a stream's name before writing it).

    Small pieces (an Arrow stream's headers and paddings) are gathered and written
    together: one system call instead of several, each of which gives up the GIL
    and must win it back from the cells running meanwhile.
    """

    closed = False
    GATHER = 64 * 1024

    def __init__(self, fd: int | None):
        self.fd = fd
        self.hasher = xxhash.xxh3_128()
        self.size = 0
        self._small = bytearray()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.hasher.update(view)
        self.size += len(view)
        if self.fd is None:
            return len(view)
        if len(view) < self.GATHER:
            self._small += view
            if len(self._small) >= self.GATHER:
                self.flush()
            return len(view)
        self.flush()
        _write_all(self.fd, view)
        return len(view)

    def flush(self) -> None:
        if self._small and self.fd is not None:
            _write_all(self.fd, memoryview(self._small))
            self._small = bytearray()

    def close(self) -> None:
        pass

    def tell(self) -> int:
        return self.size


def _write_all(fd: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


@contextlib.contextmanager
def _new_file(tmp: Path):
    """A descriptor on a new file at ``tmp``, fsynced when the block ends; removed if it fails.

    A file of ``DROP_CACHE_BYTES`` or more leaves the page cache once fsynced (``_drop_cached``).
    """
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        yield fd
        os.fsync(fd)
        _drop_cached(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)


def _drop_cached(fd: int) -> None:
    """Let the operating system drop a big blob's pages from the page cache (they are on disk now).

    A blob is written once and seldom read back soon: a restore comes with the next
    kernel. Kept, the pages of every new column grow the cache (400 MB over the pandas
    benchmark's 30 cells), and the cells running beside the save pay for that memory:
    +5..11% in paired runs on a VM, against -5..+7% with big blobs dropped
    (bench/README.md). Small blobs stay.
    """
    if DROP_CACHE_BYTES is None or not hasattr(os, "posix_fadvise"):
        return
    try:
        if os.fstat(fd).st_size >= DROP_CACHE_BYTES:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:  # advice only
        pass


def _readahead_window(device: int) -> int:
    """The read-ahead window of the disk holding ``device`` (Linux sysfs), in bytes."""
    window = _WINDOWS.get(device)
    if window is None:
        window = _PREFETCH_STEP
        base = f"/sys/dev/block/{os.major(device)}:{os.minor(device)}"
        for queue in (f"{base}/queue", f"{base}/../queue"):  # a whole disk; a partition's disk
            try:
                with open(f"{queue}/read_ahead_kb") as f:
                    window = max(_PREFETCH_STEP, int(f.read()) * 1024)
                break
            except (OSError, ValueError):
                continue
        _WINDOWS[device] = window
    return window


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
        self.disk_rate = ASSUMED_DISK_RATE  # bytes/s of big raw writes (fsync included), measured
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        # blob -> when ``touch`` last found it (monotonic); shared by the stores of one
        # folder in this process, so that garbage collection through any of them forgets.
        self._touched: dict[str, float] = _FOUND.setdefault(self._root, {})

    def path(self, digest: str) -> Path:
        return Path(self._file(digest))

    def _file(self, digest: str) -> str:
        if type(digest) is not str or not _NAME.fullmatch(digest):
            raise ValueError(f"not a blob name: {digest!r}")
        return os.path.join(self._root, digest[:2], digest[2:])

    def exists(self, digest: str) -> bool:
        return os.path.exists(self._file(digest))

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
        # Fresh mtime if present: garbage collection spares young blobs, and a writer
        # that found this one is about to commit a reference to it.
        if self.touch(digest):
            return digest
        path = self.path(digest)
        total = sum(len(v) for v in views)
        compress = self.compress if compress is None else compress
        codec = _RAW
        if compress and total >= MIN_COMPRESS_SIZE and _compression_pays(max(views, key=len), total,
                                                                         self.disk_rate):
            joined = views[0] if len(views) == 1 else b"".join(views)
            codec, views = _ZSTD, [memoryview(_zstd().compress(joined, asbytes=True))]
        header = _HEADER.pack(_MAGIC, codec, total)
        if codec == _RAW and total >= BIG_BLOB:
            codec = _RAW_ALIGNED
            header = _HEADER.pack(_MAGIC, codec, total).ljust(ALIGNED_OFFSET, b"\0")
        started = time.perf_counter()
        self._write(path, header, views)
        if codec != _ZSTD:
            self._note_write_speed(total, time.perf_counter() - started)
        return digest

    def compresses(self, sample, total: int) -> bool:
        """Whether ``put`` would compress a blob of ``total`` bytes that looks like ``sample``."""
        return bool(self.compress and total >= MIN_COMPRESS_SIZE
                    and _compression_pays(memoryview(sample).cast("B"), total, self.disk_rate))

    def put_streamed(self, produce) -> tuple[str, bool, int]:
        """Store what ``produce(sink)`` writes to ``sink`` (raw); returns (name, was new, size).

        For big values serialised in pieces (an Arrow stream of a column): each piece
        is hashed and written as it comes, from the value's own memory, instead of
        being copied into one buffer first. ``produce`` runs twice: once only to hash
        (xxh3 runs at memory speed), so that bytes already stored - a column a merge
        or a copy left as it was - are not written again; then to write, under a
        temporary name in the store's root, renamed once whole.
        """
        probe = _HashingSink(None)
        produce(probe)
        known = probe.hasher.hexdigest()
        if self.touch(known):
            return known, False, probe.size
        tmp = self.root / f".stream.{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}.tmp"
        started = time.perf_counter()
        # Streams are big (a frame's columns): the payload starts at ALIGNED_OFFSET, so that a
        # restore can map the column and use its data in place (``kernel_state.lazy``).
        codec, start = (_RAW_ALIGNED, ALIGNED_OFFSET) if probe.size >= BIG_BLOB else (_RAW, _HEADER.size)
        with _new_file(tmp) as fd:
            sink = _HashingSink(fd)
            os.write(fd, bytes(start))  # the header is filled in once the size is known
            produce(sink)
            sink.flush()
            os.pwrite(fd, _HEADER.pack(_MAGIC, codec, sink.size), 0)
        digest = sink.hasher.hexdigest()
        if self.touch(digest):  # stored meanwhile (by another writer of the same bytes)
            tmp.unlink(missing_ok=True)
            return digest, False, sink.size
        path = self.path(digest)
        path.parent.mkdir(exist_ok=True)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        self._note_write_speed(sink.size, time.perf_counter() - started)
        return digest, True, sink.size

    def _note_write_speed(self, size: int, seconds: float) -> None:
        """How fast this disk takes big raw writes (fsync included), smoothed."""
        if size >= BIG_BLOB:
            self.disk_rate = 0.7 * self.disk_rate + 0.3 * size / max(seconds, 1e-6)

    def prefetch(self, digests, limit: int = PREFETCH_LIMIT) -> int:
        """Ask the operating system to read these blobs into the page cache in the background
        (``POSIX_FADV_WILLNEED``), up to ``limit`` bytes in all: a restore that follows
        soon finds them there. Returns the bytes asked for; missing blobs are left to
        the restore to report."""
        if not hasattr(os, "posix_fadvise"):
            return 0
        asked = 0
        for digest in digests:
            try:
                fd = os.open(self._file(digest), os.O_RDONLY)
            except (OSError, ValueError):
                continue
            try:
                stat = os.fstat(fd)
                size = min(stat.st_size, limit - asked)
                # The system reads at most the disk's read-ahead window per call (128 KiB
                # on many disks, 8 MiB on others): one call per window covers the whole file.
                step = _readahead_window(stat.st_dev)
                for offset in range(0, size, step):
                    os.posix_fadvise(fd, offset, min(step, size - offset), os.POSIX_FADV_WILLNEED)
                asked += size
            except OSError:
                pass
            finally:
                os.close(fd)
            if asked >= limit:
                break
        return asked

    def touch(self, digest: str, within: float = 0.0) -> bool:
        """True if the blob is on disk; touched, so garbage collection's grace period covers it.

        ``within``: a blob this process found less than that many seconds ago is taken
        as still there (its fresh mtime keeps it from garbage collection, whose grace is
        an hour). Saves after every cell name the same blobs again and again, and each
        system call gives up the GIL the cells running meanwhile want.
        """
        now = time.monotonic()
        if within and now - self._touched.get(digest, -within) < within:
            return True
        try:
            os.utime(self._file(digest))
        except OSError:
            self._touched.pop(digest, None)
            return False
        if len(self._touched) >= 100_000:
            self._touched.clear()
        self._touched[digest] = now
        return True

    @staticmethod
    def _write(path: Path, header: bytes, parts) -> None:
        """Write to a temporary name, fsync, rename, fsync the folder: whole or absent."""
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        with _new_file(tmp) as fd, os.fdopen(fd, "wb", closefd=False) as f:
            f.write(header)
            for part in parts:
                f.write(part)
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def _open(self, digest: str):
        """The blob's file (unbuffered), positioned at its payload, with its codec and raw size."""
        try:
            f = open(self.path(digest), "rb", buffering=0)
        except FileNotFoundError:
            raise IntegrityError(f"blob {digest} is missing") from None
        try:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                raise IntegrityError(f"blob {digest} is damaged (truncated)")
            magic, codec, size = _HEADER.unpack(head)
            if magic != _MAGIC or codec not in (_RAW, _ZSTD, _RAW_ALIGNED):
                raise IntegrityError(f"blob {digest} is damaged (bad header)")
            if codec == _RAW_ALIGNED:
                f.seek(ALIGNED_OFFSET)
            if codec != _ZSTD and os.fstat(f.fileno()).st_size - f.tell() != size:
                raise IntegrityError(f"blob {digest} is damaged (truncated)")
        except BaseException:
            f.close()
            raise
        return f, codec, size

    def get_view(self, digest: str) -> memoryview:
        """Like ``get``, but a writable view of one buffer filled straight from the file.

        The payload is read in chunks that are hashed while still in the CPU's
        cache, so checking costs little more than reading; nothing is copied again.
        """
        f, codec, size = self._open(digest)
        with f:
            stored = os.fstat(f.fileno()).st_size - f.tell()
            view = memoryview(_uninitialised(stored)).cast("B")
            hasher = xxhash.xxh3_128()
            got = 0
            while got < stored:
                n = f.readinto(view[got:got + _READ_CHUNK])
                if not n:
                    raise IntegrityError(f"blob {digest} is damaged (truncated)")
                if codec != _ZSTD:
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

    def map_private(self, digest: str) -> memoryview | None:
        """The payload of an aligned raw blob, mapped copy-on-write (writes stay in this
        process); None for other blobs (compressed ones cannot be mapped). Nothing is read
        but the header: ``check`` the hash before anything in the payload is used."""
        f, codec, size = self._open(digest)
        with f:
            if codec != _RAW_ALIGNED or size == 0:
                return None
            mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        return memoryview(mapped)[ALIGNED_OFFSET:]

    def check(self, digest: str) -> None:
        """Read the blob through a small buffer and compare it with its name; IntegrityError
        if it is missing or damaged. For mapped blobs: the whole file is never held at once."""
        f, codec, size = self._open(digest)
        with f:
            if codec == _ZSTD:
                self.get_view(digest)
                return
            hasher, got = xxhash.xxh3_128(), 0
            buffer = memoryview(bytearray(_READ_CHUNK))
            while n := f.readinto(buffer):
                hasher.update(buffer[:n])
                got += n
        if got != size:
            raise IntegrityError(f"blob {digest} is damaged (truncated)")
        if hasher.hexdigest() != digest:
            raise IntegrityError(f"blob {digest} is damaged (content does not match its hash)")

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
            if sub.name.startswith(".stream.") and sub.name.endswith(".tmp"):  # an interrupted put_streamed
                try:
                    if sub.stat().st_mtime <= cutoff:
                        sub.unlink()
                except FileNotFoundError:
                    pass
                continue
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
                    self._touched.pop(digest, None)
                    removed += 1
                except FileNotFoundError:
                    continue
        return removed


def open_blobs(home: Path, settings) -> BlobStore:
    """The blob store of ``home``: blob files in ``home/blobs`` when ``settings.blobs_url`` is
    empty (the embedded default), else S3-compatible object storage at that URL, with
    ``home/blobs`` as its local cache (``pipulate.team.s3``)."""
    if not settings.blobs_url:
        return BlobStore(Path(home) / "blobs", compress=settings.compress)
    from .team.s3 import S3BlobStore  # only the team backend needs s3fs

    return S3BlobStore(settings.blobs_url, Path(home) / "blobs", compress=settings.compress)
