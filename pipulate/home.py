"""Where the workstation keeps its data: the one rule every process must agree on.

Order: ``PIPULATE_HOME`` if set; else the checkout's ``data/`` when this package
runs from a workstation checkout (editable install, or imported from the
checkout); else ``~/.pipulate`` (installed as a plain package, e.g. on a hosted
notebook service). The server, ``pipulate up`` and every kernel resolve it the
same way, so they share one store.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

ENV_VAR = "PIPULATE_HOME"


def checkout_root() -> Path | None:
    """The workstation checkout this package was imported from, or None.

    A checkout is recognised by a ``pyproject.toml`` naming the ``pipulate``
    project beside the package folder; an installed copy in site-packages has none.
    """
    root = Path(__file__).resolve().parent.parent
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return None
    return root if project.get("name") == "pipulate" else None


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The data folder to use, created if missing. An explicit ``home`` wins."""
    if home is None:
        home = os.environ.get(ENV_VAR) or None
    if home is None:
        root = checkout_root()
        home = root / "data" if root else Path.home() / ".pipulate"
    path = Path(home).expanduser().resolve()
    # Only its user may enter a new home: the store holds every value and version the user
    # made, and other users of the machine must not read it from disk either.
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def keep_private(path: Path) -> bool:
    """Take group and other access away from ``path`` if this user owns it; True if changed.

    A checkout's ``data/`` comes with the clone's umask (usually 0755): any user of the
    machine could read the store straight from disk, the web app's token notwithstanding.
    """
    try:
        st = path.stat()
        if st.st_uid != os.getuid() or not st.st_mode & 0o077:
            return False
        path.chmod(0o700)
        return True
    except OSError:  # not ours to change (a shared or read-only folder): leave it
        return False
