"""The kernel-state tables, beside the pipeline tables in ``data/pipulate.db``.

One row per notebook, one per saved version (the manifest's header) and one per
variable of each version. A variable's row names its blob (content-addressed,
shared across versions and notebooks) or holds its value inline (small JSON,
module names). A DataFrame's row names its schema blob, and ``kernel_frame_columns``
one blob per column (``frames.py``). ``kernel_variables.blob`` and
``kernel_frame_columns.blob`` are listed in ``pipulate.db.BLOB_REFERENCES`` so
garbage collection keeps every blob a version still needs.
"""

SCHEMA = """
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
