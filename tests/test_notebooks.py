"""The notebooks that ship with the workstation: valid, clean, and they run.

A notebook that asks the user to restart the kernel is run in two halves, each
in a fresh kernel (a real restart: a new process), split at the cell tagged
``restart-kernel-here``. Kernels use the workstation's kernel spec (the one
`pipulate up` gives JupyterLab), a temporary PIPULATE_HOME and IPYTHONDIR.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
SHIPPED = sorted(p.name for p in (NOTEBOOKS).glob("*.ipynb"))  # every template, as shipped
RESTART_TAG = "restart-kernel-here"


@pytest.fixture(autouse=True)
def workstation_kernels(tmp_path, monkeypatch):
    """Kernels as the workstation starts them; Jupyter's files in the temporary folder."""
    from pipulate.jupyter import SHARE_DIR

    monkeypatch.setenv("JUPYTER_PATH", str(SHARE_DIR))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter-config"))
    monkeypatch.setenv("PIPULATE_NOTEBOOKS_DIR", str(tmp_path))
    monkeypatch.delenv("PYTHONPATH", raising=False)


def load(name: str):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def halves(nb):
    """The cells before and after the restart point, as two notebooks."""
    marks = [i for i, c in enumerate(nb.cells) if RESTART_TAG in c.metadata.get("tags", [])]
    assert len(marks) == 1, f"expected one cell tagged {RESTART_TAG}"
    first, second = copy.deepcopy(nb), copy.deepcopy(nb)
    first.cells = nb.cells[:marks[0]]
    second.cells = nb.cells[marks[0]:]
    return first, second


def run(nb, cwd: Path):
    """Execute ``nb`` in a fresh kernel; fail with the cell and its error if a cell fails."""
    # nbclient keeps history in memory unless told otherwise; the workstation's kernels
    # write it where IPython always does, which is what recovery reads.
    history = Path(os.environ["IPYTHONDIR"]) / "profile_default" / "history.sqlite"
    client = NotebookClient(nb, kernel_name="python3", timeout=180, allow_errors=False,
                            ipython_hist_file=str(history), resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
    return "".join(parts)


def result(cell) -> str:
    """The cell's value (its execute_result), without anything printed along the way."""
    return "".join(o.data.get("text/plain", "") for o in cell.get("outputs", [])
                   if o.output_type == "execute_result")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_notebooks_are_valid_and_clean(name):
    raw = json.loads((NOTEBOOKS / name).read_text())
    assert (raw["nbformat"], raw["nbformat_minor"]) >= (4, 5)
    nb = load(name)
    nbformat.validate(nb)
    ids = [c.id for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: stored output in {cell.id}"
    assert nb.metadata.kernelspec.name == "python3"


def test_hello_world_survives_a_kernel_restart(tmp_path, isolated_home):
    first, second = halves(load("hello_world.ipynb"))
    run(first, tmp_path)
    run(second, tmp_path)  # a new kernel process: nothing of the first is in memory
    code = [c for c in second.cells if c.cell_type == "code"]
    # Both kinds of state came back: the kernel variable `job`, restored with a line that
    # names it, and the pip value, read from the store.
    assert result(code[0]) == "'hello'"
    restored = [line for line in text(code[0]).splitlines() if line.startswith("pipulate: restored")]
    assert restored and restored[0].endswith(": job"), text(code[0])
    assert result(code[1]) == "'Mike'"
    assert result(code[3]) == "'Hello, Mike Levin!'"
    assert result(code[-1]) == "{'first_name': 'Mike', 'last_name': 'Levin', 'greeting': 'Hello, Mike Levin!'}"

    from pipulate import Pipulate

    store = Pipulate(isolated_home)
    try:
        assert store.read("hello") == {"first_name": "Mike", "last_name": "Levin",
                                       "greeting": "Hello, Mike Levin!"}
    finally:
        store.close()


def test_kernel_state_demo_brings_everything_back_after_a_restart(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPULATE_NOTEBOOK", "kernel_state_demo.ipynb")
    first, second = halves(load("kernel_state_demo.ipynb"))
    run(first, tmp_path)
    run(second, tmp_path)
    restored = text(next(c for c in second.cells if c.source.startswith("print(summary)")))
    assert "mean" in restored and "std" in restored
    assert "200000" in restored
    assert "42" in restored  # scaled(14)
    assert "'label': 'demo'" in restored


def test_recovery_walkthrough_runs_and_finds_the_lost_code(tmp_path, isolated_home):
    nb = run(load("recovery_walkthrough.ipynb"), tmp_path)
    # The exported session lands in the data folder, not beside the notebooks.
    assert "precious_formula" in (isolated_home / "recovered_session.py").read_text()
    assert not list(tmp_path.glob("*.py"))
    code = {c.source.split("\n")[0]: c for c in nb.cells if c.cell_type == "code"}
    found = text(code["!{pipulate} recover search precious_formula"])
    assert "precious_formula" in found, found
    assert "Traceback" not in "".join(text(c) for c in code.values())
