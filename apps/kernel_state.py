"""Kernel state: what every notebook's kernel has saved, version by version.

For each notebook: its versions (with a chart of the state's size over them),
the variables of a version (name, type, size, format) and the ones skipped with
the reason; clear the saved state, or choose the version its kernel loads next.
"""
import json
from urllib.parse import quote

from pipulate.web import (A, Button, Code, Div, H1, H2, P, Small, Span, Strong, Table, Tbody, Td, Th, Thead, Tr,
                          NotStr, app_url, clear_flash, fail, flash, human_size, page, plural, when)
from pipulate.kernel_state.report import own_objects_line, split_skipped, unknown_version
from pipulate.web.api import kernel_store, notebook_id

APP_NAME = "kernel-state"
TITLE = "Kernel state"
ORDER = 30
DESCRIPTION = "Every notebook's saved kernel variables: versions, sizes, skipped ones; clear or pick a version to restore."


def nb_url(nb, version=None):
    url = app_url(f"/{APP_NAME}/notebook?id={quote(nb, safe='')}")
    return url if version is None else f"{url}&version={version}"


def size_chart(versions, width=480, height=120, pad=28):
    """An inline SVG line chart of state size per version, oldest on the left."""
    points = [(v["version"], v.get("size_bytes") or 0) for v in reversed(versions)]
    if not points:
        return ""
    top = max(s for _, s in points) or 1
    n = len(points)
    step = (width - 2 * pad) / max(n - 1, 1)
    xy = [(pad + i * step if n > 1 else width / 2, height - pad - (s / top) * (height - 2 * pad))
          for i, (_, s) in enumerate(points)]
    parts = [f'<svg class="chart" role="img" aria-label="State size per version" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
             f'<text x="2" y="{pad - 10}">{human_size(top)}</text>']
    if n > 1:
        parts.append('<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy) + '"/>')
    for (version, size), (x, y) in zip(points, xy):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1f77b4">'
                     f'<title>version {int(version)}: {human_size(size)}</title></circle>')
        if n <= 20:
            parts.append(f'<text x="{x:.1f}" y="{height - pad + 14}" text-anchor="middle">v{int(version)}</text>')
    parts.append("</svg>")
    return NotStr("".join(parts))


def notebooks_table(ks):
    rows = ks.notebooks()
    if not rows:
        return P("No notebook has saved kernel state yet. Run a cell in a workstation notebook "
                 "(or ", Code("%load_ext pipulate"), " in any IPython) and it appears here.")
    return Table(Thead(Tr(Th("Notebook"), Th("Id"), Th("Saved"), Th("Variables"), Th("Versions"))),
                 Tbody(*[Tr(Td(A(r.get("name") or r["id"], href=nb_url(r["id"]))), Td(Small(r["id"])),
                            Td(Small(when(r.get("saved_at")))), Td(r.get("variable_count")),
                            Td(r.get("versions") if not isinstance(r.get("versions"), list) else len(r["versions"])))
                       for r in rows]), cls="compact")


def versions_table(nb, versions, shown):
    rows = []
    for v in versions:
        vals = json.dumps({"id": nb, "version": v["version"]})
        rows.append(Tr(
            Td(Strong(f"v{v['version']}") if v["version"] == shown else f"v{v['version']}"),
            Td(Small(when(v.get("saved_at")))), Td(v.get("variable_count")),
            Td(human_size(v.get("size_bytes"))),
            Td(Div(A("variables", href=nb_url(nb, v["version"])),
                   Button("Restore this version", cls="secondary outline", hx_post=app_url(f"/{APP_NAME}/restore"),
                          hx_vals=vals, hx_swap="none"), cls="step-actions"))))
    return Table(Thead(Tr(Th("Version"), Th("Saved"), Th("Variables"), Th("Size"), Th(""))), Tbody(*rows),
                 cls="compact")


def variables_block(info):
    variables = info.get("variables") or []
    skipped, _ = split_skipped(info.get("skipped") or [])
    own = own_objects_line(info.get("skipped") or [])
    table = Table(Thead(Tr(Th("Name"), Th("Type"), Th("Size"), Th("Format"))),
                  Tbody(*[Tr(Td(Code(v["name"])), Td(v.get("type")), Td(human_size(v.get("size"))),
                             Td(v.get("format"))) for v in variables]), cls="compact") if variables else P("No variables.")
    skip = ""
    if skipped:
        skip = Div(H2("Skipped"), Table(Thead(Tr(Th("Name"), Th("Why"))),
                                        Tbody(*[Tr(Td(Code(s["name"])), Td(s.get("reason"))) for s in skipped]),
                                        cls="compact"))
    return Div(H2(f"Variables of version {info.get('version')}", Small(f" saved {when(info.get('saved_at'))}")),
               table, skip, P(Small(own[0].upper() + own[1:]), cls="muted") if own else "")


def notebook_detail(ks, nb, version=None):
    summary = ks.summary(nb)
    if not summary.get("has_saved_state"):
        return Div(P(f"Notebook {nb!r} has no saved kernel state."),
                   A("← all notebooks", href=app_url(f"/{APP_NAME}")), id="nb-detail")
    versions = summary.get("versions") or []
    try:
        info = ks.variables(nb, version)
    except KeyError as exc:
        fail(404, unknown_version(exc.args[0], versions) + ".")
    return Div(
        P(Strong(nb), Span(f" · {plural(summary.get('variable_count') or 0, 'variable')}"
                           f" · {human_size(summary.get('file_size_bytes'))}"
                           f" · saved {when(summary.get('saved_at'))}", cls="muted")),
        Div(Button("Clear saved state", cls="contrast", hx_post=app_url(f"/{APP_NAME}/clear"),
                   hx_vals=json.dumps({"id": nb}),
                   hx_target="#nb-detail", hx_swap="outerHTML",
                   hx_confirm=f"Forget every saved version of {nb}?"), cls="step-actions"),
        H2("State size over versions"), size_chart(versions),
        H2("Versions"), versions_table(nb, versions, info.get("version")),
        variables_block(info), id="nb-detail")


def _version(raw):
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        fail(400, f"version must be a whole number, got {str(raw)[:40]!r}")


def register(app, rt, pip):
    @rt("")
    def index():
        return page(TITLE, H1(TITLE), P(DESCRIPTION), notebooks_table(kernel_store(pip)))

    @rt("/notebook")
    def notebook(id: str = "", version: str = ""):
        nb = notebook_id(id)
        return page(f"Kernel state · {nb}", H1(TITLE), P(A("← all notebooks", href=app_url(f"/{APP_NAME}"))),
                    notebook_detail(kernel_store(pip), nb, _version(version)))

    @rt("/clear", methods=["post"])
    def clear(id: str = ""):
        nb = notebook_id(id)
        cleared = kernel_store(pip).clear(nb)
        return (Div(P(f"Cleared the saved state of {nb}." if cleared else f"{nb} had no saved state."),
                    A("← all notebooks", href=app_url(f"/{APP_NAME}")), id="nb-detail"), clear_flash())

    @rt("/restore", methods=["post"])
    def restore(id: str = "", version: str = ""):
        nb = notebook_id(id)
        v = _version(version)
        ks = kernel_store(pip)
        try:
            ks.select_restore(nb, v)
        except KeyError as exc:
            fail(404, unknown_version(exc.args[0], ks.versions(nb)) + ".")
        now = f"%state restore {v}" if v is not None else "%state restore"
        return flash(f"Version {v if v is not None else 'latest'} of {nb} will be loaded the next time its kernel "
                     f"starts (or run {now} in it now).", kind="ok", oob=True)
