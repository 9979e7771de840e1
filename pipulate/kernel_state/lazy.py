"""Big arrays restored without reading them: mapped copy-on-write, checked in the background.

A restore (``restoring.restore``) maps each big raw ``.npy`` blob (``BlobStore.map_private``)
instead of reading it, so the kernel gets its namespace at once and pages are read when
code first touches them. The arrays are ordinary writable ``numpy.ndarray`` objects over
a private mapping: a write copies the page it lands on and never reaches the blob file.

Every blob is still checked against its hash before anything in it is used: ``Checks``
reads the mapped blobs on a background thread (through a small buffer, not the mapping),
and before each cell the extension waits for the checks of the variables the cell may
touch (``changes.touched_ids``: the names it mentions and what they lead to; a cell it
cannot read waits for every check). A blob that fails is removed from the namespace,
with every restored variable that holds it, and a message names them, before the cell
runs. Saves wait for every check first (a full save reads everything).

What is not covered: a blob file changed on disk after its check passed shows through
the mapping in pages not read yet (blob files are never rewritten in place; only
something outside pipulate does that); and code that runs without a cell - a silent
execution, the debugger, a completion - does not wait for the checks.
"""
from __future__ import annotations

import sys
import threading
from concurrent.futures import Future

from .. import codecs
from ..blobs import ALIGNED_OFFSET
from ..errors import IntegrityError
from . import changes, formats
from .store import Entry

# Arrays from this size are mapped: the size from which a save looks at a value only when
# a cell may have touched it (``changes.BIG_BYTES``), so an untouched mapped array is
# never read by a save either. Smaller ones cost little to read.
MAP_BYTES = changes.BIG_BYTES
# numpy and the libraries it feeds want aligned data; .npy headers align it to 64.
DATA_ALIGN = 64


def map_arrays(blobs, entries: list[Entry]) -> dict[str, Future]:
    """The views of the big arrays among ``entries`` that can be mapped (raw blobs whose data
    is aligned), as finished futures by name, for ``restoring.decode_entry``. The others,
    and blobs that fail even to map, are left to the ordinary read (which reports them)."""
    mapped = {}
    for entry in entries:
        if entry.format != codecs.NPY or entry.blob is None or entry.size < MAP_BYTES:
            continue
        try:
            view = blobs.map_private(entry.blob)
            if view is None or (ALIGNED_OFFSET + formats.npy_data_offset(view)) % DATA_ALIGN:
                continue  # compressed, or not aligned (saved before blobs were): read it
        except (IntegrityError, OSError, ValueError):
            continue
        future = Future()
        future.set_result(view)
        mapped[entry.name] = future
    return mapped


class _Item:
    __slots__ = ("name", "blob", "value", "state", "error", "done")

    def __init__(self, name: str, blob: str, value):
        self.name, self.blob, self.value = name, blob, value
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

    def start(self, blobs, mapped: dict[str, str], ns: dict, restored: list[str]) -> None:
        """Check ``mapped`` ({variable: blob}, restored into ``ns``) on a background thread."""
        self._blobs, self._restored = blobs, list(restored)
        self._items = [_Item(name, blob, ns[name]) for name, blob in mapped.items() if name in ns]
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
            self._blobs.check(item.blob)
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

    def before_save(self, ns: dict) -> None:
        """Wait for every check (a save may read any value); remove what failed."""
        if self._items:
            self._settle(ns, None)

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
