"""Blobs in S3-compatible object storage (fsspec/s3fs), with the home's blob files as a cache.

The bucket is the truth; ``home/blobs`` holds the same files ``BlobStore`` writes (same
names, same format), so everything that works on blob files - hash checks on every read,
mapped lazy restores, read-ahead - works unchanged on the cached copies.

- ``put*`` writes the local file, then uploads it before returning: the caller commits
  the record that names a blob only after that, so an upload that dies leaves no record
  naming it (an S3 PUT, multipart ones included, is whole or absent).
- A read uses the cached file; a missing one is downloaded to a temporary name, renamed
  into the cache and checked against its hash (dropped if damaged); every read checks
  the file's hash again, as for every blob file.
- ``exists``, ``touch`` and ``collect`` ask the bucket. ``touch`` refreshes an old object's
  LastModified (a copy onto itself) so that garbage collection's grace period covers it.
- Every request is bounded (connect and read timeouts, few retries); a server that cannot
  be reached is one line of ``StoreUnavailableError`` naming the URL, and the next call
  after it is back works (connections are made again as needed).

Endpoint and credentials come from where the AWS tools and fsspec read them: the
``AWS_*`` variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL``, ...), ``~/.aws/config`` and ``~/.aws/credentials``, and fsspec's
``FSSPEC_S3_*`` variables (``FSSPEC_S3_ENDPOINT_URL``, ...), which win over the others.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from ..blobs import _FOUND, _NAME, BlobStore
from ..errors import IntegrityError, StoreUnavailableError

CONNECT_TIMEOUT = 5.0  # seconds to open a connection
READ_TIMEOUT = 60.0  # seconds without a byte from the server (not for the whole blob)
ATTEMPTS = 2  # botocore's tries per request, and s3fs's own around them
# An object older than this when a writer finds it is copied onto itself (LastModified
# becomes now), well within garbage collection's default grace (an hour).
REFRESH_AFTER_SECONDS = 600.0

_FILESYSTEMS: dict[int, object] = {}  # pid -> s3fs filesystem (fsspec's is not fork-safe)
_LOCK = threading.Lock()


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at the ends)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"PIPULATE_BLOBS_URL must look like s3://bucket/prefix, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"PIPULATE_BLOBS_URL takes no ?query or #fragment, got {url!r}")
    return parts.netloc, parts.path.strip("/")


def filesystem():
    """This process's s3fs filesystem, made on first use (after a fork: again)."""
    pid = os.getpid()
    fs = _FILESYSTEMS.get(pid)
    if fs is None:
        with _LOCK:
            fs = _FILESYSTEMS.get(pid) or _make_filesystem()
            _FILESYSTEMS.clear()
            _FILESYSTEMS[pid] = fs
    return fs


def _make_filesystem():
    import fsspec.config
    import s3fs

    # fsspec reads FSSPEC_S3_* once, when it is imported; read them now, so that the
    # environment of this call counts.
    conf: dict = {}
    fsspec.config.set_conf_env(conf)
    options = dict(conf.get("s3", {}))
    config = {**options.pop("config_kwargs", {}), "connect_timeout": CONNECT_TIMEOUT,
              "read_timeout": READ_TIMEOUT, "retries": {"max_attempts": ATTEMPTS, "mode": "standard"}}
    fs = s3fs.S3FileSystem(**options, config_kwargs=config, skip_instance_cache=True,
                           use_listings_cache=False)
    fs.retries = ATTEMPTS
    return fs


def _unavailable_errors() -> tuple:
    from botocore.exceptions import BotoCoreError
    from fsspec.exceptions import FSTimeoutError

    return OSError, BotoCoreError, asyncio.TimeoutError, FSTimeoutError


class S3BlobStore(BlobStore):
    """``BlobStore``'s interface on a bucket; ``root`` is the local cache of blob files."""

    def __init__(self, url: str, root: Path, compress: bool = True):
        self.bucket, self.prefix = parse_url(url)
        self.url = url
        super().__init__(root, compress)
        # blob -> when this process last found it in the bucket (monotonic); its own
        # table, as "found" means in the bucket here, not on this disk.
        self._touched = _FOUND.setdefault(f"{url}\0{self._root}", {})

    def __repr__(self) -> str:
        return f"S3BlobStore({self.url!r}, cache={self._root!r})"

    def key(self, digest: str) -> str:
        self._file(digest)  # checks the name
        return "/".join(p for p in (self.bucket, self.prefix, digest[:2], digest[2:]) if p)

    @contextlib.contextmanager
    def _talking(self, doing: str):
        """Server failures -> one line of StoreUnavailableError naming the URL."""
        try:
            yield
        except (IntegrityError, StoreUnavailableError, FileNotFoundError):
            raise
        except _unavailable_errors() as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreUnavailableError(f"the blob store {self.url} cannot {doing}: {why}") from None

    # --- the bucket ---------------------------------------------------------------------

    def _stat(self, digest: str) -> dict | None:
        with self._talking(f"be read (blob {digest})"):
            try:
                return filesystem().info(self.key(digest))
            except FileNotFoundError:
                return None

    def exists(self, digest: str) -> bool:
        return self._stat(digest) is not None

    def touch(self, digest: str, within: float = 0.0) -> bool:
        """True if the blob is in the bucket; an old object gets a fresh LastModified, so
        that garbage collection (which spares young objects) leaves it to the writer who found it."""
        now = time.monotonic()
        if within and now - self._touched.get(digest, -within) < within:
            return True
        info = self._stat(digest)
        if info is None:
            self._touched.pop(digest, None)
            return False
        if _age(info) > REFRESH_AFTER_SECONDS:
            bucket, _, key = self.key(digest).partition("/")
            with self._talking(f"be written (blob {digest})"):
                filesystem().call_s3("copy_object", Bucket=bucket, Key=key, MetadataDirective="REPLACE",
                                     CopySource={"Bucket": bucket, "Key": key})
        self._remember(digest, now)
        return True

    def _remember(self, digest: str, when: float) -> None:
        if len(self._touched) >= 100_000:
            self._touched.clear()
        self._touched[digest] = when

    def _upload(self, digest: str) -> None:
        with self._talking(f"be written (blob {digest})"):
            try:
                filesystem().put_file(self.path(digest), self.key(digest))
            except FileNotFoundError:  # the file is ours and there: the bucket is not
                raise StoreUnavailableError(
                    f"the blob store {self.url} cannot be written: no bucket {self.bucket!r}") from None
        self._remember(digest, time.monotonic())

    def put_chunks(self, chunks, digest: str | None = None, compress: bool | None = None) -> str:
        started = time.monotonic()
        digest = super().put_chunks(chunks, digest, compress)  # returns early if in the bucket
        if self._touched.get(digest, -1.0) < started:
            self._upload(digest)
        return digest

    def put_streamed(self, produce) -> tuple[str, bool, int]:
        digest, new, size = super().put_streamed(produce)
        if new:
            self._upload(digest)
        return digest, new, size

    # --- reading: through the cache -----------------------------------------------------

    def _fetch(self, digest: str) -> None:
        """Download the blob into the cache unless it is there, and check it; IntegrityError
        if the bucket's copy is missing or damaged (then nothing is left in the cache)."""
        path = self.path(digest)
        if path.exists():
            return
        with _fetching(path):  # one download per blob, whichever threads want it
            if not path.exists():
                self._download(digest, path)

    def _download(self, digest: str, path: Path) -> None:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}.tmp")
        try:
            with self._talking(f"be read (blob {digest})"):
                filesystem().get_file(self.key(digest), str(tmp))
            os.replace(tmp, path)
        except FileNotFoundError:
            raise IntegrityError(f"blob {digest} is missing (not in {self.url})") from None
        finally:
            tmp.unlink(missing_ok=True)
        try:
            # Checked once here, so that a copy damaged in the bucket does not stay in the
            # cache after the bucket's is mended (readers check it again anyway).
            super().check(digest)
        except IntegrityError:
            path.unlink(missing_ok=True)
            raise

    def _open(self, digest: str):
        self._fetch(digest)
        return super()._open(digest)

    def prefetch(self, digests, limit: int | None = None) -> int:
        """Download the blobs the cache lacks (up to ``limit`` bytes), then read ahead as
        ``BlobStore.prefetch`` does. Blobs that cannot be had are left to the read to report."""
        digests = list(digests)
        for digest in digests:
            try:
                self._fetch(digest)
            except (IntegrityError, StoreUnavailableError, ValueError):
                continue
        return super().prefetch(digests) if limit is None else super().prefetch(digests, limit)

    def size_on_disk(self, digest: str) -> int:
        size = super().size_on_disk(digest)
        if size:
            return size
        try:
            info = self._stat(digest)
        except StoreUnavailableError:
            return 0
        return int(info["size"]) if info else 0

    # --- garbage collection -----------------------------------------------------------

    def names(self) -> dict[str, dict]:
        """Every blob in the bucket: name -> its listing (size, LastModified)."""
        root = "/".join(p for p in (self.bucket, self.prefix) if p)
        with self._talking("be listed"):
            try:
                found = filesystem().find(root, detail=True)
            except FileNotFoundError:
                return {}
        names = {}
        for key, info in found.items():
            head, _, tail = key[len(root) + 1:].partition("/")
            if len(head) == 2 and "/" not in tail and _NAME.fullmatch(head + tail):
                names[head + tail] = info
        return names

    def collect(self, referenced: set[str], grace_seconds: float = 3600.0) -> int:
        """Delete the bucket's blobs no one references and older than ``grace_seconds``
        (and their cached files); returns how many left the bucket."""
        doomed = [d for d, info in self.names().items()
                  if d not in referenced and _age(info) >= grace_seconds]
        if doomed:
            with self._talking("delete blobs"):
                filesystem().rm([self.key(d) for d in doomed])
        for digest in doomed:
            self._touched.pop(digest, None)
            self.path(digest).unlink(missing_ok=True)
        super_touched, self._touched = self._touched, {}  # the cache's sweep must not forget bucket finds
        try:
            super().collect(referenced, grace_seconds)
        finally:
            self._touched = super_touched
        return len(doomed)


_DOWNLOADS: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def _fetching(path: Path):
    key = str(path)
    with _LOCK:
        lock = _DOWNLOADS.setdefault(key, threading.Lock())
    try:
        with lock:
            yield
    finally:
        with _LOCK:
            if not lock.locked():
                _DOWNLOADS.pop(key, None)


def _age(info: dict) -> float:
    """Seconds since the object was last written, by its LastModified."""
    modified = info.get("LastModified") or info.get("last_modified")
    if modified is None:
        return 0.0
    if isinstance(modified, str):
        modified = dt.datetime.fromisoformat(modified.replace("Z", "+00:00"))
    return dt.datetime.now(dt.timezone.utc).timestamp() - modified.timestamp()
