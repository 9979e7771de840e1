"""Notebook identity: which saved state belongs to which kernel.

A notebook's id is flat and safe for URLs (``/api/notebooks/{id}/state``) and
file names: ``[A-Za-z0-9._-]``, no leading dot, no ``..``, at most 255 characters.

It comes from the notebook's path relative to the Jupyter root:
``hello_world.ipynb`` -> ``hello_world.ipynb``; ``sub/x.ipynb`` -> ``sub--x.ipynb``.
When that mapping would lose information (other characters, a ``--`` already in
the path, a leading dot, too long), the unsafe characters become ``_`` and
``-`` plus 8 hex digits of the path's SHA-256 is appended, so two paths never
share an id. The display path is kept beside the id.

Where the kernel's notebook comes from, first match wins:

1. ``PIPULATE_NOTEBOOK`` in the kernel's environment, or ``c.Pipulate.notebook``
   in IPython's config (``%load_ext``-time config), or ``__pipulate_notebook__``
   set in the namespace before ``%load_ext pipulate``;
2. ``__session__`` in the namespace / ``JPY_SESSION_NAME`` (set by Jupyter: the
   notebook's path), made relative to ``PIPULATE_NOTEBOOKS_DIR`` (the folder
   JupyterLab serves) or to the workstation checkout when it lies inside;
3. plain IPython: ``ipython-<folder>-<hash of the working directory>``, stable
   for a working directory.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

MAX_ID_LENGTH = 255
_SAFE = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._-]")


def validate_notebook_id(notebook_id) -> str:
    """``notebook_id`` if it is a safe flat id; ValueError saying why otherwise."""
    if not isinstance(notebook_id, str) or not notebook_id:
        raise ValueError(f"a notebook id must be a non-empty string, got {notebook_id!r}")
    if len(notebook_id) > MAX_ID_LENGTH:
        raise ValueError(f"a notebook id must be at most {MAX_ID_LENGTH} characters, got {len(notebook_id)}")
    if not _SAFE.fullmatch(notebook_id):
        raise ValueError(f"a notebook id may only hold letters, digits, '.', '_' and '-': {notebook_id!r}")
    if notebook_id.startswith(".") or ".." in notebook_id:
        raise ValueError(f"a notebook id must not start with '.' or contain '..': {notebook_id!r}")
    return notebook_id


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def notebook_id_for_path(display: str) -> str:
    """The flat id of a notebook whose (relative, '/'-separated) path is ``display``."""
    parts = [p for p in display.replace("\\", "/").split("/") if p not in ("", ".")]
    lossless = all(_SAFE.fullmatch(p) and "--" not in p for p in parts) and parts
    candidate = "--".join(_UNSAFE_CHAR.sub("_", p) for p in parts) or "notebook"
    candidate = candidate.replace("..", "_.")
    lossless = lossless and candidate == "--".join(parts) and not candidate.startswith(".")
    if lossless and len(candidate) <= MAX_ID_LENGTH:
        return validate_notebook_id(candidate)
    candidate = candidate.lstrip(".") or "notebook"
    suffix = "-" + _short_hash(display)
    candidate = candidate[: MAX_ID_LENGTH - len(suffix)] + suffix
    candidate = candidate.replace("..", "_.")
    return validate_notebook_id(candidate)


def display_path(path: str) -> str:
    """A notebook path as the user knows it: relative to the Jupyter root when possible."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    roots = []
    if os.environ.get("PIPULATE_NOTEBOOKS_DIR"):
        roots.append(Path(os.environ["PIPULATE_NOTEBOOKS_DIR"]))
    from ..home import checkout_root

    root = checkout_root()
    if root is not None:
        roots.append(root)
    for base in roots:
        try:
            return p.resolve().relative_to(base.resolve()).as_posix()
        except (ValueError, OSError):
            continue
    return p.as_posix()


def detect_notebook(ip=None) -> tuple[str, str]:
    """(id, display name) of the notebook the kernel ``ip`` runs."""
    ns = getattr(ip, "user_ns", {}) if ip is not None else {}
    explicit = os.environ.get("PIPULATE_NOTEBOOK") or _config_notebook(ip) or ns.get("__pipulate_notebook__")
    if explicit:
        name = str(explicit)
        try:
            return validate_notebook_id(name), name
        except ValueError:
            return notebook_id_for_path(name), name
    session = ns.get("__session__") or os.environ.get("JPY_SESSION_NAME")
    if session:
        display = display_path(str(session))
        return notebook_id_for_path(display), display
    cwd = os.getcwd()
    folder = _UNSAFE_CHAR.sub("_", Path(cwd).name)[:60].lstrip(".") or "root"
    return validate_notebook_id(f"ipython-{folder}-{_short_hash(cwd)}"), f"IPython in {cwd}"


def _config_notebook(ip) -> str | None:
    try:
        section = ip.config.get("Pipulate") if ip is not None else None
        value = section.get("notebook") if section is not None else None
    except Exception:
        return None
    return value if isinstance(value, str) and value else None
