"""What a small container of immutable atoms held at a save, to see cheaply that it did not change.

A list, tuple or dict made only of immutable atoms (and of such containers) is unchanged
exactly when it still holds the very same objects in the same order; ``saving`` keeps an
``Atoms`` copy per such variable and compares identities instead of encoding it again.
"""
from __future__ import annotations

import operator
from typing import NamedTuple

from .sharing import ATOM_TYPES


class Atoms(NamedTuple):
    """What a container of immutable atoms held when planned (see ``atoms_copy``)."""

    keys: tuple | None  # a dict's keys, in order; None for a list or tuple
    values: tuple
    inner: dict  # position -> Atoms of the lists, tuples and dicts among ``values``


def atoms_copy(value, depth: int = 0) -> Atoms | None:
    """What a list, tuple or dict made of immutable atoms (and of such containers,
    3 levels deep) holds; None for anything else.

    Such a value is unchanged exactly when it still holds the very same objects in the
    same order (``same_atoms``): no atom changes in place, and the copy keeps the old
    ones alive, so no id is reused. Checking that is many times cheaper than encoding it.
    """
    kind = type(value)
    if kind is dict:
        keys, values = tuple(value), tuple(value.values())
        if not ATOM_TYPES.issuperset(map(type, keys)):
            return None
    elif kind is list or kind is tuple:
        keys, values = None, tuple(value)
    else:
        return None
    inner = {}
    if not ATOM_TYPES.issuperset(map(type, values)):
        if depth >= 3:
            return None
        for i, item in enumerate(values):
            if type(item) not in ATOM_TYPES:
                held = atoms_copy(item, depth + 1)
                if held is None:
                    return None
                inner[i] = held
    return Atoms(keys, values, inner)


def same_atoms(value, atoms: Atoms | None) -> bool:
    """``value`` holds what ``atoms`` (taken from this very object) says it held."""
    if atoms is None or len(value) != len(atoms.values):
        return False
    if atoms.keys is not None:
        if not (all(map(operator.is_, value, atoms.keys))
                and all(map(operator.is_, value.values(), atoms.values))):
            return False
    elif not all(map(operator.is_, value, atoms.values)):
        return False
    return all(same_atoms(atoms.values[i], held) for i, held in atoms.inner.items())


def holds_ref(atoms: Atoms, refs: dict) -> bool:
    """Some list or dict inside is another variable's object (``refs``): it is pickled with a reference."""
    return any(id(atoms.values[i]) in refs or holds_ref(held, refs) for i, held in atoms.inner.items())
