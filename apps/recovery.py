"""Recovery: lost notebook code, from every place it still exists, as downloadable notebooks.

Three lists: IPython history sessions (every kernel's code, read through copies of the
history databases), Jupyter checkpoints in the notebooks folder that differ from their
notebook, and the versions the workstation's Jupyter server kept at every save. Any of
them downloads as an .ipynb. The same is on the command line: `pipulate recover ...`
(docs/recovery.md).
"""
import os
import re
from pathlib import Path
from urllib.parse import quote

from starlette.responses import Response

from pipulate.web import (A, Button, Code, Div, H1, H2, P, Pre, Small, Strong, Table, Tbody, Td, Th,
                          Thead, Tr, app_url, fail, flash, human_size, page)

APP_NAME = "recovery"
TITLE = "Recovery"
ORDER = 60
DESCRIPTION = ("Lost notebook code: kernel history sessions, Jupyter checkpoints and every saved "
               "version of every notebook, each downloadable as .ipynb.")

MAX_SESSIONS = 200


def notebooks_dir() -> Path:
    """The folder JupyterLab serves (config.py hands it over as PIPULATE_NOTEBOOKS_DIR)."""
    from config import USER_NOTEBOOKS_DIR

    return Path(os.environ.get("PIPULATE_NOTEBOOKS_DIR") or USER_NOTEBOOKS_DIR).resolve()


def download(data: bytes, filename: str) -> Response:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename).strip("._") or "recovered"
    if not safe.endswith(".ipynb"):
        safe += ".ipynb"
    return Response(data, media_type="application/x-ipynb+json",
                    headers={"Content-Disposition": f'attachment; filename="{safe}"'})


def _history(pip):
    from pipulate.recover.history import History

    return History(home=pip.home)


def session_url(ref: str, download_it: bool = False) -> str:
    return app_url(f"/{APP_NAME}/{'session.ipynb' if download_it else 'session'}?s={quote(ref, safe='')}")


def sessions_section(pip):
    from pipulate.recover.history import fmt_time

    with _history(pip) as history:
        notes = [P(Small(n), cls="muted") for n in history.problems()]
        sessions = [s for s in history.sessions() if s.cell_count > 0]
    if not sessions:
        return Div(H2("History sessions"), *notes,
                   P("No kernel history found. Kernels write it to ", Code("~/.ipython"),
                     " (or ", Code("$IPYTHONDIR"), ") as they run."), id="sessions")
    shown = list(reversed(sessions))[:MAX_SESSIONS]
    rows = [Tr(Td(A(s.ref, href=session_url(s.ref))), Td(Small(fmt_time(s.start, "?"))),
               Td(Small(fmt_time(s.end, "did not end"))), Td(s.cell_count),
               Td(Code(s.first_line[:80])), Td(A("download .ipynb", href=session_url(s.ref, True))))
            for s in shown]
    more = P(Small(f"Showing the newest {MAX_SESSIONS} of {len(sessions)}; "
                   "`pipulate recover sessions` lists all."), cls="muted") if len(sessions) > MAX_SESSIONS else ""
    return Div(H2("History sessions"), P("One per kernel start, newest first; times are local.", cls="muted"),
               *notes,
               Table(Thead(Tr(Th("Session"), Th("Start"), Th("End"), Th("Cells"), Th("First line"), Th(""))),
                     Tbody(*rows), cls="compact"), more, id="sessions")


def checkpoints_section():
    from pipulate.recover import checkpoints

    root = notebooks_dir()
    if not root.is_dir():
        return Div(H2("Checkpoints"), P(f"The notebooks folder {root} does not exist."), id="checkpoints")
    found = checkpoints.scan(root)
    if not found:
        body = P(f"No checkpoint under {root} differs from its notebook.")
    else:
        body = Table(Thead(Tr(Th("Notebook"), Th("Checkpoint saved"), Th("Status"), Th("Content"), Th(""))),
                     Tbody(*[Tr(Td(str(c.notebook.relative_to(root))), Td(Small(c.saved)), Td(c.status),
                                Td(Small(c.detail)),
                                Td(A("download .ipynb", href=app_url(f"/{APP_NAME}/checkpoint.ipynb?path=")
                                     + quote(str(c.path.relative_to(root)), safe=""))))
                             for c in found]), cls="compact")
    return Div(H2("Checkpoints"), P("Jupyter's ", Code(".ipynb_checkpoints"), " copies in ", Code(str(root)),
                                    " that differ from their notebook, newest first.", cls="muted"),
               body, id="checkpoints")


def _versions(pip):
    from pipulate.recover.versions import NotebookVersions

    return NotebookVersions(home=pip.home)


def versions_section(pip):
    from pipulate.recover.history import fmt_time, parse_time

    store = _versions(pip)
    try:
        notebooks = store.notebooks()
    finally:
        store.close()
    if not notebooks:
        body = P("No saved versions yet: the workstation's JupyterLab keeps one at every save.")
    else:
        body = Table(Thead(Tr(Th("Notebook"), Th("Versions"), Th("Last saved"))),
                     Tbody(*[Tr(Td(A(path, href=app_url(f"/{APP_NAME}/versions?notebook={quote(path, safe='')}")),
                                   "" if Path(path).exists() else Small(" (file is gone)", cls="muted")),
                                Td(count), Td(Small(fmt_time(parse_time(last)))))
                             for path, count, last in notebooks]), cls="compact")
    return Div(H2("Saved versions"), body, id="versions")


def register(app, rt, pip):
    @rt("")
    def index():
        return page(TITLE, H1(TITLE), P(DESCRIPTION),
                    Div(Button("Rescue from running kernels", hx_post=app_url(f"/{APP_NAME}/live"), hx_swap="none",
                               cls="secondary"),
                        Small(" copies a deleted history database a kernel still holds open, and the code "
                              "kernels hold in memory", cls="muted"), cls="step-actions"),
                    sessions_section(pip), versions_section(pip), checkpoints_section())

    @rt("/session")
    def session(s: str = ""):
        from pipulate.recover.history import fmt_time

        if not s:
            fail(400, "Name a session: its number, or last.")
        with _history(pip) as history:
            found = history.session(s)  # a RecoveryError becomes a 400 with its message
            cells = found.cells()
        blocks = []
        for cell in cells:
            blocks.append(P(Small(f"[{cell.line}]"), cls="muted"))
            blocks.append(Pre(Code(cell.code)))
            if cell.output is not None:
                blocks.append(Pre(Small(f"Out[{cell.line}]: {cell.output}")))
        return page(f"Session {found.ref}", H1(f"Session {found.ref}"),
                    P(A("← Recovery", href=app_url(f"/{APP_NAME}"))),
                    P(f"Started {fmt_time(found.start, '?')}, "
                      + (f"ended {fmt_time(found.end)}" if found.end else "did not end")
                      + f"; {found.cell_count} cells; from ", Code(str(found.db.path))),
                    P(A("Download as .ipynb", href=session_url(found.ref, True), role="button")),
                    *blocks)

    @rt("/session.ipynb")
    def session_ipynb(s: str = "", dedupe: str = ""):
        import nbformat

        from pipulate.recover.export import to_notebook

        if not s:
            fail(400, "Name a session: its number, or last.")
        with _history(pip) as history:
            found = history.session(s)
            cells = found.cells()
            if not any(c.code.strip() for c in cells):
                fail(404, f"Session {found.ref} ran no code.")
            nb = to_notebook(cells, f"session {found.ref} of {found.db.path}", dedupe=bool(dedupe))
        return download(nbformat.writes(nb).encode("utf-8"), f"session-{found.ref.replace(':', '-')}.ipynb")

    @rt("/checkpoint.ipynb")
    def checkpoint_ipynb(path: str = ""):
        from pipulate.recover.checkpoints import CHECKPOINT_DIR, notebook_for

        root = notebooks_dir()
        if not path or "\x00" in path:
            fail(400, "Name a checkpoint.")
        target = (root / path).resolve()
        if root not in target.parents or target.parent.name != CHECKPOINT_DIR or notebook_for(target) is None:
            fail(400, "That is not a checkpoint inside the notebooks folder.")
        if not target.is_file():
            fail(404, f"No checkpoint {path}.")
        return download(target.read_bytes(), notebook_for(target).name)

    @rt("/versions")
    def versions(notebook: str = ""):
        from pipulate.recover.history import fmt_time

        store = _versions(pip)
        try:
            found = store.list(notebook) if notebook else []
        finally:
            store.close()
        if not found:
            fail(404, f"No saved versions of {notebook[:200]!r}.")
        rows = [Tr(Td(v.id), Td(Small(fmt_time(v.saved))), Td(human_size(v.size)),
                   Td(A("download .ipynb", href=app_url(f"/{APP_NAME}/version.ipynb?id={v.id}")))) for v in found]
        return page(f"Versions of {Path(notebook).name}", H1("Saved versions"),
                    P(A("← Recovery", href=app_url(f"/{APP_NAME}"))), P(Strong(notebook)),
                    Table(Thead(Tr(Th("Id"), Th("Saved"), Th("Size"), Th(""))), Tbody(*rows), cls="compact"),
                    P(Small("To put one back in place (the current file is backed up first): ",
                            Code(f"pipulate recover versions {notebook} --restore ID")), cls="muted"))

    @rt("/version.ipynb")
    def version_ipynb(id: str = ""):
        if not id.isdigit():
            fail(400, "A version id is a whole number.")
        store = _versions(pip)
        try:
            v = store.get(int(id))  # unknown: RecoveryError -> 400 with its message
            data = store.data(v)
        finally:
            store.close()
        stem = Path(v.notebook).stem
        return download(data, f"{stem}-version-{v.id}.ipynb")

    @rt("/live", methods=["post"])
    def live():
        from pipulate.recover import live as live_mod

        processes, notes = live_mod.scan(home=pip.home)
        copied = sum(len(p.copied) for p in processes)
        memory = sum(1 for p in processes if p.memory_copy)
        problems = [f"pid {p.pid}: {msg}" for p in processes for msg in p.problems]
        if not processes:
            text = "No running IPython kernels were found."
        else:
            text = (f"{len(processes)} kernel(s) found; {copied} deleted history database(s) copied; "
                    f"{memory} kernel(s) gave their in-memory history. Reload to see them in the sessions.")
        if problems:
            text += " Problems: " + "; ".join(problems[:5])
        return flash(" ".join([text, *notes]), kind="ok", oob=True)
