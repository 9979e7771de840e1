"""Jupyter's checkpoints: ``.ipynb_checkpoints/NAME-checkpoint.EXT`` beside each file.

A checkpoint that differs from its notebook (or whose notebook is gone) may hold
what the notebook lost: an overwrite with an empty notebook, a deletion.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .history import RecoveryError

CHECKPOINT_DIR = ".ipynb_checkpoints"
SUFFIX = "-checkpoint"
# Folders never worth walking into.
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv",
             ".tox", ".mypy_cache", ".pytest_cache", "site-packages"}


@dataclass
class Checkpoint:
    path: Path          # the checkpoint file
    notebook: Path      # the file it is a copy of
    status: str         # "notebook gone" or "differs"
    detail: str
    mtime: float

    @property
    def saved(self) -> str:
        from ..display import local_time

        return local_time(self.mtime)


def notebook_for(checkpoint: Path) -> Path | None:
    stem, ext = checkpoint.stem, checkpoint.suffix
    if not stem.endswith(SUFFIX):
        return None
    return checkpoint.parent.parent / (stem[: -len(SUFFIX)] + ext)


def _cells(data: bytes) -> list[dict] | None:
    try:
        return json.loads(data).get("cells")
    except (ValueError, AttributeError):
        return None


def describe(checkpoint_bytes: bytes, notebook_bytes: bytes | None) -> str:
    old = _cells(checkpoint_bytes)
    if old is None:
        return f"{len(checkpoint_bytes)} bytes"
    text = f"{len(old)} cells"
    if notebook_bytes is not None:
        new = _cells(notebook_bytes)
        if new is not None:
            text += f"; the notebook now has {len(new)}"
            if len(new) < len(old) or sum(len("".join(c.get("source", ""))) for c in new) == 0:
                text += " (cells lost)"
    return text


def scan(root: str | os.PathLike = ".", progress=None) -> list[Checkpoint]:
    """Checkpoints under ``root`` that differ from their notebook, newest first."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise RecoveryError(f"{root} is not a folder")
    found: list[Checkpoint] = []
    walked = 0
    for dirpath, dirnames, filenames in os.walk(root):
        walked += 1
        if progress and walked % 200 == 0:
            progress(f"scanned {walked} folders, {len(found)} checkpoints differ")
        dirnames[:] = [d for d in dirnames
                       if d == CHECKPOINT_DIR or not (d in SKIP_DIRS or d.startswith("."))]
        if Path(dirpath).name != CHECKPOINT_DIR:
            continue
        for name in filenames:
            path = Path(dirpath) / name
            notebook = notebook_for(path)
            if notebook is None:
                continue
            try:
                data = path.read_bytes()
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if not notebook.exists():
                found.append(Checkpoint(path, notebook, "notebook gone", describe(data, None), mtime))
                continue
            try:
                current = notebook.read_bytes()
            except OSError:
                continue
            if current != data:
                found.append(Checkpoint(path, notebook, "differs", describe(data, current), mtime))
    found.sort(key=lambda c: c.mtime, reverse=True)
    return found


def pick(found: list[Checkpoint], which: str) -> Checkpoint:
    """A checkpoint by its number in the listing (1 = newest) or by its path."""
    if which.isdigit():
        n = int(which)
        if not 1 <= n <= len(found):
            raise RecoveryError(f"there is no checkpoint {n}: the listing has {len(found)}")
        return found[n - 1]
    path = Path(which).expanduser().resolve()
    for c in found:
        if c.path.resolve() == path:
            return c
    if path.is_file() and notebook_for(path):
        notebook = notebook_for(path)
        return Checkpoint(path, notebook, "given", "", path.stat().st_mtime)
    raise RecoveryError(f"{which} is neither a number from the listing nor a checkpoint file")
