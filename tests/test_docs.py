"""The README is the manual: a command or setting it does not mention fails the suite."""
from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from pipulate.cli import build_parser
from pipulate.jupyter.hub import SETTINGS as HUB_SETTINGS
from pipulate.settings import Settings

from .conftest import REPO

pytestmark = pytest.mark.backends("embedded", reason="reads the docs and the code; opens no store")

README = (REPO / "README.md").read_text()


def command_paths(parser: argparse.ArgumentParser, prefix: str = "pipulate"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}"
                yield from command_paths(sub, f"{prefix} {name}")


def mentioned(path: str) -> bool:
    """`pipulate recover show` counts as mentioned in a line `pipulate recover sessions ... | show S`."""
    *head, last = path.split()
    lines = [line for line in README.splitlines() if " ".join(head) in line]
    return any(re.search(rf"(^|[\s|`]){re.escape(last)}\b", line.split(" ".join(head), 1)[1]) for line in lines)


@pytest.mark.parametrize("path", sorted(set(command_paths(build_parser()))))
def test_every_command_is_in_the_readme(path):
    assert mentioned(path), f"README.md does not document `{path}`"


def workstation_env_vars() -> set[str]:
    text = (REPO / "config.py").read_text()
    return set(re.findall(r"PIPULATE_[A-Z_]+", text))


@pytest.mark.parametrize("var", sorted({Settings.env_name(f.name) for f in dataclasses.fields(Settings)}
                                       | workstation_env_vars()))
def test_every_setting_is_in_the_readme(var):
    assert f"`{var}`" in README, f"README.md's settings table does not list {var}"


def list_env_vars() -> set[str]:
    """The settings of the list pattern (pip.scrape, List to spreadsheet), read where they are used."""
    text = "".join((REPO / f).read_text() for f in ("pipulate/scrape.py", "apps/list_to_sheet.py"))
    return set(re.findall(r"PIPULATE_[A-Z_]+", text))


@pytest.mark.parametrize("var", sorted(list_env_vars()))
def test_every_list_setting_is_in_the_readme(var):
    assert f"`{var}`" in README, f"README.md's settings table does not list {var}"


@pytest.mark.parametrize("name", ["set", "get", "read", "jobs", "clear", "delete", "map", "scrape", "to_excel"])
def test_every_pip_call_is_in_the_readme(name):
    assert f"pip.{name}(" in README


@pytest.mark.parametrize("page", ["README.md", "docs/workstation.md"])
def test_the_settings_tables_give_the_defaults_config_py_has(page):
    from pipulate.up import load_workstation_config

    text = (REPO / page).read_text()
    for env, default, _ in load_workstation_config(REPO).describe():
        if env == "PIPULATE_HOME":  # described in words, not as one value
            continue
        row = re.search(rf"^\| `{env}` \| ([^|]+) \|", text, re.M)
        assert row, f"{page} has no settings row for {env}"
        assert row.group(1).strip() == default, f"{page} gives {env} the default {row.group(1)!r}, config.py {default!r}"


@pytest.mark.parametrize("var", sorted(HUB_SETTINGS))
def test_every_hub_setting_is_in_its_doc_with_its_default(var):
    text = (REPO / "docs" / "jupyterhub.md").read_text()
    row = re.search(rf"^\| `{var}` \| ([^|]+) \|", text, re.M)
    assert row, f"docs/jupyterhub.md has no settings row for {var}"
    assert row.group(1).strip() == (HUB_SETTINGS[var][0] or "(none)"), f"docs/jupyterhub.md: {var}'s default"
