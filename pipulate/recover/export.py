"""Turn recovered cells into a notebook (.ipynb, nbformat 4.5) or a percent script (.py)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from .history import Cell, RecoveryError

FORMATS = {".ipynb": "ipynb", ".py": "py:percent"}


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """The output path, refused (with a reason) for an unknown extension or an existing file."""
    out = Path(path).expanduser()
    if out.suffix.lower() not in FORMATS:
        raise RecoveryError(f"cannot write {out.name}: the output must end in .ipynb (a notebook) "
                            "or .py (a percent script)")
    if out.exists() and not force:
        raise RecoveryError(f"{out} already exists; choose another name or add --force to replace it")
    if out.exists() and out.is_dir():
        raise RecoveryError(f"{out} is a folder")
    if not out.parent.is_dir():
        raise RecoveryError(f"the folder {out.parent} does not exist")
    return out


def dedupe_cells(cells: list[Cell]) -> list[Cell]:
    """Drop re-runs of identical code, keeping each one's last run (in its last position)."""
    last = {}
    for i, cell in enumerate(cells):
        last[cell.code.strip()] = i
    return [c for i, c in enumerate(cells) if last[c.code.strip()] == i]


def to_notebook(cells: list[Cell], description: str = "", dedupe: bool = False):
    """One code cell per execution, magics as typed, outputs where the database has them."""
    import nbformat
    from nbformat import v4

    chosen = [c for c in cells if c.code.strip()]
    if dedupe:
        chosen = dedupe_cells(chosen)
    nb = v4.new_notebook()
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    if description:
        nb.metadata["pipulate"] = {"recovered_from": description}
    for cell in chosen:
        outputs = []
        if cell.output is not None:
            outputs.append(v4.new_output("execute_result", data={"text/plain": cell.output},
                                         execution_count=cell.line))
        nb.cells.append(v4.new_code_cell(cell.code, execution_count=cell.line, outputs=outputs))
    nbformat.validate(nb)
    return nb


def write_notebook(nb, path: Path, force: bool = False) -> Path:
    """Write ``nb`` as .ipynb or percent .py, atomically (a crash leaves no half file)."""
    path = check_output_path(path, force)
    if FORMATS[path.suffix.lower()] == "ipynb":
        import nbformat

        text = nbformat.writes(nb, version=4)
    else:
        import jupytext

        text = jupytext.writes(nb, fmt="py:percent")
    write_atomic(path, text.encode("utf-8"))
    return path


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def backup_path(path: Path) -> Path:
    """``name.before-restore-YYYYmmdd-HHMMSS.ext`` beside ``path``, unused."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.stem}.before-restore-{stamp}{path.suffix}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}.before-restore-{stamp}-{n}{path.suffix}")
    return candidate


def restore_bytes(data: bytes, target: Path, output: str | None, force: bool) -> tuple[Path, Path | None]:
    """Write recovered ``data``: to ``output`` (refusing to replace unless ``force``), else
    over ``target`` after copying the current ``target`` aside. Returns (written, backup)."""
    if output:
        out = Path(output).expanduser()
        if out.exists() and not force:
            raise RecoveryError(f"{out} already exists; choose another name or add --force to replace it")
        if not out.parent.is_dir():
            raise RecoveryError(f"the folder {out.parent} does not exist")
        write_atomic(out, data)
        return out, None
    backup = None
    if target.exists():
        if target.read_bytes() == data:
            return target, None
        backup = backup_path(target)
        write_atomic(backup, target.read_bytes())
    elif not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)
    return target, backup
