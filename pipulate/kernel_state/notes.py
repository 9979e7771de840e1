"""Notes beside the kernel-state tables that JupyterLab's panel and menu need.

- the first line of the cell that made each version (the kernel knows it when its save
  finishes; the versions table does not keep code), shown beside each version;
- a request that the notebook's next kernel start *not* restore (JupyterLab's "Restart
  Kernel without Restoring State"), taken once by that kernel, like ``select_restore``.

A line is matched to its version by ``saved_at`` too: after ``clear`` a notebook's versions
start at 1 again, and an old note must not label a new version.
"""
from __future__ import annotations

from .ids import validate_notebook_id

TABLES = """
CREATE TABLE IF NOT EXISTS kernel_version_cells (
    notebook   TEXT NOT NULL,
    version    INTEGER NOT NULL,
    saved_at   TEXT NOT NULL,
    first_line TEXT NOT NULL,
    PRIMARY KEY (notebook, version)
);
CREATE TABLE IF NOT EXISTS kernel_skip_restore (
    notebook TEXT PRIMARY KEY
);
"""
MAX_LINE = 200


def _ensure(store) -> None:
    if getattr(store, "_notes_ready", False) or store.db.schema_managed:
        return
    # Not ``add_schema``: a store that cannot be written (a read-only data folder) must still
    # open and restore; only these notes are missing then.
    with store.db.write() as conn:
        conn.execute(TABLES)
    store._notes_ready = True


def first_line(cell: str | None) -> str:
    for line in (cell or "").splitlines():
        if line.strip():
            return line.strip()[:MAX_LINE]
    return ""


def record_cell(store, notebook: str, version: int, saved_at: str, cell: str | None) -> None:
    line = first_line(cell)
    if not line:
        return
    _ensure(store)
    with store.db.write() as conn:
        conn.execute("INSERT INTO kernel_version_cells (notebook, version, saved_at, first_line) "
                     f"VALUES (?, ?, ?, ?) ON CONFLICT ({store.db.key('notebook, version')}) DO UPDATE "
                     "SET saved_at = excluded.saved_at, first_line = excluded.first_line",
                     (notebook, version, saved_at, line))


def cell_lines(store, notebook: str) -> dict[int, str]:
    """{version: first line of its cell} for the kept versions that have one."""
    validate_notebook_id(notebook)
    try:
        _ensure(store)
    except Exception:  # a read-only store: no labels
        return {}
    rows = store.db.rows(
        "SELECT c.version, c.first_line FROM kernel_version_cells c JOIN kernel_versions v "
        "ON v.notebook = c.notebook AND v.version = c.version AND v.saved_at = c.saved_at "
        "WHERE c.notebook = ?", (notebook,))
    return dict(rows)


def request_skip_restore(store, notebook: str) -> None:
    validate_notebook_id(notebook)
    _ensure(store)
    with store.db.write() as conn:
        conn.execute("INSERT INTO kernel_skip_restore (notebook) VALUES (?) ON CONFLICT DO NOTHING", (notebook,))


def take_skip_restore(store, notebook: str) -> bool:
    """True once after ``request_skip_restore`` (the request is used up). False when the store
    cannot be written: the restore it would have prevented goes ahead as it always did."""
    try:
        _ensure(store)
        with store.db.write() as conn:
            return conn.execute("DELETE FROM kernel_skip_restore WHERE notebook = ? RETURNING notebook",
                                (notebook,)).fetchone() is not None
    except Exception:
        return False
