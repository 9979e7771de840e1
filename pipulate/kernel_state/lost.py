"""What a failing cell left unsaved, told after the restart.

No version is made after a cell that raised (its variables may be half made). The next
successful cell's save includes what it left; but when the kernel ends first (a crash, a
restart), those variables are gone, and the user should hear which ones and why. So a
failing cell that assigned variables leaves a small note, ``<home>/kernel_lost/<id>.json``
(written atomically), which the next save removes and the next restore reports.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

FOLDER = "kernel_lost"


def note_path(home: Path, notebook: str) -> Path:
    return Path(home) / FOLDER / f"{notebook}.json"


def write(home: Path, notebook: str, names, cell: str, error: str) -> None:
    path = note_path(home, notebook)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"names": sorted(names), "cell": cell, "error": error}))
    os.replace(tmp, path)


def clear(home: Path, notebook: str) -> None:
    try:
        note_path(home, notebook).unlink()
    except FileNotFoundError:
        pass


def read(home: Path, notebook: str) -> dict | None:
    try:
        note = json.loads(note_path(home, notebook).read_text())
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) and isinstance(note.get("names"), list) else None


def line(note: dict) -> str:
    names = ", ".join(str(n) for n in note["names"])
    return (f"Lost: {names} (made by cell {note['cell']}, which raised {note['error']}; nothing is "
            "saved after a failing cell, and the kernel ended before another cell ran)")
