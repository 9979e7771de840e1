"""The user's own copies of the shipped notebooks.

The notebooks in the checkout's ``notebooks/`` are templates: tracked by git and
changed only by updates. ``pipulate up`` opens JupyterLab on the user's folder
(``PIPULATE_NOTEBOOKS_DIR``, default ``my_notebooks/``, which git ignores) and, on
every start, copies each template that is not there yet. So running a notebook,
saving it or making a new one never changes a tracked file, and an update never
conflicts with the user's work.

A file the user has is never overwritten. When an update changes a template whose
copy the user already has, the new template is put next to it as
``NAME-new.ipynb`` (``NAME-new-2.ipynb``, ... if that is taken), once per change:
``.pipulate-templates.json`` in the user's folder remembers which version of each
template was last handed over.

Copies of notebooks get ``language_info.version`` of the Python that runs the
kernels (JupyterLab's own interpreter, the one running this), so JupyterLab does
not mark a fresh copy modified when its kernel reports a different patch release.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

RECORD = ".pipulate-templates.json"


@dataclass
class Handover:
    """What one start did: ``copied`` templates (relative paths) and ``offered`` new
    versions of changed templates as (template, the new copy's relative path)."""
    copied: list[str] = field(default_factory=list)
    offered: list[tuple[str, str]] = field(default_factory=list)
    same_folder: bool = False  # the user's folder is the templates folder: nothing to copy


def templates(folder: Path) -> list[str]:
    """The template files under ``folder`` ('/'-separated, sorted): no hidden files or folders
    (Jupyter's checkpoints), no caches."""
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and not any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            found.append(rel.as_posix())
    return sorted(found)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def for_this_python(data: bytes) -> bytes:
    """A notebook's bytes with ``language_info.version`` of this interpreter, in the form
    Jupyter's contents manager writes (so the copy is what JupyterLab would save)."""
    import nbformat

    nb = nbformat.reads(data.decode("utf-8"), as_version=nbformat.NO_CONVERT)
    info = nb.get("metadata", {}).get("language_info")
    version = sys.version.split()[0]  # what ipykernel reports
    if not info or info.get("name") != "python" or info.get("version") in (None, version):
        return data
    info["version"] = version
    text = nbformat.writes(nb, version=nbformat.NO_CONVERT)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def copy_bytes(template: Path) -> bytes:
    data = template.read_bytes()
    if template.suffix == ".ipynb":
        try:
            return for_this_python(data)
        except Exception:  # a template nbformat cannot read is still the user's to open
            return data
    return data


def _write_new(dest: Path, data: bytes) -> bool:
    """Write ``dest`` whole, only if it does not exist; False if it does."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # A hard link never replaces an existing file: a copy the user made in the meantime
        # wins, and a crash leaves either nothing or the whole file under the name.
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if dest.exists():
                return False
            os.replace(tmp, dest)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _free_name(folder: Path, rel: str) -> str:
    path = Path(rel)
    stem, suffix = path.name[: -len(path.suffix)] if path.suffix else path.name, path.suffix
    n = 1
    while True:
        name = f"{stem}-new{suffix}" if n == 1 else f"{stem}-new-{n}{suffix}"
        candidate = (path.parent / name).as_posix()
        if not (folder / candidate).exists():
            return candidate
        n += 1


def _read_record(user: Path) -> dict[str, str]:
    try:
        data = json.loads((user / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(data, dict) else {}


def _write_record(user: Path, record: dict[str, str]) -> None:
    path = user / RECORD
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def hand_over(template_dir: Path, user_dir: Path) -> Handover:
    """Copy into ``user_dir`` every template of ``template_dir`` it does not have; offer a
    changed template as a new copy beside the user's. Never overwrites a file."""
    template_dir, user_dir = Path(template_dir).resolve(), Path(user_dir).resolve()
    done = Handover()
    if template_dir == user_dir:
        done.same_folder = True
        return done
    user_dir.mkdir(parents=True, exist_ok=True)
    record = _read_record(user_dir)
    before = dict(record)
    for rel in templates(template_dir):
        source = template_dir / rel
        if source.resolve().is_relative_to(user_dir):  # the user's folder inside the templates'
            continue
        data = source.read_bytes()
        shipped = digest(data)
        dest = user_dir / rel
        if not dest.exists():
            if _write_new(dest, copy_bytes(source)):
                done.copied.append(rel)
            record[rel] = shipped
        elif record.get(rel) is None:
            record[rel] = shipped  # a copy from before this record: nothing to compare against
        elif record[rel] != shipped:
            ours = copy_bytes(source)
            if dest.read_bytes() not in (data, ours):
                new = _free_name(user_dir, rel)
                if _write_new(user_dir / new, ours):
                    done.offered.append((rel, new))
            record[rel] = shipped
    if record != before:
        _write_record(user_dir, record)
    return done
