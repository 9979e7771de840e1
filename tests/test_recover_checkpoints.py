"""`pipulate recover checkpoints`: Jupyter checkpoint copies that differ from their notebook."""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from tests.test_recover_support import run_cli

pytestmark = pytest.mark.backends("embedded", reason="reads Jupyter's checkpoints; opens no store")


def write_nb(path: Path, *sources: str) -> bytes:
    nb = v4.new_notebook()
    nb.cells = [v4.new_code_cell(s) for s in sources]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path.read_bytes()


def checkpoint(nb: Path, data: bytes, age: float = 0) -> Path:
    cp = nb.parent / ".ipynb_checkpoints" / f"{nb.stem}-checkpoint{nb.suffix}"
    cp.parent.mkdir(exist_ok=True)
    cp.write_bytes(data)
    t = time.time() - age
    os.utime(cp, (t, t))
    return cp


def make_tree(root: Path) -> dict:
    same = root / "same.ipynb"
    checkpoint(same, write_nb(same, "print('unchanged')"), age=10)
    emptied = root / "project" / "emptied.ipynb"
    old = write_nb(emptied, "a = 1", "b = 2")
    write_nb(emptied)  # overwritten with an empty notebook
    checkpoint(emptied, old, age=100)
    gone = root / "deleted" / "gone.ipynb"
    old_gone = write_nb(gone, "lost = True")
    checkpoint(gone, old_gone, age=5)
    gone.unlink()
    return {"emptied": emptied, "gone": gone}


def test_lists_differing_and_orphaned_checkpoints_newest_first(tmp_path):
    make_tree(tmp_path)
    code, out, err = run_cli("checkpoints", str(tmp_path))
    assert code == 0, err
    rows = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert len(rows) == 2, out
    assert "notebook gone" in rows[0] and "gone.ipynb" in rows[0]
    assert "differs" in rows[1] and "emptied.ipynb" in rows[1] and "cells lost" in rows[1]
    assert "same.ipynb" not in out


def test_restore_backs_up_the_current_notebook(tmp_path):
    paths = make_tree(tmp_path)
    code, out, err = run_cli("checkpoints", str(tmp_path), "--restore", "2")
    assert code == 0, err
    assert [c.source for c in nbformat.read(paths["emptied"], as_version=4).cells] == ["a = 1", "b = 2"]
    backups = list(paths["emptied"].parent.glob("emptied.before-restore-*.ipynb"))
    assert len(backups) == 1 and nbformat.read(backups[0], as_version=4).cells == []


def test_restore_a_deleted_notebook_and_to_a_new_file(tmp_path):
    paths = make_tree(tmp_path)
    out_file = tmp_path / "copy.ipynb"
    assert run_cli("checkpoints", str(tmp_path), "--restore", "1", "-o", str(out_file))[0] == 0
    assert nbformat.read(out_file, as_version=4).cells[0].source == "lost = True"
    assert not paths["gone"].exists()
    code, _, err = run_cli("checkpoints", str(tmp_path), "--restore", "1", "-o", str(out_file))
    assert code == 1 and "already exists" in err
    assert run_cli("checkpoints", str(tmp_path), "--restore", "1")[0] == 0
    assert paths["gone"].exists()


def test_bad_checkpoint_choices(tmp_path):
    make_tree(tmp_path)
    code, _, err = run_cli("checkpoints", str(tmp_path), "--restore", "9")
    assert code == 1 and "no checkpoint 9" in err
    code, _, err = run_cli("checkpoints", str(tmp_path / "nowhere"))
    assert code == 1 and "is not a folder" in err
    code, out, _ = run_cli("checkpoints", str(tmp_path / "deleted" / ".ipynb_checkpoints"))
    assert code == 0
