"""Rebuilding what cannot be stored, by running again the cells that made it.

A generator, a hash object or a widget cannot be pickled. What can be kept is how it
was made: the cells, in order, that assigned it or used it since (a later
``h.update(...)`` changes ``h`` in place), and, for each of those cells, the variables
it read and what they held then. A version records that recipe beside the variable's
"cannot be saved" reason; after a restart ``%state rebuild`` runs those cells again.

Three rules keep a replay honest:

- **The inputs it saw.** Each cell's inputs are fingerprinted (their content hash in
  the version saved just before the cell). A recipe is offered only if every stored input
  still holds that content in the version being restored; else it is refused with the
  reason (``x changed after cell [4] used it``), never run against other values.
- **Chains.** An input that could not be stored either is rebuilt first, from its own
  recipe: the cells are replayed together, in the order they first ran.
- **Nothing else is touched.** The cells run in a scratch namespace holding copies of
  their inputs; only the variables being rebuilt are taken from it. Running code again
  can still act outside the kernel (write a file, send a request): so a restore only
  says what can be rebuilt, and ``%state rebuild`` (or ``PIPULATE_AUTO_REBUILD=on``) runs it.

``Provenance`` follows the cells on the kernel's thread (ids of the namespace before
and after each cell: cheap); ``attach_recipes`` runs on the save's thread, where the
previous version's hashes are known.
"""
from __future__ import annotations

import copy
import graphlib
import itertools
import re
import types
from dataclasses import dataclass, field

from . import changes, formats

REBUILD = "rebuild"  # the key of a skipped entry's recipe: {"cells": [...], "inputs": {...}}
REFUSED = "rebuild_refused"  # the key of the reason a recipe cannot be offered
_SEQ = itertools.count(1)


@dataclass(eq=False)
class Step:
    """One cell that assigned or used a variable being followed."""

    source: str
    label: str  # how the user knows the cell: "[5]"
    reads: frozenset[str] | None  # variables it may have read; None: cannot tell
    seq: int = field(default_factory=lambda: next(_SEQ))
    inputs: dict | None = None  # {name: content hash or None}, filled by the save of this cell
    earlier: bool = False  # ran in an earlier kernel (known from a restored recipe)


MAX_STEPS = 200  # a variable made and changed over more cells than this is not rebuilt


class Provenance:
    """Which cells made and touched each variable of the kernel (the kernel's thread).

    ``history`` maps a variable to the cells that made it and used it since, in order
    (None once there are more than MAX_STEPS). It also holds variables restored as
    recipes only (``expect``): not in the namespace until ``%state rebuild`` runs.
    """

    def __init__(self, is_users_name):
        self.is_users_name = is_users_name  # name -> bool: saved at all (not IPython's own)
        self.before: dict[str, int] = {}
        self.history: dict[str, tuple[Step, ...] | None] = {}
        self.reasons: dict[str, str] = {}  # why a variable expected from a recipe is not stored

    def before_cell(self, ns: dict) -> None:
        self.before = {n: id(v) for n, v in ns.items() if isinstance(n, str)}

    def after_cell(self, ns: dict, source: str | None, label: str) -> Step | None:
        """Record a cell that ran without error; returns its step (None if it made and
        used nothing followed)."""
        before = self.before
        for name in [n for n in self.history if n in before and n not in ns]:
            del self.history[name]  # deleted by the cell
        assigned = self.assigned(ns)
        reads = None if source is None else _reads(source, ns, before, self.is_users_name)
        used = set(self.history) if reads is None else {n for n in reads if n in self.history}
        used = {n for n in used if n in ns} - assigned
        if not assigned and not used and reads is not None:
            return None
        step = Step(source or "", label, None if reads is None else frozenset(reads - assigned))
        for name in assigned:
            self.history[name] = (step,)
            self.reasons.pop(name, None)
        for name in used:
            chain = self.history[name]
            self.history[name] = None if chain is None or len(chain) >= MAX_STEPS else chain + (step,)
        return step

    def assigned(self, ns: dict) -> set[str]:
        """The user's variables the running (or just ended) cell bound anew."""
        before = self.before
        return {n for n, v in ns.items() if isinstance(n, str) and before.get(n) != id(v) and self.is_users_name(n)}

    def forget(self, names) -> None:
        """These variables were replaced from a saved version (a restore)."""
        for name in names:
            self.history.pop(name, None)
            self.reasons.pop(name, None)

    def expect(self, items: list[dict]) -> None:
        """A restored version's recipes for variables it could not store: kept so the next
        versions offer them too, until each variable is rebuilt or replaced. Cells shared
        by several recipes become one step, in the order they first ran."""
        made: dict[tuple, Step] = {}
        cells = sorted({(c["order"], c["label"], c["source"]): c for item in items
                        for c in item[REBUILD]["cells"]}.items())
        for key, cell in cells:
            # A stored recipe already holds the cells of its chain, in order: only the
            # stored inputs are checked again (None marked an input its earlier cells made).
            held = {n: h for n, h in cell["inputs"].items() if h is not None}
            made[key] = Step(cell["source"], cell["label"], frozenset(held), inputs=held, earlier=True)
        for item in items:
            self.history[item["name"]] = tuple(made[(c["order"], c["label"], c["source"])]
                                               for c in item[REBUILD]["cells"])
            self.reasons[item["name"]] = item.get("reason", "")

    def rebuilt(self, items: list[dict]) -> None:
        """These variables were just rebuilt from their recipes: their history is that recipe."""
        self.expect(items)
        for item in items:
            self.reasons.pop(item["name"], None)


# Line magics that change no variable: a cell holding them can still be followed.
_QUIET_MAGICS = re.compile(r"^[ \t]*%(matplotlib|config|load_ext|reload_ext|who|whos|who_ls|pip|conda|time|timeit)\b"
                           r"(?!.*=)", re.MULTILINE)
_STATE_ONLY = re.compile(r"\A(\s*%state\b[^\n]*\n?)+\s*\Z")


def is_state_magic(source: str | None) -> bool:
    """A cell of ``%state`` lines only: it changes variables only through a restore or a
    rebuild, which tell ``Provenance`` themselves."""
    return bool(source and _STATE_ONLY.match(source))


def _reads(source: str, ns: dict, before: dict, is_users_name) -> set[str] | None:
    """The variables a cell may have read: the names in its source that existed before
    it ran, and the globals of the notebook's own functions it calls."""
    names = changes.mentioned_names(_QUIET_MAGICS.sub("", source))
    if names is None:
        return None
    reads = {n for n in names if n in before}
    for name in list(reads):
        value = ns.get(name)
        if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
            reads |= {n for n in value.__code__.co_names if n in before}
    return {n for n in reads if is_users_name(n)}  # IPython's own (In, open, ...) are always there


def fill_inputs(step: Step, previous: dict) -> None:
    """What the step's inputs held just before it ran: the content hashes of the version
    saved before its cell (``previous``: name -> Entry). Called in cell order."""
    if step.reads is None or step.inputs is not None:
        return
    step.inputs = {n: (previous[n].content_hash if n in previous else None) for n in sorted(step.reads)}


def recipe(name: str, history: dict, entries: dict) -> dict:
    """``{REBUILD: {...}}`` or ``{REFUSED: reason}`` for variable ``name`` of a version whose
    stored entries are ``entries`` (name -> Entry)."""
    steps: dict[int, Step] = {}
    inputs: dict[str, str] = {}
    try:
        _collect(name, history, entries, steps, inputs, set(), None)
    except _Refused as exc:
        return {REFUSED: str(exc)}
    ordered = [steps[k] for k in sorted(steps)]
    return {REBUILD: {"cells": [{"label": s.label, "source": s.source, "inputs": s.inputs, "order": i,
                                 "earlier": s.earlier} for i, s in enumerate(ordered)],
                      "inputs": inputs}}


class _Refused(Exception):
    pass


def _collect(name, history, entries, steps, inputs, seen, before_seq) -> None:
    if name not in history:
        raise _Refused(f"no cell of this kernel made {name!r}")
    chain = history[name]
    if chain is None:
        raise _Refused(f"{name!r} was made and changed over more than {MAX_STEPS} cells")
    if before_seq is not None:
        chain = tuple(s for s in chain if s.seq < before_seq)
        if not chain:
            raise _Refused(f"no cell of this kernel made {name!r} before it was used")
    key = (name, before_seq)
    if key in seen:
        return
    seen.add(key)
    for step in chain:
        if step.reads is None:
            raise _Refused(f"cell {step.label} runs code the workstation cannot follow (magics, shell, exec)")
        if step.inputs is None:
            raise _Refused(f"cell {step.label} was not saved")
        steps[step.seq] = step
        for used, held in step.inputs.items():
            if used == name:
                continue
            if held is None:  # not stored when the cell ran: rebuilt from its own cells first
                _collect(used, history, entries, steps, inputs, seen, step.seq)
                continue
            now = entries.get(used)
            if now is None or now.content_hash != held:
                raise _Refused(f"{used!r} changed after cell {step.label} used it")
            inputs[used] = held


def attach(skipped: list[dict], history: dict, reasons: dict, entries: dict) -> list[dict]:
    """The skipped list with each variable's recipe (or why there is none), plus the
    variables restored as recipes that are not rebuilt yet (``reasons``: name -> why it
    was not stored), each checked against this version's ``entries``."""
    out, named = [], set()
    for item in skipped:
        named.add(item["name"])
        if item["name"] in history:
            item = {**item, **recipe(item["name"], history, entries)}
        out.append(item)
    for name, reason in reasons.items():
        if name not in named and name not in entries and name in history:
            out.append({"name": name, "reason": reason, **recipe(name, history, entries)})
    return out


def rebuildable(skipped: list[dict]) -> list[dict]:
    return [s for s in skipped if REBUILD in s]


def run(ns: dict, items: list[dict], run_cell) -> tuple[list[str], list[dict]]:
    """Rebuild the variables of ``items`` (skipped entries with a recipe) in ``ns``.

    The cells of all of them run once each, in the order they first ran, in a scratch
    namespace holding copies of their inputs (``run_cell(source, scratch)`` runs one and
    raises if it fails). Returns (rebuilt names, [{name, reason}] not rebuilt).
    """
    order = graphlib.TopologicalSorter()
    inputs: set[str] = set()
    for item in items:
        keys = [(cell["label"], cell["source"]) for cell in item[REBUILD]["cells"]]
        for i, key in enumerate(keys):
            order.add(key, *keys[:i][-1:])  # each recipe keeps its cells' order
        inputs |= set(item[REBUILD]["inputs"])
    try:
        cells = list(order.static_order())
    except graphlib.CycleError:  # recipes disagree on an order: the first one seen wins
        cells = list(dict.fromkeys((c["label"], c["source"]) for item in items for c in item[REBUILD]["cells"]))
    # Dunders and the workstation's own objects (``pip``: not followed, made by their import)
    # as they are; the inputs as copies.
    scratch = {k: v for k, v in ns.items() if isinstance(k, str)
               and (k.startswith("__") and k.endswith("__") or formats.is_own_value(v))}
    for name in inputs:
        if name in ns:
            scratch[name] = _copy(ns[name])
    failed: list[dict] = []
    for label, source in cells:
        try:
            run_cell(source, scratch)
        except BaseException as exc:  # the cell's own error: say which, touch nothing
            reason = f"cell {label} failed when run again ({type(exc).__name__}: {exc})"
            return [], [{"name": item["name"], "reason": reason} for item in items]
    done = []
    for item in items:
        if item["name"] in scratch:
            ns[item["name"]] = scratch[item["name"]]
            done.append(item["name"])
        else:
            failed.append({"name": item["name"], "reason": "its cells ran again but did not make it"})
    return done, failed


def _copy(value):
    """A copy the replayed cells may change freely; the value itself when it cannot be
    copied (modules, functions: nothing a cell changes in place)."""
    if isinstance(value, (types.ModuleType, types.FunctionType, type)):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:
        return value
