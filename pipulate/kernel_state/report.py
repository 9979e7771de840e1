"""The short lines the extension, ``%state`` and ``pipulate state`` print.

Sizes, times and counts read as ``pipulate.display`` writes them, as on the web pages.
Objects of the kernel and the workstation themselves (``pip``, the shell) are not the
user's data and come back by their import: they are left out of every "skipped" list,
and ``%state`` names them once, on a line of their own, as what they are.
"""
from __future__ import annotations

from ..display import number_ranges, plural, size as human_bytes, when
from .formats import is_own_object


def names_list(names: list[str], limit: int = 12) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... (+{len(names) - limit})"


def split_skipped(skipped: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the variables that could not be saved, the workstation's own objects)."""
    own = [s for s in skipped if is_own_object(str(s.get("reason", "")))]
    return [s for s in skipped if s not in own], own


def skipped_list(skipped: list[dict]) -> str:
    """The skipped variables and why, without the workstation's own objects."""
    return "; ".join(f"{s['name']} ({s['reason']})" for s in split_skipped(skipped)[0])


def own_objects_line(skipped: list[dict]) -> str | None:
    own = split_skipped(skipped)[1]
    if not own:
        return None
    return ("not saved, as they are the workstation's own and come back by their import: "
            + ", ".join(f"{s['name']} ({s['reason']})" for s in own))


def unknown_version(message: str, versions: list[dict]) -> str:
    """A missing-version error with the versions there are."""
    if not versions:
        return message
    numbers = [v["version"] for v in versions]
    return f"{message}; saved versions: {number_ranges(numbers)} (latest {max(numbers)})"


def restore_line(result, notebook_name: str) -> str:
    m = result.manifest
    line = (f"pipulate: restored {plural(len(result.restored), 'variable')}"
            f" of {notebook_name!s} from version {m.version}, saved {when(m.saved_at)}")
    if result.restored:
        line += f": {names_list(result.restored)}"
    skipped = skipped_list(result.skipped)
    if skipped:
        line += f". Skipped: {skipped}"
    return line


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def variables_text(info: dict, title: str) -> str:
    rows = [[v["name"], v["type"], human_bytes(v["size"]),
             v["format"] + (f" (same object as {v['alias_of']})" if v.get("alias_of") else "")]
            for v in info["variables"]]
    out = [f"{title}: version {info['version']}, saved {when(info['saved_at'])}, "
           f"{plural(len(info['variables']), 'variable')}"]
    if rows:
        out.append(table(rows, ["name", "type", "size", "format"]))
    skipped, _ = split_skipped(info["skipped"])
    if skipped:
        out.append("skipped:")
        out.extend(f"  {s['name']}: {s['reason']}" for s in skipped)
    own = own_objects_line(info["skipped"])
    if own:
        out.append(own)
    return "\n".join(out)


def versions_text(versions: list[dict], selected: int | None = None) -> str:
    if not versions:
        return "no saved versions"
    rows = [[str(v["version"]) + (" (next start)" if v["version"] == selected else ""),
             when(v["saved_at"]), str(v["variable_count"]), human_bytes(v["size_bytes"])]
            for v in versions]
    return table(rows, ["version", "saved", "variables", "size"])
