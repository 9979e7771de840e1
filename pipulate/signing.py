"""Signing of pickled data with a key only this workstation holds.

Unpickling runs code, so a pickle is only loaded after its HMAC-SHA256 checks
out against ``secret.key`` in the data folder (mode 0600, made on first use).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

from .errors import UntrustedDataError

KEY_FILE = "secret.key"
MAGIC = b"PPSIG1"
_DIGEST_SIZE = hashlib.sha256().digest_size
HEADER_SIZE = len(MAGIC) + _DIGEST_SIZE


def write_private_file(path: Path, data: bytes) -> None:
    """``data`` in a new file only its owner reads (0600), on disk when this returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_key(home: Path) -> bytes:
    """Read the workstation key, creating it (0600, atomically) the first time."""
    path = Path(home) / KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        # One temporary file per thread: threads of one process (a web server's first
        # requests) must not overwrite each other's key between write and link.
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        write_private_file(tmp, key)
        try:
            # link() fails if another process made the key first: then use theirs.
            os.link(tmp, path)
        except FileExistsError:
            key = path.read_bytes()
        finally:
            os.unlink(tmp)
    if len(key) < 32:
        raise UntrustedDataError(f"the signing key {path} is damaged (only {len(key)} bytes)")
    return key


class Signer:
    """Prefixes data with a MAC and checks it before anything is loaded."""

    def __init__(self, key: bytes):
        self._key = key

    def sign(self, data: bytes | memoryview) -> bytes:
        mac = hmac.new(self._key, data, hashlib.sha256).digest()
        return MAGIC + mac + bytes(data)

    def verify(self, signed: bytes | memoryview, what: str = "value") -> memoryview:
        """The payload of ``signed``; raises UntrustedDataError naming ``what``."""
        view = memoryview(signed)
        if len(view) < HEADER_SIZE or view[: len(MAGIC)] != MAGIC:
            raise UntrustedDataError(f"{what}: pickled data is not signed; refusing to unpickle it")
        mac, payload = view[len(MAGIC):HEADER_SIZE], view[HEADER_SIZE:]
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(bytes(mac), expected):
            raise UntrustedDataError(
                f"{what}: pickled data was altered or signed with another key; refusing to unpickle it")
        return payload
