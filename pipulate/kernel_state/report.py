"""The short lines the extension, ``%state`` and ``pipulate state`` print.

Sizes, times and counts read as ``pipulate.display`` writes them, as on the web pages.
Objects of the kernel and the workstation themselves (``pip``, the shell) are not the
user's data and come back by their import: they are left out of every "skipped" list,
and ``%state`` names them once, on a line of their own, as what they are.
"""
from __future__ import annotations

from ..display import number_ranges, plural, size as human_bytes, when
from .formats import is_own_object
from .replay import REBUILD, REFUSED


def names_list(names: list[str], limit: int = 12) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... (+{len(names) - limit})"


def split_skipped(skipped: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the variables that could not be saved, the workstation's own objects)."""
    own = [s for s in skipped if is_own_object(str(s.get("reason", "")))]
    return [s for s in skipped if s not in own], own


def comes_back(item: dict) -> str:
    """Why a variable was not stored, and whether running its cells again rebuilds it."""
    if REBUILD in item:
        return f"{item['reason']}; rebuilt by {cells_text(item[REBUILD]['cells'])}"
    if REFUSED in item:
        return f"{item['reason']}; not rebuilt: {item[REFUSED]}"
    return item["reason"]


def cells_text(cells: list[dict]) -> str:
    """``cells [2], [4]``, or ``cells [2], [3] of an earlier kernel, then [4]``: execution
    counts start again with every kernel."""
    groups: list[tuple[bool, list[str]]] = []
    for cell in cells:
        earlier = bool(cell.get("earlier"))
        if not groups or groups[-1][0] != earlier:
            groups.append((earlier, []))
        groups[-1][1].append(cell["label"])
    text = ", then ".join(", ".join(labels) + (" of an earlier kernel" if earlier else "")
                          for earlier, labels in groups)
    return ("cell " if len(cells) == 1 else "cells ") + text


def skipped_list(skipped: list[dict]) -> str:
    """The skipped variables and why, without the workstation's own objects."""
    return "; ".join(f"{s['name']} ({comes_back(s)})" for s in split_skipped(skipped)[0])


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


NOTHING_TO_REBUILD = "nothing to rebuild: every variable of the restored version is here"


def rebuild_lines(done: list[str], failed: list[dict]) -> list[str]:
    """What a rebuild (``%state rebuild``, the JupyterLab button) made and what it did not."""
    lines = []
    if done:
        lines.append(f"rebuilt {plural(len(done), 'variable')} by running their cells again: {names_list(done)}")
    if failed:
        lines.append(f"not rebuilt: {skipped_list(failed)}")
    return lines


def restore_line(result, notebook_name: str, rebuildable: list[dict] | None = None) -> str:
    """The line a restore prints. ``rebuildable``: the skipped variables whose cells can run
    again now (``%state rebuild``); ``result.rebuilt``: those a restore already rebuilt."""
    m = result.manifest
    line = (f"pipulate: restored {plural(len(result.restored), 'variable')}"
            f" of {notebook_name!s} from version {m.version}, saved {when(m.saved_at)}")
    if result.restored:
        line += f": {names_list(result.restored)}"
    rebuilt = set(getattr(result, "rebuilt", ()))
    checked = [i for i in rebuildable or () if i["name"] not in rebuilt]
    ready = {i["name"] for i in checked if REBUILD in i}
    by_name = {s["name"]: s for s in result.skipped}
    by_name.update((i["name"], i) for i in checked)  # recipes as checked now, not as saved
    by_name.update((f["name"], f) for f in getattr(result, "failed_rebuilds", ()))
    for name in rebuilt | ready:
        by_name.pop(name, None)
    if rebuilt:
        line += f". Rebuilt by running their cells again: {names_list(sorted(rebuilt))}"
    text = skipped_list(list(by_name.values()))
    if text:
        line += f". Skipped: {text}"
    if ready:
        items = [i for i in checked if i["name"] in ready]
        line += (". Not stored, but their cells can run again: "
                 + "; ".join(f"{i['name']} ({i['reason']}; {cells_text(i[REBUILD]['cells'])})" for i in items)
                 + ". `%state rebuild` runs them (they may act outside the kernel: files, requests)")
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
        out.extend(f"  {s['name']}: {comes_back(s)}" for s in skipped)
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
