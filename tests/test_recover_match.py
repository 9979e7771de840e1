"""`pipulate recover match NOTEBOOK` ranks the right session first."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from tests.test_recover_support import run_cli, shell_sessions

SESSIONS = [
    ["import json", "data = {'a': 1}", "text = json.dumps(data)", "len(text)"],
    ["import math", "values = [1, 4, 9]", "roots = [math.sqrt(v) for v in values]",
     "total = sum(roots)", "print(total)", "label = 'roots'"],
    ["import math", "values = [2, 3]", "print('something else')"],
]


@pytest.fixture
def sessions():
    shell_sessions(Path(os.environ["IPYTHONDIR"]), SESSIONS)


def notebook_from(path: Path, cells: list[str]) -> Path:
    nb = v4.new_notebook()
    nb.cells = [v4.new_markdown_cell("# Roots")] + [v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def first_ranked(out: str) -> str:
    rows = [ln.split() for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    return rows[0][1]


def test_match_ranks_the_session_the_notebook_came_from_first(sessions, tmp_path):
    # Built from session 2, with one cell edited after it ran and one never run.
    cells = SESSIONS[1][:3] + ["total = sum(roots)  # edited", "print(total)", "extra = 1"]
    nb = notebook_from(tmp_path / "roots.ipynb", cells)
    code, out, err = run_cli("match", str(nb))
    assert code == 0, err
    assert first_ranked(out) == "2", out
    assert "recover export 2 -o" in out
    assert "1 " not in [ln.split()[1] + " " for ln in out.splitlines() if ln.strip()[:1].isdigit()][:1]


def test_match_finds_an_emptied_notebook_through_its_checkpoint(sessions, tmp_path):
    nb = notebook_from(tmp_path / "roots.ipynb", SESSIONS[1])
    cp_dir = tmp_path / ".ipynb_checkpoints"
    cp_dir.mkdir()
    (cp_dir / "roots-checkpoint.ipynb").write_bytes(nb.read_bytes())
    nbformat.write(v4.new_notebook(), nb)  # overwritten with an empty notebook
    code, out, err = run_cli("match", str(nb))
    assert code == 0, err
    assert "its checkpoint" in out
    assert first_ranked(out) == "2"


def test_match_a_notebook_with_no_code(sessions, tmp_path):
    nb = tmp_path / "empty.ipynb"
    nbformat.write(v4.new_notebook(), nb)
    code, _, err = run_cli("match", str(nb))
    assert code == 1 and "has no code cells" in err
    code, _, err = run_cli("match", str(tmp_path / "gone.ipynb"))
    assert code == 1 and "does not exist" in err


def test_match_uses_a_live_kernels_notebook_name(sessions, tmp_path):
    from pipulate.recover import match
    from pipulate.recover.history import History
    from pipulate.recover.live import KernelProcess

    nb = notebook_from(tmp_path / "same.ipynb", ["import math"])  # sessions 2 and 3 both ran it
    with History() as h:
        third = h.session("3")
        third.end = None  # as if its kernel were still running
        # a pid with no /proc entry: paired with its session on start time alone
        kp = KernelProcess(pid=2**22 + 12345, cmdline=["python", "-m", "ipykernel_launcher"],
                           started=third.start.timestamp(), notebook="same.ipynb")
        ranked, _ = match.rank(nb, h, [kp])
        assert ranked[0].session.number == 3
        assert ranked[0].signals["live"] == 1.0
