"""The short lines the extension and the CLI print."""
from __future__ import annotations

import datetime as dt


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def when(stamp: str | None) -> str:
    """A stored UTC timestamp as local time, with how long ago."""
    if not stamp:
        return "-"
    try:
        t = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    ago = (dt.datetime.now(dt.timezone.utc) - t).total_seconds()
    local = t.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if ago < 90:
        rel = f"{max(0, int(ago))} s ago"
    elif ago < 5400:
        rel = f"{int(ago // 60)} min ago"
    elif ago < 2 * 86400:
        rel = f"{ago / 3600:.1f} h ago"
    else:
        rel = f"{int(ago // 86400)} days ago"
    return f"{local} ({rel})"


def names_list(names: list[str], limit: int = 12) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... (+{len(names) - limit})"


def skipped_list(skipped: list[dict]) -> str:
    return "; ".join(f"{s['name']} ({s['reason']})" for s in skipped)


def restore_line(result, notebook_name: str) -> str:
    m = result.manifest
    line = (f"pipulate: restored {len(result.restored)} variable{'s' if len(result.restored) != 1 else ''}"
            f" of {notebook_name!s} from version {m.version}, saved {when(m.saved_at)}")
    if result.restored:
        line += f": {names_list(result.restored)}"
    if result.skipped:
        line += f". Skipped: {skipped_list(result.skipped)}"
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
           f"{len(info['variables'])} variables"]
    if rows:
        out.append(table(rows, ["name", "type", "size", "format"]))
    if info["skipped"]:
        out.append("skipped:")
        out.extend(f"  {s['name']}: {s['reason']}" for s in info["skipped"])
    return "\n".join(out)


def versions_text(versions: list[dict], selected: int | None = None) -> str:
    if not versions:
        return "no saved versions"
    rows = [[str(v["version"]) + (" (next start)" if v["version"] == selected else ""),
             when(v["saved_at"]), str(v["variable_count"]), human_bytes(v["size_bytes"])]
            for v in versions]
    return table(rows, ["version", "saved", "variables", "size"])
