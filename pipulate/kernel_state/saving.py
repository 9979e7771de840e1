"""Saving a kernel's namespace as a new version, writing only what changed.

One ``Saver`` lives in each kernel. It remembers, per variable, the object it
saved last time and that object's manifest entry. A save:

1. picks the candidates (``__persist__`` / ``__skip_persist__``; never IPython's
   own names, dunders or IPython objects);
2. groups names bound to the very same object (``b = a``): one entry, the others
   recorded as aliases of it, so ``b is a`` holds after a restore;
3. stores first the values others may hold (arrays, frames, plain containers:
   ``sharing_targets``); a pickled value holding one of them refers to it by
   name (``pickling.SharingPickler``), so ``c[0] is a`` holds after a restore;
4. for each group: reuses the previous entry of a big untouched value
   (``changes``), else computes its content hash (``formats.prepare``) and
   writes a blob only if that hash differs from last time (big blobs on two
   writer threads);
5. commits the manifest in one transaction (``KernelStateStore.commit_version``)
   after every blob is fsynced on disk - unless nothing changed since the
   latest version, in which case no version is made.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from .. import codecs
from . import changes, formats
from .store import Entry, KernelStateStore, manifest_checksum

IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "_ih", "_oh", "_dh", "_sh", "_exit_code",
                 "__persist__", "__skip_persist__", "__pipulate_notebook__"}
PARALLEL_WRITE_BYTES = 1024 * 1024
_WRITERS: tuple[int, ThreadPoolExecutor] | None = None
_WRITERS_LOCK = threading.Lock()
_IMMUTABLE_ATOMS = (int, float, complex, str, bytes, bool, type(None))
_IPYTHON_PATTERN = re.compile(r"^(_+|_i+|_i\d+|_\d+|__.*__)$")


@dataclass
class Cached:
    obj: Any
    entry: Entry
    signature: Any
    big: bool
    deps: dict = field(default_factory=dict)  # variables its pickle refers to: {name: id}


@dataclass
class SaveResult:
    version: int | None  # the new version, or the latest when nothing changed
    created: bool  # False when nothing changed since the latest version
    written: list[str] = field(default_factory=list)  # variables whose blobs were written
    skipped: list[dict] = field(default_factory=list)
    variable_count: int = 0
    seconds: float = 0.0


def is_ipython_name(name: str) -> bool:
    return name in IPYTHON_NAMES or bool(_IPYTHON_PATTERN.match(name))


def candidates(ns: dict, hidden: dict | None = None) -> tuple[dict, list[dict]]:
    """The variables to save, and those refused up front with the reason."""
    hidden = hidden or {}
    skipped: list[dict] = []
    names = [n for n in ns if isinstance(n, str) and not is_ipython_name(n)
             and not (n in hidden and hidden[n] is ns[n])]
    persist = ns.get("__persist__")
    if persist is not None:
        if isinstance(persist, str) or not all(isinstance(p, str) for p in _iterable(persist)):
            skipped.append({"name": "__persist__", "reason": "must be a list of variable names; ignored"})
        else:
            wanted = set(persist)
            names = [n for n in names if n in wanted]
    skip = ns.get("__skip_persist__")
    if skip is not None:
        if isinstance(skip, str) or not all(isinstance(p, str) for p in _iterable(skip)):
            skipped.append({"name": "__skip_persist__", "reason": "must be a list of variable names; ignored"})
        else:
            names = [n for n in names if n not in set(skip)]
    return {n: ns[n] for n in names}, skipped


def _iterable(value) -> list:
    try:
        return list(value)
    except TypeError:
        return [None]


class Saver:
    """Saves one notebook's kernel namespace; keeps what it saved last for incremental saves."""

    def __init__(self, store: KernelStateStore, notebook: str, name: str):
        self.store = store
        self.notebook = notebook
        self.name = name
        self.cache: dict[str, Cached] = {}
        # id -> (container, holds another variable's object?): a big list untouched by
        # the cell is not walked again.
        self._holds: dict[int, tuple[Any, bool]] = {}

    def prime(self, ns: dict, entries: list[Entry]) -> None:
        """After a restore: the restored objects are what the version holds."""
        self.cache = {}
        for e in entries:
            if e.name in ns and e.alias_of is None:
                value = ns[e.name]
                try:
                    size = formats.estimated_size(value) or e.size
                    signature = formats.shape_signature(value)
                except Exception:  # not remembered: the next save checks it in full
                    continue
                self.cache[e.name] = Cached(value, e, signature, size >= changes.BIG_BYTES)

    def save(self, ns: dict, hidden: dict | None = None, cell: str | None = None,
             full: bool = False) -> SaveResult:
        started = time.perf_counter()
        settings = self.store.settings
        values, skipped = candidates(ns, hidden)
        touched = None if full else changes.touched_ids(ns, changes.mentioned_names(cell))

        groups: dict[object, list[str]] = {}
        for name in sorted(values):
            value = values[name]
            # Identity matters only for objects that can change; equal small ints or
            # interned strings sharing an object are not aliases in the user's mind.
            key = name if type(value) in _IMMUTABLE_ATOMS else id(value)
            groups.setdefault(key, []).append(name)

        new_cache: dict[str, Cached] = {}
        written: list[str] = []
        pending: list[tuple[Entry, Future]] = []
        done: list[tuple[list[str], Entry]] = []
        primaries = {names[0]: values[names[0]] for names in groups.values()}
        targets = sharing_targets(primaries, self._holds, touched)
        # Variables others may hold (arrays, frames, plain containers) are stored first;
        # those that got a format of their own become references for the pickles after.
        ordered = sorted(groups.values(), key=lambda names: id(primaries[names[0]]) not in targets)
        refs: dict[int, str] = {}
        for names in ordered:
            primary, value = names[0], values[names[0]]
            is_target = id(value) in targets
            try:
                entry, cached = self._entry_for(primary, value, ns, touched, settings, written, pending,
                                                None if is_target else refs, primaries)
            except formats.Unsaveable as exc:
                skipped.extend({"name": n, "reason": str(exc)} for n in names)
                continue
            except Exception as exc:  # a value that breaks even isinstance (a dead weakref.proxy)
                reason = f"cannot be saved ({type(exc).__name__}: {formats._reason(exc)})"
                skipped.extend({"name": n, "reason": reason} for n in names)
                continue
            if is_target and entry.format not in (codecs.PICKLE, formats.MODULE):
                refs[id(value)] = primary
            done.append((names, entry))
            new_cache[primary] = cached
        done.sort(key=lambda item: item[0][0])
        # Every blob is on disk (fsynced) before the manifest that names it is committed.
        wait([f for _, f in pending])
        for entry, future in pending:
            entry.blob = future.result()
        entries: list[Entry] = []
        for names, entry in done:
            entries.append(entry)
            entries.extend(replace(entry, name=n, alias_of=names[0]) for n in names[1:])

        result = SaveResult(None, False, written, skipped, len(entries))
        latest = self.store.latest_version(self.notebook)
        if latest is not None:
            rows = self.store.db.rows(
                "SELECT checksum, skipped FROM kernel_versions WHERE notebook = ? AND version = ?",
                (self.notebook, latest))
            if rows and rows[0][0] == manifest_checksum(entries) and _same_skipped(rows[0][1], skipped):
                self.cache = new_cache
                result.version = latest
                result.seconds = time.perf_counter() - started
                return result
        if latest is None and not entries and not skipped:
            result.seconds = time.perf_counter() - started
            return result  # nothing to save and nothing saved before: no empty first version
        manifest = self.store.commit_version(self.notebook, self.name, entries, skipped)
        self.cache = new_cache
        result.version, result.created = manifest.version, True
        result.seconds = time.perf_counter() - started
        return result

    def _writer(self) -> ThreadPoolExecutor:
        # Big blobs are written by two threads while the next variable is hashed:
        # xxh3, Arrow and file writes release the GIL, so they overlap. One pool per
        # process, made on first use.
        global _WRITERS
        with _WRITERS_LOCK:
            if _WRITERS is None or _WRITERS[0] != os.getpid():  # a forked child makes its own
                _WRITERS = (os.getpid(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="pipulate-save"))
            return _WRITERS[1]

    def _entry_for(self, primary, value, ns, touched, settings, written, pending, refs, primaries):
        """The manifest entry of one variable (and what to remember of it).

        ``refs`` is None for a variable others may refer to (it is stored on its
        own, JSON allowed); else the references its pickle may use.
        """
        cached = self.cache.get(primary)
        signature = None
        if cached is not None and cached.obj is value and cached.big and cached.entry.format != formats.MODULE:
            signature = formats.shape_signature(value)
            if (touched is not None and signature == cached.signature
                    and not (id(value) in touched) and self._still_stored(cached.entry)
                    and all(refs is not None and refs.get(i) == n for n, i in cached.deps.items())):
                return replace(cached.entry, name=primary, alias_of=None), cached
        estimate = formats.estimated_size(value)
        if estimate is not None and estimate > settings.max_variable_bytes:
            raise formats.Unsaveable(
                f"larger than max_variable_bytes ({estimate} > {settings.max_variable_bytes} bytes)")
        json_ok = refs is None or not _holds_any(value, refs, primaries)
        prepared = formats.prepare(value, ns, self.store.signer, settings.inline_limit,
                                   refs=refs, json_ok=json_ok)
        if prepared.size > settings.max_variable_bytes:
            raise formats.Unsaveable(
                f"larger than max_variable_bytes ({prepared.size} > {settings.max_variable_bytes} bytes)")
        previous = cached.entry if cached is not None else None
        if (previous is not None and previous.content_hash == prepared.content_hash
                and previous.format == prepared.format and self._still_stored(previous)):
            entry = replace(previous, name=primary, alias_of=None, type=prepared.type)
        elif prepared.payload is not None and prepared.size >= PARALLEL_WRITE_BYTES:
            entry = prepared.entry(primary, None)
            pending.append((entry, self._writer().submit(formats.write, prepared, self.store.blobs)))
            written.append(primary)
        else:
            blob = formats.write(prepared, self.store.blobs)
            if blob is not None:
                written.append(primary)
            entry = prepared.entry(primary, blob)
        size = estimate if estimate is not None else prepared.size
        if signature is None:
            signature = formats.shape_signature(value)
        return entry, Cached(value, entry, signature, size >= changes.BIG_BYTES,
                             prepared.extra.get("deps", {}))

    def _still_stored(self, entry: Entry) -> bool:
        """The entry's blob is on disk; touched so garbage collection's grace period covers it."""
        if entry.blob is None:
            return True
        try:
            os.utime(self.store.blobs.path(entry.blob))
            return True
        except OSError:
            return False


_CONTAINERS = (list, dict, set, frozenset, tuple)
MAX_SHARING_WALK = 2_000_000  # items looked at per container


def sharing_targets(primaries: dict, memo: dict | None = None, touched: set | None = None) -> set[int]:
    """ids of variables that other variables' values may hold and refer to.

    Arrays and frames, and plain containers (list, dict, set) that hold none of
    the others - those holding one are pickled with a reference instead. ``memo``
    keeps each container's answer while the cell leaves it alone (``touched``).
    """
    np = sys.modules.get("numpy")
    pd = sys.modules.get("pandas")
    targets: set[int] = set()
    containers = []
    for value in primaries.values():
        kind = type(value)
        if np is not None and kind is np.ndarray and not value.dtype.hasobject:
            targets.add(id(value))
        elif pd is not None and kind in (pd.DataFrame, pd.Series):
            targets.add(id(value))
        elif kind in (list, dict, set):
            containers.append(value)
    ids = targets | {id(c) for c in containers}
    fresh: dict[int, tuple[Any, bool]] = {}
    for value in containers:
        known = memo.get(id(value)) if memo is not None else None
        if known is not None and known[0] is value and touched is not None and id(value) not in touched:
            holds = known[1]
        else:
            holds = _holds_any(value, ids)
        fresh[id(value)] = (value, holds)
        if not holds:
            targets.add(id(value))
    if memo is not None:
        memo.clear()
        memo.update(fresh)
    return targets


def _holds_any(value, ids, _unused=None) -> bool:
    """True if plain container ``value`` holds (at any depth) an object in ``ids``, or is too big to tell."""
    if type(value) not in _CONTAINERS:
        return False
    root = id(value)
    stack, seen = [value], 0
    while stack:
        obj = stack.pop()
        seen += len(obj) + 1
        if seen > MAX_SHARING_WALK:
            return True
        for item in (obj.items() if type(obj) is dict else obj):
            for part in (item if type(obj) is dict else (item,)):
                if id(part) in ids and id(part) != root:
                    return True
                if type(part) in _CONTAINERS:
                    stack.append(part)
    return False


def _same_skipped(stored: str, skipped: list[dict]) -> bool:
    import json

    try:
        return json.loads(stored) == skipped
    except (TypeError, ValueError):  # a damaged row: the next save makes a whole new version
        return False
