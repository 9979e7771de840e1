"""Which big values (and frames and series) a cell may have touched, without hashing them.

Hashing is cheap (xxh3, ~14 GB/s here) but a 1 GiB namespace would still cost
~0.1 s after every cell. So a *big* value (>= ``BIG_BYTES``) that is the very
same object as at the last save, with the same shape, dtype, strides and
buffer address, is re-hashed only when the cell could have changed it:

- one of its names appears in the cell's source, or
- a name in the source leads to it: a container, an instance, a view whose
  ``.base`` is it (followed through ``gc.get_referents``, up to a bound), or
- the cell is one we cannot read: it runs magics or shell commands, uses
  ``global``, ``exec``/``eval``, ``globals()``, ``get_ipython``..., or calls a
  function or class defined in the notebook (whose body may touch any global).

With pandas >= 3 a pandas object is a leaf of that walk: copy-on-write means what a
frame holds changes only through the frame itself.

Anything else gets the full check. ``%state save`` always checks everything.
A value mutated behind the kernel's back (another thread, a C library holding
a pointer) is the case this cannot see; ``%state save`` covers it.
"""
from __future__ import annotations

import gc
import re
import sys
import types

BIG_BYTES = 8 * 1024 * 1024
MAX_WALK = 20_000

_OPAQUE_NAMES = {
    "global", "nonlocal", "exec", "eval", "compile", "globals", "locals", "vars", "setattr",
    "delattr", "__dict__", "get_ipython", "__import__", "importlib", "sys", "__main__",
    "run_line_magic", "run_cell_magic", "run_cell", "user_ns", "builtins",
}


_IDENTIFIER = re.compile(r"[^\W\d]\w*")
_MAGIC_LINE = re.compile(r"^[ \t]*[%!]", re.MULTILINE)
_HELP = re.compile(r"^[ \t]*\?|\?[ \t]*$", re.MULTILINE)  # IPython's ``obj?`` and ``?obj``


def mentioned_names(source: str | None) -> set[str] | None:
    """Identifiers in the cell, or None when the cell cannot be read safely.

    Words in strings and comments count too: a name too many only means one more
    variable checked in full, and a regular expression reads a cell ~20 times
    faster than ``tokenize``.
    """
    if source is None:
        return None
    if _MAGIC_LINE.search(source) or "get_ipython" in source or _HELP.search(source):
        return None  # magics, shell escapes and help run code the source does not show
    names = set(_IDENTIFIER.findall(source))
    if names & _OPAQUE_NAMES:
        return None
    return names


def _defined_in_notebook(value, ns: dict) -> bool:
    if isinstance(value, types.FunctionType):
        return value.__globals__ is ns
    if isinstance(value, types.MethodType):
        return _defined_in_notebook(value.__func__, ns)
    if isinstance(value, type):
        return value.__module__ == "__main__" or any(
            isinstance(v, types.FunctionType) and v.__globals__ is ns for v in vars(value).values())
    if callable(value) and type(value).__module__ == "__main__":
        return True  # an instance of a notebook class with __call__
    return False


def touched_ids(ns: dict, names: set[str] | None) -> set[int] | None:
    """ids of objects reachable from the names the cell mentions; None = assume everything."""
    if names is None:
        return None
    np = sys.modules.get("numpy")
    start = [ns[n] for n in names if n in ns]
    for value in start:
        try:
            if _defined_in_notebook(value, ns):
                return None
        except Exception:  # a value that breaks isinstance (a dead weakref.proxy): check everything
            return None
    try:
        return _walk(start, np)
    except ReferenceError:  # a dead weakref.proxy among the values: check everything
        return None


def _walk(start: list, np) -> set[int] | None:
    from .frames import copy_on_write

    pandas_leaf = copy_on_write()
    seen: set[int] = set()
    stack = list(start)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(obj))
        if len(seen) > MAX_WALK:
            return None
        if pandas_leaf and type(obj).__module__.startswith("pandas."):
            continue  # copy-on-write: what a frame holds changes only through the frame
        if np is not None and isinstance(obj, np.ndarray):
            base = obj.base
            if base is not None:
                stack.append(base)
            continue
        if isinstance(obj, (str, bytes, int, float, complex, bool)) or obj is None:
            continue
        try:
            stack.extend(gc.get_referents(obj))
        except Exception:
            return None
    return seen
