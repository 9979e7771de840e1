"""How sizes, times and counts read, the same on every face: the ``%state`` magic, the
kernel's restore line, the command line and the web pages.

- Sizes in binary units, as the docs and settings use them (64 KiB, 1 MiB):
  ``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.0 GiB``.
- Times in the local time of the machine (the workstation runs on the user's own):
  ``2025-03-01 14:02:07``, and for stored times, how long ago: ``(5 s ago)``,
  ``(12 min ago)``, ``(3.5 h ago)``, ``(4 days ago)``. Stored times are UTC ISO text.
- Counts with the right plural: ``1 variable``, ``2 variables``.
"""
from __future__ import annotations

import datetime as dt

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def size(n: int | float | None) -> str:
    """Bytes in binary units; ``-`` when unknown."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _as_datetime(t) -> dt.datetime | None:
    if t is None or t == "":
        return None
    if isinstance(t, dt.datetime):
        return t
    if isinstance(t, (int, float)):
        return dt.datetime.fromtimestamp(t, dt.timezone.utc)
    try:
        parsed = dt.datetime.fromisoformat(str(t).strip())
    except ValueError:
        return None
    # The store writes UTC; a time without a zone is taken as UTC too.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def local_time(t, missing: str = "-") -> str:
    """A datetime, epoch seconds or stored ISO text as local time; unreadable text as given."""
    parsed = _as_datetime(t)
    if parsed is None:
        return missing if t in (None, "") else str(t)
    return parsed.astimezone().strftime(TIME_FORMAT)


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{int(seconds)} s ago"
    if seconds < 5400:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{int(seconds // 86400)} days ago"


def when(t, missing: str = "-") -> str:
    """Local time with how long ago: ``2025-03-01 14:02:07 (5 s ago)``."""
    parsed = _as_datetime(t)
    if parsed is None:
        return local_time(t, missing)
    seconds = (dt.datetime.now(dt.timezone.utc) - parsed).total_seconds()
    return f"{local_time(parsed)} ({ago(seconds)})"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 variable``, ``0 variables``; ``many`` for irregular plurals."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def number_ranges(numbers) -> str:
    """``1-5, 8, 10-11``: version numbers, short however many there are."""
    values = sorted(set(numbers))
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(v) if v == start else f"{start}-{v}")
            start = None
    return ", ".join(parts)
