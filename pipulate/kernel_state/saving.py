"""Saving a kernel's namespace as a new version, writing only what changed.

One ``Saver`` lives in each kernel. A save has two halves, so that the slow one
can run after the cell, on a worker thread, while the next cells run:

``plan`` (on the kernel's thread, right after the cell; cheap):

1. picks the candidates (``__persist__`` / ``__skip_persist__``; never IPython's
   own names, dunders or IPython objects);
2. groups names bound to the very same object (``b = a``): one entry, the others
   recorded as aliases of it, so ``b is a`` holds after a restore;
3. plans first the values others may hold (arrays, frames, plain containers:
   ``sharing.sharing_targets``); a pickled value holding one of them refers to it by
   name (``pickling.SharingPickler``), so ``c[0] is a`` holds after a restore;
4. for each group: marks a big value the cell cannot have touched ``same``
   (``changes``); takes a copy-on-write snapshot of a DataFrame or Series
   (``frames``); encodes anything else now (JSON, pickle, an array's hash) and
   marks it ``same`` when its hash equals the last save's. Nothing planned can
   be changed by the cells that run next: pickles and JSON are bytes, a changed
   array is copied (or written at once when huge), a pandas snapshot is
   copy-on-write.

``run`` (anywhere, in the order the plans were made):

5. resolves ``same`` to the previous entry, encodes the snapshots (a big
   DataFrame one blob per column, only the columns not stored yet; a small one,
   or a Series, in one Arrow blob), writes new blobs (big ones on two writer
   threads), and commits the manifest in one transaction after every blob is
   fsynced on disk - unless nothing changed since the latest version, in which
   case no version is made.

``save`` does both at once. ``background.BackgroundSaves`` runs ``run`` on a
worker thread for the extension.
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
from . import buffers, changes, formats, frames, replay
from .atoms import Atoms, atoms_copy, holds_ref, same_atoms
from .sharing import ATOM_TYPES, IMMUTABLE_ATOMS, has_identity, holds_any, pickles_in_order, sharing_targets
from .background import thread_priority
from .store import Entry, KernelStateStore, manifest_checksum

IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "_ih", "_oh", "_dh", "_sh", "_exit_code",
                 "__persist__", "__skip_persist__", "__pipulate_notebook__"}
PARALLEL_WRITE_BYTES = 1024 * 1024
# A changed array up to this size is copied for the worker to write; a bigger one is
# written before the next cell may change it (a copy would cost as much as the write).
SNAPSHOT_COPY_BYTES = 64 * 1024 * 1024
# A DataFrame below this size is stored whole, in one blob: one blob per column pays
# (a new column writes one column) only when rewriting the frame would cost more
# than the files, fsyncs and rows of its columns.
SMALL_FRAME_BYTES = 1024 * 1024
_WRITERS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_WRITERS_LOCK = threading.Lock()
_IPYTHON_PATTERN = re.compile(r"^(_+|_i+|_i\d+|_\d+|__.*__)$")
SAME, PREPARED, SNAPSHOT = "same", "prepared", "snapshot"


@dataclass
class Planned:
    """What the cell left in one group of names, ready to be saved whatever runs next."""

    names: list[str]  # the primary first, then its aliases
    kind: str  # SAME, PREPARED or SNAPSHOT
    format: str
    prepared: formats.Prepared | None = None
    snapshot: Any = None  # a DataFrame's or Series' copy-on-write snapshot, encoded by ``run``
    blob: Any = None  # a huge array's blob, written while planning (a Future until then)


@dataclass
class Job:
    """One save: the plan of every group, in order."""

    items: list[Planned]
    skipped: list[dict]
    full: bool
    namespace: dict  # only to recognise the notebook's own functions in a fallback pickle
    started: float = field(default_factory=time.perf_counter)
    # How the variables that cannot be stored are rebuilt (``replay``): the cell of this
    # save, and the kernel's history of cells as it was right after it.
    step: replay.Step | None = None
    history: dict | None = None
    expected: dict = field(default_factory=dict)  # name -> why it is a recipe, not a value
    after: Any = None  # called once the version is committed (or found unneeded)


@dataclass
class Submitted:
    """What the last plan saw of one variable (the kernel thread's side)."""

    obj: Any
    signature: Any
    big: bool  # taken as unchanged while the cells leave it alone (big, or a pandas object)
    format: str
    content_hash: str | None = None  # None for frames: hashed by ``run``
    deps: dict = field(default_factory=dict)  # variables its pickle refers to: {name: id}
    atoms: Atoms | None = None  # a small container of immutable atoms: what it held


@dataclass
class SaveResult:
    version: int | None  # the new version, or the latest when nothing changed
    created: bool  # False when nothing changed since the latest version
    written: list[str] = field(default_factory=list)  # variables whose blobs were written
    skipped: list[dict] = field(default_factory=list)
    variable_count: int = 0
    seconds: float = 0.0


def _carried(previous: Entry, name: str, type_name: str) -> Entry:
    """``previous`` as the entry of unchanged ``name`` (entries are not changed once made)."""
    if previous.name == name and previous.alias_of is None and previous.type == type_name:
        return previous
    return replace(previous, name=name, alias_of=None, type=type_name)


def _only_when_touched(value, size: int) -> bool:
    """Checked again only after cells that may touch it: big values, and pandas objects
    of any size (their checks cost milliseconds)."""
    pd = sys.modules.get("pandas")
    return size >= changes.BIG_BYTES or (pd is not None and type(value) in (pd.DataFrame, pd.Series))


def is_ipython_name(name: str) -> bool:
    return name in IPYTHON_NAMES or bool(_IPYTHON_PATTERN.match(name))


def candidates(ns: dict, hidden: dict | None = None) -> tuple[dict, list[dict]]:
    """The variables to save, and those refused up front with the reason."""
    hidden = hidden or {}
    skipped: list[dict] = []
    # Hidden names first: IPython hides the ``_i<N>`` and ``_<N>`` it adds with every
    # cell, and a dict lookup is cheaper than the pattern.
    names = [n for n in ns if isinstance(n, str) and not (n in hidden and hidden[n] is ns[n])
             and not is_ipython_name(n)]
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
    """Saves one notebook's kernel namespace; keeps what it saved last for incremental saves.

    ``plan`` keeps ``submitted`` (what the kernel's thread saw); ``run`` keeps
    ``committed`` (the entries of the last version it made), ``unsaveable``
    (why a variable could not be saved) and ``memos`` (the frames it holds).
    """

    def __init__(self, store: KernelStateStore, notebook: str, name: str):
        self.store = store
        self.notebook = notebook
        self.name = name
        self.submitted: dict[str, Submitted] = {}
        self.committed: dict[str, Entry] = {}
        self.unsaveable: dict[str, str] = {}
        self.memos: dict[str, frames.FrameMemo] = {}
        self._last_checksum: str | None = None  # of the manifest this saver last committed or found
        self.last_entries: dict[str, Entry] = {}  # every entry (aliases too) of that version, by name
        # id -> (container, holds another variable's object?): a big list untouched by
        # the cell is not walked again.
        self._holds: dict[int, tuple[Any, bool]] = {}

    def reset(self) -> None:
        """Nothing saved before (after the notebook's state was cleared)."""
        self.submitted, self.committed, self.unsaveable, self.memos = {}, {}, {}, {}
        self._last_checksum = None
        self.last_entries = {}

    def forget(self) -> None:
        """Check every variable in full next time (after a failed save)."""
        self.submitted = {}
        self._last_checksum = None

    def prime(self, ns: dict, entries: list[Entry], memos: dict | None = None) -> None:
        """After a restore: the restored objects are what the version holds (``memos``: of the
        frames restored mapped, so that a save finds their unchanged columns without reading them)."""
        self.reset()
        self.memos = dict(memos or {})
        self.last_entries = {e.name: e for e in entries}
        for e in entries:
            if e.alias_of is not None:
                continue
            self.committed[e.name] = e
            if e.name in ns:
                value = ns[e.name]
                try:
                    size = formats.estimated_size(value) or e.size
                    signature = formats.shape_signature(value)
                except Exception:  # not remembered: the next save checks it in full
                    continue
                self.submitted[e.name] = Submitted(value, signature, _only_when_touched(value, size),
                                                   e.format, e.content_hash)

    def save(self, ns: dict, hidden: dict | None = None, cell: str | None = None,
             full: bool = False) -> SaveResult:
        """Plan and run a save now."""
        return self.run(self.plan(ns, hidden, cell=cell, full=full))

    # --- on the kernel's thread --------------------------------------------------------

    def plan(self, ns: dict, hidden: dict | None = None, cell: str | None = None,
             full: bool = False) -> Job:
        values, skipped = candidates(ns, hidden)
        touched = None if full else changes.touched_ids(ns, changes.mentioned_names(cell))

        groups: dict[object, list[str]] = {}
        for name in sorted(values):
            value = values[name]
            # Identity matters only for objects that can change; equal small ints or
            # interned strings sharing an object are not aliases in the user's mind.
            key = name if type(value) in IMMUTABLE_ATOMS else id(value)
            groups.setdefault(key, []).append(name)

        submitted: dict[str, Submitted] = {}
        items: list[Planned] = []
        writes: list[Future] = []
        primaries = {names[0]: values[names[0]] for names in groups.values()}
        targets = sharing_targets(primaries, self._holds, touched)
        # Variables others may hold (arrays, frames, plain containers) are planned first;
        # those that get a format of their own become references for the pickles after.
        # The pickles follow, each after the variables it holds, and become references
        # too: ``v1 = {"held": v0}; v4 = [v1]`` keeps ``v4[0] is v1``.
        ordered = [g for g in groups.values() if id(primaries[g[0]]) in targets]
        ordered += pickles_in_order([g for g in groups.values() if id(primaries[g[0]]) not in targets],
                                    primaries)
        refs: dict[int, str] = {}
        for names in ordered:
            primary, value = names[0], values[names[0]]
            is_target = id(value) in targets
            try:
                item, seen = self._plan_one(names, value, ns, touched, None if is_target else refs,
                                            primaries, writes)
            except formats.Unsaveable as exc:
                skipped.extend({"name": n, "reason": str(exc)} for n in names)
                continue
            except Exception as exc:  # a value that breaks even isinstance (a dead weakref.proxy)
                reason = f"cannot be saved ({type(exc).__name__}: {formats._reason(exc)})"
                skipped.extend({"name": n, "reason": reason} for n in names)
                continue
            # A restore resolves a reference once its variable is back. Not for objects whose
            # identity is the interpreter's (small ints, interned strings, the empty tuple):
            # a Fraction(1, 3) would refer to a variable that happens to hold 1.
            if item.format != formats.MODULE and has_identity(value):
                refs[id(value)] = primary
            items.append(item)
            submitted[primary] = seen
        # A huge changed array is on disk before the next cell can change it.
        wait(writes)
        for item in items:
            if isinstance(item.blob, Future):
                item.blob = item.blob.result()
        self.submitted = submitted
        items.sort(key=lambda item: item.names[0])
        return Job(items, skipped, full, ns)

    def _plan_one(self, names, value, ns, touched, refs, primaries, writes) -> tuple[Planned, Submitted]:
        """The plan of one group. ``refs`` is None for a variable others may refer to
        (it is stored on its own, JSON allowed); else the references its pickle may use."""
        settings = self.store.settings
        primary = names[0]
        cached = self.submitted.get(primary)
        signature = None
        # Taken as unchanged when the cell cannot have touched it (``_only_when_touched``).
        if cached is not None and cached.obj is value and cached.big and cached.format != formats.MODULE:
            signature = formats.shape_signature(value)
            if (touched is not None and signature == cached.signature and id(value) not in touched
                    and all(refs is not None and refs.get(i) == n for n, i in cached.deps.items())):
                return Planned(names, SAME, cached.format), cached
        if cached is not None and cached.obj is value and (type(value) in ATOM_TYPES or (
                same_atoms(value, cached.atoms) and not cached.deps
                and (refs is None or not holds_ref(cached.atoms, refs)))):
            # Holds what it held, and shares nothing with another variable: unchanged.
            return Planned(names, SAME, cached.format), cached
        if signature is None:
            signature = formats.shape_signature(value)
        pd = sys.modules.get("pandas")
        kind = type(value)
        if pd is not None and ((kind is pd.DataFrame and codecs._arrow_safe_frame(value))
                               or (kind is pd.Series and frames.arrow_safe_series(value))):
            # Encoded by ``run``, off the cell's critical path. Without copy-on-write
            # (pandas < 3) the value itself is planned, and the extension runs the
            # save before the next cell (no background saves).
            snapshot = frames.snapshot(value) if frames.copy_on_write() else value
            fmt = frames.FRAME if kind is pd.DataFrame else codecs.ARROW_SERIES
            return Planned(names, SNAPSHOT, fmt, snapshot=snapshot), Submitted(value, signature, True, fmt)
        estimate = formats.estimated_size(value)
        if estimate is not None and estimate > settings.max_variable_bytes:
            raise formats.Unsaveable(
                f"larger than max_variable_bytes ({estimate} > {settings.max_variable_bytes} bytes)")
        json_ok = refs is None or not holds_any(value, refs, primaries)
        prepared = formats.prepare(value, ns, self.store.signer, settings.inline_limit,
                                   refs=refs, json_ok=json_ok)
        if prepared.size > settings.max_variable_bytes:
            raise formats.Unsaveable(
                f"larger than max_variable_bytes ({prepared.size} > {settings.max_variable_bytes} bytes)")
        size = estimate if estimate is not None else prepared.size
        big = _only_when_touched(value, size)
        seen = Submitted(value, signature, big, prepared.format, prepared.content_hash,
                         prepared.extra.get("deps", {}), None if big else atoms_copy(value))
        if (cached is not None and cached.content_hash == prepared.content_hash
                and cached.format == prepared.format):
            return Planned(names, SAME, prepared.format, prepared=replace(prepared, payload=None)), seen
        if "views" in prepared.extra:  # a pickle's out-of-band buffers (``buffers``)
            extra = {k: v for k, v in prepared.extra.items() if k != "views"}
            extra["pending"] = buffers.settle(prepared.extra["views"], extra["parts"], self.store.blobs,
                                              SNAPSHOT_COPY_BYTES)
            prepared = replace(prepared, extra=extra)
        item = Planned(names, PREPARED, prepared.format, prepared=prepared)
        if prepared.format == codecs.NPY and prepared.payload is not None:
            if prepared.size <= SNAPSHOT_COPY_BYTES:
                parts = [bytes(part) for part in prepared.payload()]
                item.prepared = replace(prepared, payload=lambda: parts)
            else:
                item.blob = self._submit_write(prepared) or formats.write(prepared, self.store.blobs)
                if isinstance(item.blob, Future):
                    writes.append(item.blob)
        return item, seen

    # --- anywhere, in plan order ---------------------------------------------------------

    def run(self, job: Job) -> SaveResult:
        """Write what ``job`` needs and commit it as a new version (if anything changed)."""
        written: list[str] = []
        skipped = list(job.skipped)
        if job.step is not None:  # what its inputs held before the cell: the last version
            replay.fill_inputs(job.step, self.last_entries)
        pending: list[tuple[Entry, Future]] = []
        done: list[tuple[list[str], Entry]] = []
        committed: dict[str, Entry] = {}
        unsaveable: dict[str, str] = {}
        memos: dict[str, frames.FrameMemo] = {}
        for item in job.items:
            primary = item.names[0]
            try:
                entry = self._entry_for(item, job, written, pending, memos)
            except formats.Unsaveable as exc:
                skipped.extend({"name": n, "reason": str(exc)} for n in item.names)
                unsaveable[primary] = str(exc)
                continue
            done.append((item.names, entry))
            committed[primary] = entry
        # Every blob is on disk (fsynced) before the manifest that names it is committed.
        wait([f for _, f in pending])
        for entry, future in pending:
            entry.blob = future.result()
        entries: list[Entry] = []
        for names, entry in done:
            entries.append(entry)
            entries.extend(replace(entry, name=n, alias_of=names[0]) for n in names[1:])
        by_name = {e.name: e for e in entries}
        if job.history is not None:
            skipped = replay.attach(skipped, job.history, job.expected, by_name)

        result = SaveResult(None, False, written, skipped, len(entries))
        checksum = manifest_checksum(entries)
        made, needed = None, True
        # A manifest unlike the one this saver committed last needs a new version,
        # whatever the store holds (at worst it equals another kernel's latest): the
        # store is asked only when nothing seems to have changed.
        if self._last_checksum is None or checksum == self._last_checksum:
            latest = self.store.latest_checksum(self.notebook)
            if latest is not None and latest[1] == checksum and _same_skipped(latest[2], skipped):
                made = latest[0]
            needed = latest is not None or bool(entries or skipped)
        if made is None and needed:
            made = self.store.commit_version(self.notebook, self.name, entries, skipped).version
            result.created = True
        result.version = made
        if job.after is not None:
            job.after()
        self._last_checksum = checksum if made is not None else None
        self.committed, self.unsaveable, self.memos = committed, unsaveable, memos
        self.last_entries = by_name
        result.seconds = time.perf_counter() - job.started
        return result

    def _entry_for(self, item: Planned, job: Job, written, pending, memos) -> Entry:
        primary = item.names[0]
        previous = self.committed.get(primary)
        if item.kind == SAME:
            if previous is None:
                if primary in self.unsaveable:
                    raise formats.Unsaveable(self.unsaveable[primary])
                raise RuntimeError(f"nothing saved before for {primary!r}; the next save checks every variable")
            if not self._still_stored(previous):
                raise RuntimeError(f"the stored data of {primary!r} is gone; the next save checks every variable")
            if primary in self.memos:
                memos[primary] = self.memos[primary]
            return _carried(previous, primary, item.prepared.type if item.prepared is not None else previous.type)
        if item.kind == SNAPSHOT:
            return self._snapshot_entry(item, job, written, memos, previous)
        prepared = item.prepared
        if (previous is not None and previous.content_hash == prepared.content_hash
                and previous.format == prepared.format and self._still_stored(previous)):
            return _carried(previous, primary, prepared.type)
        if item.blob is not None:
            written.append(primary)
            return prepared.entry(primary, item.blob)
        if prepared.payload is not None and prepared.size >= PARALLEL_WRITE_BYTES:
            future = self._submit_write(prepared)
            if future is not None:
                entry = prepared.entry(primary, None)
                pending.append((entry, future))
                written.append(primary)
                return entry
        blob = formats.write(prepared, self.store.blobs)
        if blob is not None:
            written.append(primary)
        return prepared.entry(primary, blob)

    def _snapshot_entry(self, item: Planned, job: Job, written, memos, previous) -> Entry:
        import pyarrow as pa

        primary, df = item.names[0], item.snapshot
        settings = self.store.settings
        estimate = formats.estimated_size(df)
        if estimate is not None and estimate > settings.max_variable_bytes:
            raise formats.Unsaveable(
                f"larger than max_variable_bytes ({estimate} > {settings.max_variable_bytes} bytes)")
        if item.format != frames.FRAME or (estimate is not None and estimate < SMALL_FRAME_BYTES):
            # A Series or a small frame: one Arrow blob (a pickle if Arrow refuses it).
            prepared = formats.prepare(df, job.namespace, self.store.signer, settings.inline_limit,
                                       json_ok=False)
            if (previous is not None and previous.content_hash == prepared.content_hash
                    and previous.format == prepared.format and self._still_stored(previous)):
                return _carried(previous, primary, prepared.type)
            written.append(primary)
            return prepared.entry(primary, formats.write(prepared, self.store.blobs))
        try:
            encoded = frames.encode(df, self.store.blobs, self.memos.get(primary), trust_memo=not job.full)
        except (pa.ArrowException, TypeError, ValueError):
            # Arrow refused a column after all: pickle the snapshot instead.
            prepared = formats.prepare(df, job.namespace, self.store.signer, settings.inline_limit, json_ok=False)
            blob = formats.write(prepared, self.store.blobs)
            written.append(primary)
            return prepared.entry(primary, blob)
        memos[primary] = encoded.memo
        if encoded.written:
            written.append(primary)
        return Entry(primary, "pandas.DataFrame", frames.FRAME, encoded.size, encoded.content_hash,
                     encoded.schema_blob, None, None, encoded.column_blobs)

    def _submit_write(self, prepared) -> Future | None:
        """Write a big blob on a writer thread; None once the interpreter is exiting
        (a background save finishing at exit writes it on its own thread)."""
        try:
            return self._writer().submit(formats.write, prepared, self.store.blobs)
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            return None

    def _writer(self) -> ThreadPoolExecutor:
        # Big blobs are written by two threads while the next variable is hashed:
        # xxh3, Arrow and file writes release the GIL, so they overlap. A pool per
        # process (a forked child makes its own) and per priority: threads take their
        # creator's, and a cell waiting for a huge array's write must not wait on
        # threads made by the background worker, which runs at a lower one.
        key = (os.getpid(), thread_priority())
        with _WRITERS_LOCK:
            pool = _WRITERS.get(key)
            if pool is None:
                pool = _WRITERS[key] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pipulate-save")
            return pool

    def _still_stored(self, entry: Entry) -> bool:
        """The entry's blobs are on disk; touched so garbage collection's grace period covers them."""
        blobs = ([entry.blob] if entry.blob is not None else []) + list(entry.parts or [])
        return all(self.store.blobs.touch(blob, within=frames.RECHECK_BLOBS_SECONDS) for blob in blobs)


def _same_skipped(stored: str, skipped: list[dict]) -> bool:
    import json

    try:
        return json.loads(stored) == skipped
    except (TypeError, ValueError):  # a damaged row: the next save makes a whole new version
        return False
