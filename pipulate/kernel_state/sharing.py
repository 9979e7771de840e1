"""Which variables hold which: what keeps ``c[0] is a`` true after a restore.

A variable other variables may hold is stored on its own and becomes a *reference*:
a pickle that holds it names it (``pickling.SharingPickler``'s ``persistent_id``) instead
of copying it, and a restore hands it the restored object. ``sharing_targets`` picks the
variables planned first (arrays, frames, bytearrays, plain containers that hold no other
variable); ``pickles_in_order`` orders the rest so that each comes after the variables it
holds, so pickles can refer to pickles too. Objects whose identity is the interpreter's
(small ints, interned strings, the empty tuple) are never references: a Fraction(1, 3)
would otherwise name a variable that happens to hold 1.
"""
from __future__ import annotations

import graphlib
import sys
import types
from typing import Any

IMMUTABLE_ATOMS = (int, float, complex, str, bytes, bool, type(None))
ATOM_TYPES = frozenset(IMMUTABLE_ATOMS)

_CONTAINERS = (list, dict, set, frozenset, tuple)
MAX_SHARING_WALK = 2_000_000  # items looked at per container


def sharing_targets(primaries: dict, memo: dict | None = None, touched: set | None = None) -> set[int]:
    """ids of variables that other variables' values may hold and refer to.

    Arrays, frames and bytearrays, and plain containers (list, dict, set, tuple,
    frozenset) that hold no other variable - those holding one are pickled with a
    reference instead. ``memo`` keeps each container's answer while the cell leaves it
    alone (``touched``).
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
        elif kind is bytearray:  # mutable, and holds no other object: always one to refer to
            targets.add(id(value))
        elif kind in _CONTAINERS and has_identity(value):
            containers.append(value)
    # A container holding any other variable (a memoryview, an instance...) is pickled with
    # a reference to it, after it; only those holding none are targets.
    # type(), not isinstance(): a value may break isinstance (a dead weakref.proxy).
    ids = {id(v) for v in primaries.values() if has_identity(v) and not issubclass(type(v), types.ModuleType)}
    fresh: dict[int, tuple[Any, bool]] = {}
    for value in containers:
        known = memo.get(id(value)) if memo is not None else None
        if known is not None and known[0] is value and touched is not None and id(value) not in touched:
            holds = known[1]
        else:
            holds = holds_any(value, ids)
        fresh[id(value)] = (value, holds)
        if not holds:
            targets.add(id(value))
    if memo is not None:
        memo.clear()
        memo.update(fresh)
    return targets


def has_identity(value) -> bool:
    """Whether holding this very object means something: not an atom (``x = 1`` and the 1
    inside a Fraction are the same cached object) nor an empty tuple or frozenset."""
    kind = type(value)
    return kind not in ATOM_TYPES and not (kind in (tuple, frozenset) and not value)


def pickles_in_order(groups: list[list[str]], primaries: dict) -> list[list[str]]:
    """The groups whose values are pickled with references, each after the variables it
    holds (found in plain containers, as ``holds_any`` walks them), so that those can be
    referred to; a cycle is broken in name order (a copy inside, as before)."""
    ids = {id(primaries[g[0]]): i for i, g in enumerate(groups)}
    order = graphlib.TopologicalSorter()
    for i, g in enumerate(groups):
        value = primaries[g[0]]
        held = _held(value, ids) if type(value) in _CONTAINERS else set()
        order.add(i, *(ids[h] for h in held if ids[h] != i))
    try:
        return [groups[i] for i in order.static_order()]
    except graphlib.CycleError:
        return groups


def _held(value, ids) -> set[int]:
    """The ids in ``ids`` that plain container ``value`` holds, at any depth (bounded)."""
    found: set[int] = set()
    stack, seen = [value], 0
    while stack:
        obj = stack.pop()
        seen += len(obj) + 1
        if seen > MAX_SHARING_WALK:
            break
        for item in (obj.items() if type(obj) is dict else obj):
            for part in (item if type(obj) is dict else (item,)):
                if id(part) in ids and part is not value:
                    found.add(id(part))
                elif type(part) in _CONTAINERS:
                    stack.append(part)
    return found


def holds_any(value, ids, _unused=None) -> bool:
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
