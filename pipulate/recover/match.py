"""Which history sessions belong to a notebook? IPython stores no notebook path, so guess well.

Signals, each 0..1, weighted into a score out of 100:

- cells (55): the share of the notebook's code cells that ran, as typed, in the session;
- lines (25): the share of the notebook's code lines found among the session's lines
  (catches cells edited after they ran);
- time (10): the notebook was last written while the session ran, or soon after;
- live (10): a running kernel started with this session has ``JPY_SESSION_NAME``
  naming this notebook (jupyter_server sets it for every kernel it starts).

What the notebook is known to contain is its file, plus its Jupyter checkpoint and
the workstation's newest saved version where they exist: a notebook overwritten with
an empty one still matches through them.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .history import History, RecoveryError, Session

WEIGHTS = {"cells": 55, "lines": 25, "time": 10, "live": 10}
UNENDED_SPAN = 12 * 3600


@dataclass
class Match:
    session: Session
    score: float
    signals: dict = field(default_factory=dict)

    def reasons(self) -> str:
        s = self.signals
        parts = [f"{s['cells_matched']}/{s['cells_total']} cells", f"{s['lines']:.0%} of lines"]
        if s["time"] >= 0.99:
            parts.append("saved while it ran")
        elif s["time"] > 0.05:
            parts.append("saved near its time")
        if s["live"]:
            parts.append("live kernel names this notebook")
        return ", ".join(parts)


def _norm(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def _lines(codes) -> set[str]:
    return {ln.strip() for code in codes for ln in code.splitlines()
            if len(ln.strip()) > 3 and not ln.strip().startswith("#")}


def _code_cells_from_bytes(data: bytes, suffix: str) -> list[str]:
    if suffix == ".ipynb":
        try:
            nb = json.loads(data)
        except ValueError:
            return []
        out = []
        for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
            if cell.get("cell_type") == "code":
                src = cell.get("source", "")
                out.append("".join(src) if isinstance(src, list) else str(src))
        return out
    import jupytext

    try:
        nb = jupytext.reads(data.decode("utf-8", "replace"), fmt=suffix.lstrip("."))
    except Exception:
        return []
    return [c.source for c in nb.cells if c.cell_type == "code"]


def notebook_code(path: Path, home=None) -> tuple[list[str], list[str]]:
    """The code cells the notebook is known to have had, and where they came from."""
    sources, where = [], []
    suffix = path.suffix.lower()
    if path.is_file():
        sources += _code_cells_from_bytes(path.read_bytes(), suffix)
        where.append("the notebook")
    checkpoint = path.parent / ".ipynb_checkpoints" / f"{path.stem}-checkpoint{path.suffix}"
    if checkpoint.is_file():
        sources += _code_cells_from_bytes(checkpoint.read_bytes(), suffix)
        where.append("its checkpoint")
    try:
        from .versions import NotebookVersions

        store = NotebookVersions(home)
        try:
            kept = store.list(path)
            if kept:
                sources += _code_cells_from_bytes(store.data(kept[0]), suffix)
                where.append("its newest saved version")
        finally:
            store.close()
    except Exception:
        pass
    seen, unique = set(), []
    for src in sources:
        n = _norm(src)
        if n and n not in seen:
            seen.add(n)
            unique.append(n)
    return unique, where


def _time_signal(mtime: float | None, session: Session) -> float:
    if mtime is None or session.start is None:
        return 0.0
    start = session.start.timestamp()
    # A killed (or still running) kernel recorded no end: assume it ran for up to half a day.
    end = session.end.timestamp() if session.end else start + UNENDED_SPAN
    if mtime < start - 60:
        return 0.0
    if mtime <= end + 60:
        return 1.0
    hours = (mtime - end) / 3600
    return math.exp(-hours / 6)


def _live_sessions(path: Path, history: History, processes) -> set[tuple[str, int]]:
    """(db label, session) of sessions started by live kernels whose JPY_SESSION_NAME names ``path``."""
    from .live import running_sessions

    sessions = history.sessions()
    running = running_sessions(sessions, [kp for kp in processes or []
                                          if kp.notebook and _names(kp.notebook, path)])
    return {(s.db.label, s.number) for s in sessions if id(s) in running}


def _names(session_name: str, path: Path) -> bool:
    """Does a JPY_SESSION_NAME (a path relative to the server root, or absolute) name ``path``?"""
    name = session_name.strip().lstrip("/")
    full = str(path.resolve())
    return full == name or full.endswith("/" + name) or os.path.basename(name) == path.name and "/" not in name


def rank(notebook: str | os.PathLike, history: History, processes=None, home=None,
         top: int = 5) -> tuple[list[Match], list[str]]:
    """The sessions most likely to belong to ``notebook``, best first, and what was read."""
    path = Path(notebook).expanduser()
    cells, where = notebook_code(path, home)
    if not cells:
        if not path.exists():
            raise RecoveryError(f"{path} does not exist, and no checkpoint or saved version of it "
                                "was found; try `pipulate recover search TEXT` with a line you remember")
        raise RecoveryError(f"{path} has no code cells (and no checkpoint or saved version with any) "
                            "to match; try `pipulate recover search TEXT` with a line you remember")
    history.require_any()
    mtime = path.stat().st_mtime if path.exists() else None
    wanted_lines = _lines(cells)
    live = _live_sessions(path, history, processes)
    matches = []
    for s in history.sessions(include_empty=False):
        codes = [_norm(c.code) for c in s.cells()]
        have = set(codes)
        matched = sum(1 for c in cells if c in have)
        cell_share = matched / len(cells)
        line_share = len(wanted_lines & _lines(codes)) / len(wanted_lines) if wanted_lines else 0.0
        is_live = (s.db.label, s.number) in live
        if matched == 0 and line_share == 0 and not is_live:
            continue
        signals = {"cells": cell_share, "cells_matched": matched, "cells_total": len(cells),
                   "lines": line_share, "time": _time_signal(mtime, s), "live": 1.0 if is_live else 0.0}
        score = sum(WEIGHTS[k] * signals[k] for k in WEIGHTS)
        matches.append(Match(s, round(score, 1), signals))
    matches.sort(key=lambda m: (m.score, m.session.start.timestamp() if m.session.start else 0),
                 reverse=True)
    return matches[:top], where
