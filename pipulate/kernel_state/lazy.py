"""Big arrays and frames restored without reading them: mapped copy-on-write, checked in the background.

A restore (``restoring.restore``) maps each big raw ``.npy`` blob, and each big raw column
blob of a big frame (``BlobStore.map_private``), instead of reading it, so the kernel gets
its namespace at once and pages are read when code first touches them. The arrays are
ordinary writable ``numpy.ndarray`` objects over a private mapping, and the frames
ordinary DataFrames whose columns lie over such mappings where pandas uses a column as it
is (``frames.used_in_place``; the other columns are read): a write copies the page
(pandas: the column) it lands on and never reaches the blob file.
The big out-of-band buffers of a pickled container (``buffers``: arrays in a list, dict
or object) are mapped the same way and handed to ``pickle.loads``, so its arrays are views
over the mappings too.
A mapped frame comes with the memo a save would have left (``frames.memo_of_restored``),
so the next save of it hashes only the columns written since.

Every blob is still checked against its hash before anything in it is used: ``Checks``
reads the mapped blobs on a background thread (through a small buffer, not the mapping),
and before each cell the extension waits for the checks of the variables the cell may
touch (``changes.touched_ids``: the names it mentions and what they lead to; a cell it
cannot read waits for every check). A blob that fails is removed from the namespace,
with every restored variable that holds it, and a message names them, before the cell
runs. The save after a cell waits for the same checks (it reads no other big value); a
save of everything (``%state save``) waits for every check.

What is not covered: a blob file changed on disk after its check passed shows through
the mapping in pages not read yet (blob files are never rewritten in place; only
something outside pipulate does that), and a file cut short under the mapping ends the
kernel with SIGBUS when the missing pages are touched (the next restore refuses it by
name); code that runs without a cell - a silent execution, the debugger, a completion -
does not wait for the checks (docs/kernel-state.md says what a user sees).
"""
from __future__ import annotations

import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from .. import codecs
from ..blobs import ALIGNED_OFFSET
from ..errors import IntegrityError
from . import changes, formats, frames
from .store import Entry

# Arrays from this size are mapped: the size from which a save looks at a value only when
# a cell may have touched it (``changes.BIG_BYTES``), so an untouched mapped array is
# never read by a save either. Smaller ones cost little to read.
MAP_BYTES = changes.BIG_BYTES
# numpy and the libraries it feeds want aligned data; .npy headers align it to 64.
DATA_ALIGN = 64


@dataclass
class Mapped:
    """A value restored over mapped blobs: what ``restoring.decode_entry`` gets for it, the
    blobs to check, and (frames) the memo that spares its next save from reading it."""

    ahead: Future | list[Future]
    blobs: list[str]
    memo: frames.FrameMemo | None = None


def map_arrays(blobs, entries: list[Entry]) -> dict[str, Mapped]:
    """The big arrays and frames among ``entries`` whose blobs can be mapped (raw, data
    aligned), by name. The others, and blobs that fail even to map, are left to the
    ordinary read (which reports them)."""
    mapped = {}
    for entry in entries:
        if entry.blob is None or entry.size < MAP_BYTES:
            continue
        try:
            if entry.format == codecs.NPY:
                view = _map(blobs, entry.blob)
                if view is not None and (ALIGNED_OFFSET + formats.npy_data_offset(view)) % DATA_ALIGN == 0:
                    mapped[entry.name] = Mapped(_done(view), [entry.blob])
            elif entry.format == frames.FRAME or (entry.format == codecs.PICKLE and entry.parts):
                found = _map_frame(blobs, entry) if entry.format == frames.FRAME else _map_buffers(blobs, entry)
                if found is not None:
                    mapped[entry.name] = found
        except Exception:  # damaged beyond mapping, or Arrow refuses it: the ordinary read reports
            continue
    return mapped


def _map_frame(blobs, entry: Entry) -> Mapped | None:
    """A frame whose big columns are mapped where pandas uses them in place
    (``frames.used_in_place``); its schema and its other columns (small, compressed or
    converted) are read and checked now. None when no column maps."""
    parts = list(entry.parts or [])
    if frames.content_hash(entry.blob, parts) != entry.content_hash:
        return None  # the ordinary read reports the damaged column list
    schema = blobs.get_view(entry.blob)
    views, mapped = [], []
    for blob in parts:
        view = _map(blobs, blob)
        # A column pandas would convert is read and checked now: the conversion reads it all.
        if view is not None and frames.used_in_place(schema, view):
            mapped.append(blob)
        else:
            view = blobs.get_view(blob)
        views.append(view)
    if not mapped:
        return None
    frame = frames.decode(schema, views)
    # Without copy-on-write (pandas < 3) a write changes a column in place, at the address
    # a memo would take as "unchanged": no memo then, the next save hashes the frame.
    memo = (frames.memo_of_restored(frame, schema, parts, [len(v) for v in views])
            if frames.copy_on_write() else None)
    return Mapped(_done(frame), mapped, memo)


def _map_buffers(blobs, entry: Entry) -> Mapped | None:
    """A pickle's out-of-band buffers (``buffers``) mapped where they can be; the pickle
    itself and the buffers that do not map (compressed) are read and checked when it is
    decoded, which the signature check comes first in. None when no buffer maps."""
    ahead, mapped = [None], []
    for blob in entry.parts:
        view = _map(blobs, blob)
        ahead.append(None if view is None else _done(view))
        if view is not None:
            mapped.append(blob)
    return Mapped(ahead, list(dict.fromkeys(mapped))) if mapped else None


def _map(blobs, blob: str):
    map_private = getattr(blobs, "map_private", None)  # a store that cannot map reads
    return map_private(blob) if map_private is not None else None


def _done(value) -> Future:
    future = Future()
    future.set_result(value)
    return future


class _Item:
    __slots__ = ("name", "blobs", "value", "state", "error", "done")

    def __init__(self, name: str, blobs: list[str], value):
        self.name, self.blobs, self.value = name, blobs, value
        self.state = "pending"  # then "running", then "done"
        self.error: str | None = None
        self.done = threading.Event()


class Checks:
    """The hash checks of the blobs the last restore mapped."""

    def __init__(self):
        self._items: list[_Item] = []
        self._restored: list[str] = []
        self._lock = threading.Lock()
        self._blobs = None

    def start(self, blobs, mapped: dict[str, list[str]], ns: dict, restored: list[str]) -> None:
        """Check ``mapped`` ({variable: its mapped blobs}, restored into ``ns``) on a background thread."""
        self._blobs, self._restored = blobs, list(restored)
        self._items = [_Item(name, list(names), ns[name]) for name, names in mapped.items() if name in ns]
        if self._items:
            threading.Thread(target=self._run, args=(list(self._items),), name="pipulate-restore-check",
                             daemon=True).start()

    @property
    def pending(self) -> bool:
        return bool(self._items)

    def _run(self, items: list[_Item]) -> None:
        for item in items:
            self._check(item)

    def _check(self, item: _Item) -> None:
        """Check ``item`` here unless another thread has started it; then wait for it."""
        with self._lock:
            mine = item.state == "pending"
            if mine:
                item.state = "running"
        if not mine:
            item.done.wait()
            return
        try:
            for blob in item.blobs:
                self._blobs.check(blob)
        except IntegrityError as exc:
            item.error = str(exc)
        except Exception as exc:
            item.error = f"cannot be checked ({type(exc).__name__}: {exc})"
        if item.error is None:
            item.value = None  # checked: the mapping is the user's alone to keep or drop
        item.state = "done"
        item.done.set()

    def before_cell(self, ns: dict, cell: str | None) -> None:
        """Wait for the checks of what ``cell`` may touch; remove what failed."""
        if not self._items:
            return
        try:
            touched = changes.touched_ids(ns, changes.mentioned_names(cell))
        except Exception:  # not readable: wait for everything
            touched = None
        self._settle(ns, touched)

    def before_save(self, ns: dict, cell: str | None = None) -> None:
        """Wait for the checks of what the save after ``cell`` may read: the values the cell
        may touch (a save looks at no other big value); every check when ``cell`` is None (a
        full save reads everything). Remove what failed."""
        if self._items:
            self.before_cell(ns, cell) if cell is not None else self._settle(ns, None)

    def _settle(self, ns: dict, touched: set[int] | None) -> None:
        for item in list(self._items):
            value = item.value
            if item.state != "done" and value is not None and (touched is None or id(value) in touched):
                self._check(item)
        failed = [item for item in self._items if item.state == "done" and item.error is not None]
        self._items = [item for item in self._items if item.state != "done"]
        for item in failed:
            _remove(ns, item, self._restored)


def _remove(ns: dict, item: _Item, restored: list[str]) -> None:
    """Take the damaged array out of ``ns``, with every restored variable that holds it."""
    np = sys.modules.get("numpy")
    bad = item.value
    held_by = []
    for name in restored:
        value = ns.get(name)
        if value is None or name == item.name and value is not bad:
            continue
        if value is bad:
            del ns[name]
            print(f"pipulate: variable {name!r} was not restored: {item.error}; "
                  "it was removed before this cell ran", file=sys.stderr)
            continue
        try:
            reached = changes._walk([value], np)
        except Exception:
            reached = None
        if reached is None or id(bad) in reached:
            held_by.append(name)
    for name in held_by:
        ns.pop(name, None)
        print(f"pipulate: variable {name!r} was not restored: it holds {item.name!r}, whose blob is "
              "damaged; it was removed before this cell ran", file=sys.stderr)
    item.value = None
