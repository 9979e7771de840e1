"""Bringing a saved version back into a namespace, one variable at a time.

Every blob's hash is checked before it is decoded and every pickle's signature
before it is unpickled (``BlobStore.get_view``, ``Signer.verify``). A variable
whose blob is missing, damaged, altered or undecodable is left out with a
message naming it; the others are restored. Modules are imported again by
name; arrays are rebuilt over the bytes read from disk without another copy, and big
ones (and big frame columns, and the big out-of-band buffers of pickles: ``buffers``) are
mapped instead of read, their checks made after the restore (``lazy``).
"""
from __future__ import annotations

import importlib
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import xxhash

from .. import codecs
from ..errors import IntegrityError, UntrustedDataError
from . import buffers, formats, frames, lazy
from .pickling import MissingReference, loads, restoring_into
from .store import Entry, KernelStateStore, Manifest, blobs_of


@dataclass
class RestoreResult:
    manifest: Manifest
    restored: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)  # {name, reason}: damaged, refused, undecodable
    rebuilt: list[str] = field(default_factory=list)  # not stored; made again by their cells (replay)
    failed_rebuilds: list[dict] = field(default_factory=list)  # {name, reason}
    mapped: dict[str, list[str]] = field(default_factory=dict)  # {name: blobs} mapped, not checked yet (``lazy``)
    memos: dict = field(default_factory=dict)  # {name: frames.FrameMemo} of frames restored mapped

    @property
    def skipped(self) -> list[dict]:
        """Skipped when saved, plus lost on restore."""
        return list(self.manifest.skipped) + self.failed


PREFETCH_BYTES = 1024 * 1024
# Threads reading big blobs: four keep a disk busy from a cold cache (two did not).
READERS = 4
# Small blobs read before the big read-ahead starts, at most this much in all.
SMALL_READS_BYTES = 64 * 1024 * 1024
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def decode_entry(store: KernelStateStore, entry: Entry, ns: dict, view=None, values: dict | None = None):
    what = f"variable {entry.name!r}"
    if entry.format == formats.MODULE:
        name = str(entry.value)
        if not _MODULE_NAME.fullmatch(name) or name == "__main__":
            raise IntegrityError(f"{what}: {name[:80]!r} is not a module name; not imported")
        # The manifest row is checked like a blob: an altered name is never imported.
        if xxhash.xxh3_128_hexdigest(f"module:{name}".encode()) != entry.content_hash:
            raise IntegrityError(f"{what}: its module name is damaged (it does not match its hash); not imported")
        return importlib.import_module(name)
    if entry.blob is None:
        if entry.value is None:
            raise IntegrityError(f"{what}: its stored value is missing")
        data = entry.value.encode("utf-8", "surrogatepass") if isinstance(entry.value, str) else entry.value
        # An inline value has no blob whose name checks it: its content hash does.
        if xxhash.xxh3_128_hexdigest(data) != entry.content_hash:
            raise IntegrityError(f"{what}: its stored value is damaged (it does not match its hash)")
        return codecs.decode(entry.format, data, store.signer, what)
    if entry.format == frames.FRAME:
        return _decode_frame(store, entry, view)
    if entry.format == codecs.PICKLE:
        views = _resolved(store, entry, view)
        # Before anything is unpickled: the signature, and the buffer list signed with it.
        payload = buffers.split_body(store.signer.verify(views[0], what), entry.parts, what)
        with restoring_into(ns):
            return loads(payload, values if values is not None else {}, views[1:])
    if view is None:
        view = store.blobs.get_view(entry.blob)
    else:
        view = view.result()
    if entry.format == codecs.NPY:
        return formats.decode_npy(view)
    if entry.format == codecs.ARROW:
        return formats.decode_frame(view)
    return codecs.decode(entry.format, view, store.signer, what)


def _decode_frame(store: KernelStateStore, entry: Entry, ahead=None):
    parts = list(entry.parts or [])
    # The manifest row vouches for the column list: an altered or missing one is caught here.
    if frames.content_hash(entry.blob, parts) != entry.content_hash:
        raise IntegrityError(f"variable {entry.name!r}: its list of column blobs is damaged or missing")
    if isinstance(ahead, Future):  # decoded over its mapped columns already (``lazy``)
        return ahead.result()
    views = _resolved(store, entry, ahead)
    return frames.decode(views[0], views[1:])


def _resolved(store: KernelStateStore, entry: Entry, ahead) -> list:
    """The views of the blob of ``entry`` and of its parts (a frame's columns, a pickle's
    out-of-band buffers): from ``ahead`` (a future, or a list of futures or None, as
    ``_views`` makes them) where it has them, the others read and checked now."""
    names = [entry.blob] + list(entry.parts or [])
    if not isinstance(ahead, list):
        ahead = [ahead] + [None] * (len(names) - 1)
    return [f.result() if f is not None else store.blobs.get_view(blob) for f, blob in zip(ahead, names)]


def _read_ahead(entry: Entry) -> bool:
    """Whether the blobs of ``entry`` are read by the reader threads, ahead of decoding."""
    return entry.blob is not None and entry.size >= PREFETCH_BYTES


def _views(entry: Entry, read):
    """``read(blob)`` for the blob of ``entry``, or a list for a frame's blob and columns (a
    pickle's blob and buffers)."""
    if entry.format == frames.FRAME or entry.parts:
        return [read(b) for b in [entry.blob] + list(entry.parts or [])]
    return read(entry.blob)


def _read_now(store: KernelStateStore, blob: str) -> Future:
    """A finished future of the blob's view; a failure stays in it, for the decoding to report."""
    future = Future()
    try:
        future.set_result(store.blobs.get_view(blob))
    except Exception as exc:
        future.set_exception(exc)
    return future


def restore(store: KernelStateStore, notebook: str, ns: dict, version: int | None = None,
            mapped_unchecked: bool = False) -> RestoreResult:
    """Load ``version`` (latest if None) of ``notebook`` into ``ns``; KeyError if none.

    ``mapped_unchecked``: map big raw arrays instead of reading them, and leave their hash
    checks to the caller (``result.mapped``; the extension's ``lazy.Checks``)."""
    manifest = store.manifest(notebook, version)
    result = RestoreResult(manifest)
    primaries = [e for e in manifest.entries if e.alias_of is None]
    values = {}
    # Modules first (unpickled code that runs at load time may want them), imported
    # before any thread starts (imports are not for threads).
    modules = sorted((e for e in primaries if e.format == formats.MODULE), key=lambda e: e.name)
    _decode_all(store, modules, ns, values, result, {})
    rest = [e for e in primaries if e.format != formats.MODULE]
    if any(e.format in (codecs.NPY, codecs.ARROW, codecs.ARROW_SERIES, frames.FRAME) for e in rest):
        import numpy  # noqa: F401  (here, not half-imported by a reader thread)
    # Order: small values, then big ones, then pickles (a pickle may refer to other
    # variables, which are seldom pickles). The small ones' few reads are made first:
    # from a cold cache, a small read behind the big read-ahead waited ~100 ms. They are
    # decoded while the big blobs come in.
    rest.sort(key=lambda e: (e.format == codecs.PICKLE, _read_ahead(e), e.name))
    ahead = _read_small_now(store, [e for e in rest if not _read_ahead(e)])
    # Big raw arrays and frame columns are mapped, not read: their checks run after the
    # restore (``lazy``).
    mapped = lazy.map_arrays(store.blobs, rest) if mapped_unchecked else {}
    ahead.update((name, m.ahead) for name, m in mapped.items())
    # Ask the system for every big blob at once, in the order they are decoded: from a
    # cold cache the disk then gets deep queues, not one 4 MiB read per thread.
    big = blobs_of([e for e in rest if _read_ahead(e) and e.name not in mapped])
    if big:
        threading.Thread(target=store.blobs.prefetch, args=(big,), name="pipulate-restore-readahead",
                         daemon=True).start()
    with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="pipulate-restore") as pool:
        # Big blobs are read and hash-checked by the reader threads ahead of decoding (I/O and
        # xxh3 release the GIL); decoding (unpickling) stays on this thread.
        for entry in rest:
            if _read_ahead(entry) and entry.name not in mapped:
                ahead[entry.name] = _views(entry, lambda blob: pool.submit(store.blobs.get_view, blob))
        _decode_all(store, rest, ns, values, result, ahead)
    _finish(manifest, values, ns, result)
    result.mapped = {name: m.blobs for name, m in mapped.items() if name in values}
    result.memos = {name: m.memo for name, m in mapped.items() if name in values and m.memo is not None}
    return result


def _read_small_now(store: KernelStateStore, entries: list[Entry]) -> dict:
    """Read the blobs of these small entries (up to SMALL_READS_BYTES in all), and the
    signing key, now. Returns finished futures by name."""
    chosen, budget = [], SMALL_READS_BYTES
    for entry in entries:
        if entry.blob is not None and entry.size <= budget:
            chosen.append(entry)
            budget -= entry.size
    # All asked for at once, then read: from a cold cache the disk serves them together.
    small = blobs_of(chosen)
    if small:
        store.blobs.prefetch(small)
    done = {e.name: _views(e, lambda blob: _read_now(store, blob)) for e in chosen}
    # The key file too (every inline value's decoding is handed the signer): read after the
    # read-ahead, it waited 435 ms for the 1 GiB namespace from a cold cache.
    store.signer  # noqa: B018
    return done


def _decode_all(store, primaries, ns, values, result, ahead):
    # A pickle may hold another variable that is itself a pickle (a frame Arrow refused
    # after its plan): it waits, and is decoded again once that one is restored.
    waiting: list[Entry] = []
    names = {e.name for e in primaries}
    for entry in primaries:
        _decode_one(store, entry, ns, values, result, ahead, names, waiting)
    while waiting:
        retry, waiting = waiting, []
        for entry in retry:
            _decode_one(store, entry, ns, values, result, ahead, names, waiting)
        if len(waiting) == len(retry):  # no progress: a cycle, or a variable that failed
            for entry in waiting:
                _decode_one(store, entry, ns, values, result, ahead, set(), [])
            break


def _decode_one(store, entry, ns, values, result, ahead, pending: set, waiting: list) -> None:
    """Decode ``entry`` into ``ns``, or append it to ``waiting`` if it holds a variable
    of ``pending`` not decoded yet."""
    try:
        values[entry.name] = decode_entry(store, entry, ns, ahead.get(entry.name), values)
    except MissingReference as exc:
        if exc.name in pending and exc.name not in values and exc.name != entry.name:
            waiting.append(entry)
            return
        result.failed.append({"name": entry.name, "reason": f"cannot be decoded ({exc})"[:300]})
    except UntrustedDataError as exc:
        result.failed.append({"name": entry.name, "reason": _strip(str(exc), entry.name)})
    except IntegrityError as exc:
        result.failed.append({"name": entry.name, "reason": _strip(str(exc), entry.name)})
    except Exception as exc:
        result.failed.append({"name": entry.name,
                              "reason": f"cannot be decoded ({type(exc).__name__}: {exc})"[:300]})
    else:
        ns[entry.name] = values[entry.name]
        result.restored.append(entry.name)
    ahead.pop(entry.name, None)  # drop the read buffer reference as soon as it is used


def _finish(manifest, values, ns, result):
    for entry in manifest.entries:
        if entry.alias_of is None:
            continue
        if entry.alias_of in values:
            ns[entry.name] = values[entry.alias_of]
            result.restored.append(entry.name)
        else:
            result.failed.append({"name": entry.name, "reason": f"same object as {entry.alias_of!r}, which was lost"})
    result.restored.sort()
    return result


def _strip(message: str, name: str) -> str:
    prefix = f"variable {name!r}: "
    return message[len(prefix):] if message.startswith(prefix) else message
