"""The kernel-state tables, beside the pipeline tables in ``data/pipulate.db``.

One row per notebook, and one per saved version (the manifest's header:
``variable_count``, ``size_bytes``, ``checksum``, ``skipped``).

Manifests are stored incrementally, so that saving a version costs what the cell
changed. A ``kernel_variables`` row is one variable's entry over a range of
versions: written at ``version``, the version where the entry (name, type,
format, size, content hash, blob, inline value, ``alias_of``, and a DataFrame's
column list) appeared or changed, and valid until ``until``, the version where
it changed again or the variable was deleted (NULL while it still holds). The
manifest of version v is the rows with ``version <= v AND (until IS NULL OR
until > v)``; at most one row per name is open (``until IS NULL``). A commit
inserts rows for the new and changed variables only and sets ``until`` on the
rows they replace (and on those of deleted variables). A row's value is inline
(small JSON, module names) or in a blob (content-addressed, shared across
versions and notebooks). A DataFrame's row names its schema blob, and its
``kernel_frame_columns`` rows (same notebook, version and name) one blob per
column (``frames.py``): they belong to that row and live exactly as long as it. A
pickle's row names its big out-of-band buffers there the same way, one blob each
(``buffers.py``): the table's name is older than that use.

Retention deletes a version's header and exactly the rows no kept version (the
newest ``keep_versions``, and the one selected for the next restore) still
needs: a row exists only while some kept version lies in its range. So
``kernel_variables.blob`` and ``kernel_frame_columns.blob``, listed in
``pipulate.db.BLOB_REFERENCES``, name every blob a kept version needs and no
other, and garbage collection keeps the right ones.

Databases written with one full manifest per version (before ``until``) are
upgraded once, when a store opens them (``ensure_schema``): consecutive equal
rows of a variable collapse into one range row. ``until`` defaults to 0 and two
triggers refuse what a process still running an older pipulate would do to the
new layout (insert a full manifest; delete a version's rows that later versions
share): its save fails with a message instead of losing data.
"""

TABLES = """
CREATE TABLE IF NOT EXISTS kernel_notebooks (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    created         TEXT NOT NULL,
    updated         TEXT NOT NULL,
    next_version    INTEGER NOT NULL DEFAULT 1,
    restore_version INTEGER
);
CREATE TABLE IF NOT EXISTS kernel_versions (
    notebook       TEXT NOT NULL,
    version        INTEGER NOT NULL,
    saved_at       TEXT NOT NULL,
    variable_count INTEGER NOT NULL,
    size_bytes     INTEGER NOT NULL,
    checksum       TEXT NOT NULL,
    skipped        TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (notebook, version)
);
CREATE TABLE IF NOT EXISTS kernel_variables (
    notebook     TEXT NOT NULL,
    version      INTEGER NOT NULL,
    name         TEXT NOT NULL,
    type         TEXT NOT NULL,
    format       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    blob         TEXT,
    value,
    alias_of     TEXT,
    until        INTEGER DEFAULT 0,
    PRIMARY KEY (notebook, version, name)
);
CREATE TABLE IF NOT EXISTS kernel_frame_columns (
    notebook TEXT NOT NULL,
    version  INTEGER NOT NULL,
    name     TEXT NOT NULL,
    position INTEGER NOT NULL,
    blob     TEXT NOT NULL,
    PRIMARY KEY (notebook, version, name, position)
);
CREATE INDEX IF NOT EXISTS kernel_variables_by_blob ON kernel_variables(blob) WHERE blob IS NOT NULL;
"""

# Needs the ``until`` column: run after the upgrade of an old database.
RANGES = """
CREATE INDEX IF NOT EXISTS kernel_variables_closed ON kernel_variables(notebook, until)
    WHERE until IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS kernel_variables_insert_open BEFORE INSERT ON kernel_variables
WHEN NEW.until IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'kernel_variables rows are inserted open (until NULL): this write comes from a process running an older pipulate; restart that kernel to save again');
END;
CREATE TRIGGER IF NOT EXISTS kernel_variables_keep_needed BEFORE DELETE ON kernel_variables
WHEN EXISTS (SELECT 1 FROM kernel_versions k WHERE k.notebook = OLD.notebook AND k.version >= OLD.version
             AND (OLD.until IS NULL OR k.version < OLD.until))
BEGIN
    SELECT RAISE(ABORT, 'a kernel_variables row still needed by a kept version cannot be deleted (a process running an older pipulate? restart that kernel to save again)');
END;
"""


def ensure_schema(conn) -> None:
    """Create the tables, upgrade full-manifest tables to ranges; in the caller's transaction."""
    conn.execute(TABLES)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(kernel_variables)")}
    if "until" not in columns:
        upgrade_full_manifests(conn)
    conn.execute(RANGES)


def upgrade_full_manifests(conn) -> None:
    """Turn one row per variable of every version into one row per range of equal entries.

    A variable's rows in consecutive kept versions (consecutive in ``kernel_versions``:
    retention may have left gaps) that hold the same entry, and for a DataFrame the
    same column list, become the first of them, valid until the next kept version
    that lacks the variable or holds another entry (NULL when it runs to the latest).
    Rows of versions that are no longer in ``kernel_versions`` were unreachable and go.
    """
    conn.execute("ALTER TABLE kernel_variables ADD COLUMN until INTEGER DEFAULT 0")
    conn.execute("DELETE FROM kernel_variables WHERE NOT EXISTS (SELECT 1 FROM kernel_versions k "
                 "WHERE k.notebook = kernel_variables.notebook AND k.version = kernel_variables.version)")
    conn.execute("DELETE FROM kernel_frame_columns WHERE NOT EXISTS (SELECT 1 FROM kernel_variables v "
                 "WHERE v.notebook = kernel_frame_columns.notebook AND v.version = kernel_frame_columns.version "
                 "AND v.name = kernel_frame_columns.name)")
    kept: dict[str, list[int]] = {}
    for notebook, version in conn.execute("SELECT notebook, version FROM kernel_versions ORDER BY notebook, version"):
        kept.setdefault(notebook, []).append(version)
    following = {nb: dict(zip(vs, vs[1:] + [None])) for nb, vs in kept.items()}
    parts: dict[tuple, list[str]] = {}
    for notebook, version, name, blob in conn.execute(
            "SELECT notebook, version, name, blob FROM kernel_frame_columns ORDER BY notebook, version, name, position"):
        parts.setdefault((notebook, version, name), []).append(blob)

    ranges: list[tuple] = []  # (until, notebook, version, name) of each range's first row
    merged: list[tuple] = []  # (notebook, version, name) of the rows a range absorbed
    run = None  # [notebook, name, first version, last version, entry]
    for notebook, name, version, *fields in conn.execute(
            "SELECT notebook, name, version, type, format, size, content_hash, blob, value, alias_of "
            "FROM kernel_variables ORDER BY notebook, name, version"):
        entry = (*fields, tuple(parts.get((notebook, version, name), ())))
        if (run is not None and run[0] == notebook and run[1] == name
                and following[notebook][run[3]] == version and run[4] == entry):
            run[3] = version
            merged.append((notebook, version, name))
            continue
        if run is not None:
            ranges.append((following[run[0]][run[3]], run[0], run[2], run[1]))
        run = [notebook, name, version, version, entry]
    if run is not None:
        ranges.append((following[run[0]][run[3]], run[0], run[2], run[1]))

    conn.executemany("DELETE FROM kernel_variables WHERE notebook = ? AND version = ? AND name = ?", merged)
    conn.executemany("DELETE FROM kernel_frame_columns WHERE notebook = ? AND version = ? AND name = ?", merged)
    conn.executemany("UPDATE kernel_variables SET until = ? WHERE notebook = ? AND version = ? AND name = ?", ranges)
