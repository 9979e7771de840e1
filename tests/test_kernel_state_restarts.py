"""Restart after restart: a notebook's variables stay the user's, however the kernel starts.

The workstation's kernels load the extension from the kernel spec, before ipykernel's
start-up code; that code files everything already in the namespace (the restored
variables) as IPython's own (``hide_initial_ns``). These tests restart real kernels the
way JupyterLab's Kernel > Restart Kernel does, several times in a row, with cells between
that assign nothing, one name, or delete a name, and check the namespace every time.
"""
from __future__ import annotations

import json

import pytest

from .kernel_helpers import MAGIC, SPEC

pytestmark = pytest.mark.timeout(300)

BUILD = """
import pandas as pd
df = pd.DataFrame({"a": range(5)})
n = 1
items = [1, 2, {"deep": True}]
alias = items
gen = (i for i in range(3))
"""

# The user's variables as IPython sees them (``%who_ls`` leaves out what it hides), and
# what each holds, as one JSON line. An expression: it binds no name in the namespace.
NAMESPACE = """print((lambda ip, ns, json: json.dumps({
    "who": sorted(ip.run_line_magic("who_ls", "")),
    "df": ns["df"]["a"].tolist() if "df" in ns else None,
    "n": ns.get("n"),
    "items": ns.get("items"),
    "alias_is_items": "alias" in ns and "items" in ns and ns["alias"] is ns["items"],
    "alias": ns.get("alias"),
}))(get_ipython(), get_ipython().user_ns, __import__("json")))"""


def namespace(k) -> dict:
    """What the kernel holds; looked at silently (no history, no save)."""
    out: list[str] = []
    k.kc.execute_interactive(NAMESPACE, silent=True, store_history=False, timeout=120, allow_stdin=False,
                             output_hook=lambda m: out.append(m["content"].get("text", ""))
                             if m["msg_type"] == "stream" else None)
    return json.loads([line for line in "".join(out).splitlines() if line.startswith("{")][-1])


@pytest.mark.parametrize("load", [SPEC, MAGIC])
def test_variables_survive_restart_after_restart(kernels, ks, load):
    k, _ = kernels.start("restarts.ipynb", load=load)
    k.ok(BUILD)
    everything = {"who": ["alias", "df", "items", "n", "pd"], "df": [0, 1, 2, 3, 4], "n": 1,
                  "items": [1, 2, {"deep": True}], "alias_is_items": True, "alias": [1, 2, {"deep": True}]}

    # Three restarts in a row, each followed by cells that assign nothing.
    for i, cell in enumerate(["df.shape", "print(n)", "items[0] + 1"]):
        out = k.restart()
        assert "restored 5 variables" in out, out
        # The generator could not be kept: every restore says so, and which cell makes it.
        assert "gen (cannot pickle 'generator' object; cell [2] of an earlier kernel)" in out, out
        assert namespace(k) == everything
        k.ok(cell)
        assert set(ks.summary("restarts.ipynb")["variable_names"]) == {"alias", "df", "items", "n", "pd"}

    # A cell that assigns one name: the new value comes back, the rest too.
    k.ok("n = 2")
    k.restart()
    assert namespace(k) == {**everything, "n": 2}

    # A cell that deletes a name: it stays gone; the list it named lives on in its alias.
    k.ok("del items")
    k.restart()
    assert namespace(k) == {**everything, "n": 2, "who": ["alias", "df", "n", "pd"], "items": None,
                            "alias_is_items": False}
    k.ok("pass")
    k.restart()
    assert namespace(k) == {**everything, "n": 2, "who": ["alias", "df", "n", "pd"], "items": None,
                            "alias_is_items": False}


def test_a_chosen_version_stays_through_later_restarts(kernels, ks):
    """The version chosen on the web page (or ``%state restore V``) is what the kernel then
    holds, and what the restarts after it bring back."""
    k, _ = kernels.start("chosen.ipynb")
    k.ok("value = 'first'\nkeep = [1]")
    k.ok("value = 'second'")
    ks.select_restore("chosen.ipynb", 1)
    assert "from version 1" in k.restart()
    for _ in range(2):
        k.ok("value")  # assigns nothing
        k.restart()
        assert "first [1]" in k.ok("print(value, keep)")

    k.ok("value = 'third'")
    assert "from version" in k.ok("%state restore 1")
    k.ok("len(keep)")
    k.restart()
    assert "first [1]" in k.ok("print(value, keep)")


def test_restored_variables_are_listed_as_the_users(kernels):
    """``%who`` and the debugger's variable view (both skip IPython's hidden names) list
    the restored variables after a start from the kernel spec."""
    k, _ = kernels.start("who.ipynb")
    k.ok("answer = 42\nlabel = 'x'")
    k.restart()
    assert k.ok("%who").split() == ["answer", "label"]
    assert "[]" in k.ok("print(sorted(set(['answer', 'label']) & set(get_ipython().user_ns_hidden)))")


def test_names_from_start_up_files_stay_ipythons_and_restored_ones_stay_the_users(kernels, ks):
    """A profile's start-up file is IPython's: its names are made again at every start and
    not saved. The user's own variables are saved and restored beside them."""
    startup = kernels.home.parent / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-helpers.py").write_text("helper_value = 41\n")
    k, _ = kernels.start("startup.ipynb")
    k.ok("mine = helper_value + 1")
    for _ in range(2):
        k.restart()
        assert "42 41" in k.ok("print(mine, helper_value)")
        assert ks.summary("startup.ipynb")["variable_names"] == ["mine"]
