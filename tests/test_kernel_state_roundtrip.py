"""Any namespace of nested containers of the supported kinds comes back equal, with the
same types at every level and the same sharing (``b = a``, ``c = [a]``: ``c[0] is a``).

Property-based (hypothesis): variables drawn from nested lists, tuples, dicts, sets and
the atoms kernels hold, some sharing inner objects, saved by ``Saver`` and restored into
a fresh namespace.
"""
from __future__ import annotations

import datetime as dt
import decimal
import uuid

import numpy as np
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from pipulate.kernel_state.restoring import restore
from pipulate.kernel_state.saving import Saver

atoms = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
    st.complex_numbers(allow_nan=False, allow_infinity=False), st.text(max_size=6), st.binary(max_size=6),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    st.dates(), st.uuids(),
)
hashables = st.one_of(st.integers(-1000, 1000), st.text(max_size=4), st.tuples(st.integers(0, 9), st.text(max_size=2)))
leaves = st.one_of(
    atoms,
    st.binary(max_size=6).map(bytearray),
    st.binary(max_size=6).map(memoryview),
    st.lists(st.integers(-100, 100), max_size=6).map(lambda v: np.array(v, dtype=np.int64)),
    st.frozensets(hashables, max_size=4),
    st.sets(hashables, max_size=4),
)
nested = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(hashables, inner, max_size=4)), max_leaves=14)


def shared(draw_from):
    """A namespace whose variables may hold each other's objects."""
    @st.composite
    def build(draw):
        ns: dict = {}
        for i in range(draw(st.integers(1, 5))):
            value = draw(draw_from)
            if ns and draw(st.booleans()):  # put an earlier variable's object inside this one
                other = ns[draw(st.sampled_from(sorted(ns)))]
                value = [value, other] if draw(st.booleans()) else {"held": other, "own": value}
            ns[f"v{i}"] = value
        if ns and draw(st.booleans()):
            ns["alias"] = ns[draw(st.sampled_from(sorted(ns)))]  # b = a
        return ns
    return build()


def same(a, b, seen: dict) -> None:
    """``b`` equals ``a`` with the same type at every level, and the objects ``a`` shares
    (mutable ones) are shared the same way in ``b``."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, (list, dict, set, bytearray, np.ndarray, memoryview)):
        if id(a) in seen:
            assert seen[id(a)] is b, "sharing was not kept"
            return
        seen[id(a)] = b
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y, seen)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            same(a[key], b[key], seen)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, memoryview):
        assert (a.format, a.shape, a.readonly, a.tobytes()) == (b.format, b.shape, b.readonly, b.tobytes())
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b


@given(ns=shared(nested))
@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_any_nested_namespace_comes_back_equal_with_its_types_and_sharing(ks, ns):
    saver = Saver(ks, "roundtrip", "roundtrip")
    result = saver.save(dict(ns), cell="pass")
    assert not result.skipped, result.skipped
    back: dict = {}
    restored = restore(ks, "roundtrip", back)
    assert not restored.failed, restored.failed
    assert sorted(back) == sorted(ns)
    seen: dict = {}
    for name in sorted(ns):
        same(ns[name], back[name], seen)
    ks.clear("roundtrip")


def test_the_kinds_above_include_what_the_strategy_draws():
    """A guard: the strategy above does draw each kind (a typo would silently narrow it)."""
    kinds = {type(v) for v in (decimal.Decimal("1.5"), uuid.uuid4(), dt.date.today(), memoryview(b""),
                               bytearray(), np.zeros(1), frozenset(), set())}
    example_types: set = set()

    @given(leaves)
    @hsettings(max_examples=300, deadline=None)
    def collect(value):
        example_types.add(type(value))

    collect()
    assert kinds <= example_types, kinds - example_types


def test_objects_the_interpreter_shares_are_not_references(ks):
    """``count = 1`` and the 1 inside a Fraction are one cached object, by accident: the
    Fraction's pickle must not refer to ``count`` (nor ``t`` to ``empty``)."""
    import fractions

    saver = Saver(ks, "cached", "cached")
    ns = {"count": 1, "frac": fractions.Fraction(1, 3), "empty": (), "t": [(), "x"]}
    saver.save(dict(ns), cell="pass")
    first = ks.manifest("cached").by_name()
    saver.save({**ns, "count": 2, "empty": ()}, cell="count = 2")
    second = ks.manifest("cached").by_name()
    assert second["frac"].content_hash == first["frac"].content_hash
    back: dict = {}
    restore(ks, "cached", back)
    assert back["frac"] == fractions.Fraction(1, 3) and back["count"] == 2 and back["t"] == [(), "x"]


class Holder:
    pass


def test_a_plain_container_holding_any_other_variable_keeps_it_shared(ks):
    """Found by the property test above: ``v2 = {"held": v0}`` with ``v0`` a memoryview (or an
    instance) was planned as a container that holds no variable, and pickled a copy of it."""
    thing = Holder()
    ns = {"view": memoryview(b""), "thing": thing, "box": {"held": None}, "row": [thing]}
    ns["box"]["held"] = ns["view"]
    Saver(ks, "held", "held").save(dict(ns), cell="pass")
    back: dict = {}
    restore(ks, "held", back)
    assert back["box"]["held"] is back["view"] and back["row"][0] is back["thing"]
