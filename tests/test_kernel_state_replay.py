"""Variables that cannot be stored come back by running again the cells that made them.

Real kernels from the workstation's kernel spec, killed (SIGKILL) between the save and
the restart, as a crash would.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(300)


def crash_and_restart(kernels, k, notebook, **kwargs):
    k.kill9()
    return kernels.start(notebook, **kwargs)


def test_a_generator_and_a_hash_object_are_rebuilt_by_state_rebuild(kernels, ks):
    k, _ = kernels.start("replay.ipynb")
    k.ok("import hashlib\nseed = [1, 2, 3]\nh = hashlib.sha256(b'abc')")
    k.ok("gen = (x * 2 for x in seed)\nnext(gen)")
    k.ok("h.update(b'more')\nexpected = h.hexdigest()")
    shown = k.ok("%state")
    assert "gen: cannot pickle 'generator' object; rebuilt by cell [3]" in shown, shown
    assert "rebuilt by cells [2], [4]" in shown, shown

    k, out = crash_and_restart(kernels, k, "replay.ipynb")
    assert "Not stored, but their cells can run again: gen (cannot pickle 'generator' object; cell [3] of an earlier kernel); " \
           "h (cannot pickle '_hashlib.HASH' object; cells [2], [4] of an earlier kernel). `%state rebuild` runs them" in out, out
    assert "NameError" in (k.run("gen")[1] or "")  # nothing runs before the user says so
    assert "rebuilt 2 variables by running their cells again: gen, h" in k.ok("%state rebuild")
    # Equal to what they were: the hash has both updates, the generator was advanced once.
    assert "True [4, 6]" in k.ok("print(h.hexdigest() == expected, list(gen))")
    assert "nothing to rebuild" in k.ok("%state rebuild")

    # Rebuilt once, rebuildable again after the next crash (the recipe is carried on).
    k, out = crash_and_restart(kernels, k, "replay.ipynb")
    assert "Not stored, but their cells can run again: gen" in out and "h (" in out, out
    k.ok("%state rebuild")
    assert "True []" in k.ok("print(h.hexdigest() == expected, list(gen))")  # consumed before the crash


def test_a_chain_is_rebuilt_in_order_and_shares_its_objects(kernels):
    k, _ = kernels.start("chain.ipynb")
    k.ok("base = 10")
    k.ok("a = (base + i for i in range(5))")
    k.ok("b = (v * 2 for v in a)")  # made from `a`, which cannot be stored either
    k.ok("first = next(b)")
    k, out = crash_and_restart(kernels, k, "chain.ipynb")
    # `a` is used by the cell that made `b` (and advanced through `b` by the next one): the
    # cells of both run once, together, so `b` draws from the very `a` that comes back.
    assert ("a (cannot pickle 'generator' object; cells [3], [4] of an earlier kernel); "
            "b (cannot pickle 'generator' object; cells [3], [4], [5] of an earlier kernel)") in out, out
    k.ok("%state rebuild")
    assert "20 [22, 24, 26, 28] []" in k.ok("print(first, list(b), list(a))")


def test_cells_that_act_outside_the_kernel_run_again_only_when_asked(kernels, tmp_path):
    log = tmp_path / "effects.log"
    make = f"print('ran', file=open({str(log)!r}, 'a'), flush=True)\nticker = (i for i in range(3))"
    k, _ = kernels.start("effects.ipynb")
    k.ok(make)
    assert log.read_text() == "ran\n"
    k, out = crash_and_restart(kernels, k, "effects.ipynb")
    assert "ticker (cannot pickle 'generator' object; cell [2] of an earlier kernel)" in out and "%state rebuild" in out, out
    assert log.read_text() == "ran\n"  # the restart ran nothing
    k.ok("%state rebuild")
    assert log.read_text() == "ran\nran\n"

    # PIPULATE_AUTO_REBUILD=on: the user chose to have it run at every start.
    k, out = crash_and_restart(kernels, k, "effects.ipynb", extra_env={"PIPULATE_AUTO_REBUILD": "on"})
    assert "Rebuilt by running their cells again: ticker" in out, out
    assert log.read_text() == "ran\nran\nran\n"
    assert "[0, 1, 2]" in k.ok("print(list(ticker))")


def test_a_recipe_whose_input_changed_later_is_refused_with_the_reason(kernels):
    k, _ = kernels.start("mutated.ipynb")
    k.ok("data = [1, 2, 3]")
    k.ok("it = (x for x in list(data))")
    k.ok("data.append(4)")  # the input `it` was made from is not what it was
    shown = k.ok("%state")
    assert "it: cannot pickle 'generator' object; not rebuilt: 'data' changed after cell [3] used it" in shown
    k, out = crash_and_restart(kernels, k, "mutated.ipynb")
    assert "Skipped: it (cannot pickle 'generator' object; not rebuilt: 'data' changed after cell [3] used it)" in out
    assert "nothing to rebuild" in k.ok("%state rebuild") or "not rebuilt" in k.ok("%state rebuild")
    assert "NameError" in (k.run("it")[1] or "")
    assert "[1, 2, 3, 4]" in k.ok("print(data)")  # the stored variables are untouched


def test_a_cell_that_fails_when_run_again_touches_nothing_and_says_which(kernels, tmp_path):
    flag = tmp_path / "allowed"
    flag.write_text("yes")
    k, _ = kernels.start("fails.ipynb")
    k.ok("kept = {'x': 1}")
    k.ok(f"import pathlib\nassert pathlib.Path({str(flag)!r}).exists()\ngen = (i for i in kept)")
    flag.unlink()
    k, out = crash_and_restart(kernels, k, "fails.ipynb")
    out = k.ok("%state rebuild")
    assert "not rebuilt: gen (cell [3] failed when run again (AssertionError" in out, out
    assert "{'x': 1}" in k.ok("print(kept)")
    assert "NameError" in (k.run("gen")[1] or "")


def test_cells_with_magics_are_not_followed(kernels):
    k, _ = kernels.start("magic-cells.ipynb")
    k.ok("words = (w for w in ['a', 'b'])")
    k.ok("!true\nnext(words)")  # a shell escape: what it did cannot be known
    shown = k.ok("%state")
    assert "not rebuilt: cell [3] runs code the workstation cannot follow" in shown, shown


def test_a_widget_is_rebuilt_with_the_value_the_cells_gave_it(kernels):
    k, _ = kernels.start("widget.ipynb")
    k.ok("import ipywidgets as widgets\nlimit = 7")
    k.ok("slider = widgets.IntSlider(value=limit, max=10)")
    k.ok("slider.value += 1")
    shown = k.ok("%state")
    assert "slider: " in shown and "rebuilt by cells [3], [4]" in shown, shown
    k, out = crash_and_restart(kernels, k, "widget.ipynb")
    assert "slider (" in out and "%state rebuild" in out, out
    k.ok("%state rebuild")
    assert "IntSlider 8" in k.ok("print(type(slider).__name__, slider.value)")
