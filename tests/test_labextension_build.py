"""The prebuilt JupyterLab extension in the package matches its sources (CI has no node).

`npm run build:prod` in labextension/ writes the hash of the sources into the built folder
(labextension/scripts/stamp.js); this recomputes it the same way.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.backends("embedded", reason="builds the JupyterLab extension; opens no store")

SOURCES = REPO / "labextension"
INPUTS = ["package.json", "package-lock.json", "tsconfig.json", "src", "style"]
REBUILD = "cd labextension && npm ci && PATH=../.venv/bin:$PATH npm run build:prod (docs/jupyterlab.md)"


def _files(rel: str) -> list[str]:
    full = SOURCES / rel
    if full.is_dir():
        return [f for name in sorted(p.name for p in full.iterdir()) for f in _files(f"{rel}/{name}")]
    return [rel]


def sources_hash() -> str:
    digest = hashlib.sha256()
    for rel in sorted(f for top in INPUTS for f in _files(top)):
        digest.update(rel.encode() + b"\0" + (SOURCES / rel).read_bytes() + b"\0")
    return digest.hexdigest()


def test_committed_assets_match_the_sources():
    out = SOURCES / json.loads((SOURCES / "package.json").read_text())["jupyterlab"]["outputDir"]
    stamp = out / "sources.sha256"
    assert stamp.is_file(), f"no built extension in {out}; build it: {REBUILD}"
    assert stamp.read_text().strip() == sources_hash(), (
        f"the built extension in {out.relative_to(REPO)} is older than labextension/'s sources; "
        f"rebuild it and commit the result: {REBUILD}")
    built = json.loads((out / "package.json").read_text())
    assert built["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    assert (out / built["jupyterlab"]["_build"]["load"]).is_file()


def test_no_node_modules_or_lib_in_the_package():
    assert not list((REPO / "pipulate").rglob("node_modules"))
    assert (SOURCES / "package-lock.json").is_file(), "the lock file makes the build reproducible"


def test_its_settings_and_commands_are_documented():
    import re

    docs = (REPO / "docs" / "jupyterlab.md").read_text()
    server = "".join(p.read_text() for p in (REPO / "pipulate" / "jupyter" / "server").glob("*.py"))
    for var in set(re.findall(r"PIPULATE_[A-Z_]+", server)) - {"PIPULATE_PORT", "PIPULATE_HOST", "PIPULATE_HOME"}:  # the README has those
        assert f"`{var}`" in docs, var
    commands = (SOURCES / "src" / "commands.ts").read_text()
    for label in re.findall(r"label: '([^']+?)(?:…)?'", commands):
        if label != "Open Recovered Notebook":
            assert label in docs, label
    assert "%state undo" in (REPO / "docs" / "kernel-state.md").read_text() or "%state undo" in docs
