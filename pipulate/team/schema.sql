-- The workstation's tables on PostgreSQL (the team backend, docs/team.md).
--
-- Run once per database by an administrator (a superuser, or a role with BYPASSRLS that
-- owns the tables): `pipulate team init`. It can be run again (after an upgrade) safely.
-- User kernels connect with their own roles (members of pipulate_users) and never run DDL.
--
-- The same tables and columns as the embedded SQLite store, with two differences the
-- dialects force: SQLite's dynamically typed columns get one type each (steps.value is
-- BYTEA: text values are stored as their UTF-8 bytes), and jobs gets an explicit `rowid`
-- (SQLite's implicit one orders jobs made in the same microsecond).
--
-- Workflow jobs are shared by the team. Kernel state and notebook versions are each
-- user's alone: an `owner` column (default: the connected role), part of every key, and
-- row-level security (FORCE: the tables' owner is bound too) that shows and accepts only
-- the connected role's rows.

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pipulate_users') THEN
        CREATE ROLE pipulate_users NOLOGIN;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS jobs (
    job      TEXT COLLATE "C" PRIMARY KEY,
    app      TEXT COLLATE "C",
    created  TEXT COLLATE "C" NOT NULL,
    updated  TEXT COLLATE "C" NOT NULL,
    next_ord BIGINT NOT NULL DEFAULT 0,
    rowid    BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE TABLE IF NOT EXISTS steps (
    job      TEXT COLLATE "C" NOT NULL REFERENCES jobs(job) ON DELETE CASCADE,
    step     TEXT COLLATE "C" NOT NULL,
    ord      BIGINT NOT NULL,
    format   TEXT COLLATE "C" NOT NULL,
    value    BYTEA,
    blob     TEXT COLLATE "C",
    checksum TEXT COLLATE "C",
    size     BIGINT NOT NULL,
    created  TEXT COLLATE "C" NOT NULL,
    updated  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (job, step)
);
CREATE INDEX IF NOT EXISTS steps_by_order ON steps(job, ord);
CREATE INDEX IF NOT EXISTS steps_by_blob ON steps(blob) WHERE blob IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs(created);

CREATE TABLE IF NOT EXISTS kernel_notebooks (
    owner           TEXT COLLATE "C" NOT NULL DEFAULT current_user,
    id              TEXT COLLATE "C" NOT NULL,
    name            TEXT COLLATE "C" NOT NULL,
    created         TEXT COLLATE "C" NOT NULL,
    updated         TEXT COLLATE "C" NOT NULL,
    next_version    BIGINT NOT NULL DEFAULT 1,
    restore_version BIGINT,
    PRIMARY KEY (owner, id)
);
CREATE TABLE IF NOT EXISTS kernel_versions (
    owner          TEXT COLLATE "C" NOT NULL DEFAULT current_user,
    notebook       TEXT COLLATE "C" NOT NULL,
    version        BIGINT NOT NULL,
    saved_at       TEXT COLLATE "C" NOT NULL,
    variable_count BIGINT NOT NULL,
    size_bytes     BIGINT NOT NULL,
    checksum       TEXT COLLATE "C" NOT NULL,
    skipped        TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    PRIMARY KEY (owner, notebook, version)
);
CREATE TABLE IF NOT EXISTS kernel_variables (
    owner        TEXT COLLATE "C" NOT NULL DEFAULT current_user,
    notebook     TEXT COLLATE "C" NOT NULL,
    version      BIGINT NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    type         TEXT COLLATE "C" NOT NULL,
    format       TEXT COLLATE "C" NOT NULL,
    size         BIGINT NOT NULL,
    content_hash TEXT COLLATE "C" NOT NULL,
    blob         TEXT COLLATE "C",
    value        TEXT COLLATE "C",
    alias_of     TEXT COLLATE "C",
    until        BIGINT,
    PRIMARY KEY (owner, notebook, version, name)
);
CREATE INDEX IF NOT EXISTS kernel_variables_by_blob ON kernel_variables(blob) WHERE blob IS NOT NULL;
CREATE INDEX IF NOT EXISTS kernel_variables_closed ON kernel_variables(owner, notebook, until)
    WHERE until IS NOT NULL;
-- A frame's column blobs, or a pickle's out-of-band buffers (kernel_state/buffers.py), in order.
CREATE TABLE IF NOT EXISTS kernel_frame_columns (
    owner    TEXT COLLATE "C" NOT NULL DEFAULT current_user,
    notebook TEXT COLLATE "C" NOT NULL,
    version  BIGINT NOT NULL,
    name     TEXT COLLATE "C" NOT NULL,
    position BIGINT NOT NULL,
    blob     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (owner, notebook, version, name, position)
);
CREATE TABLE IF NOT EXISTS kernel_version_cells (
    owner      TEXT COLLATE "C" NOT NULL DEFAULT current_user,
    notebook   TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    saved_at   TEXT COLLATE "C" NOT NULL,
    first_line TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (owner, notebook, version)
);
CREATE TABLE IF NOT EXISTS kernel_skip_restore (
    owner    TEXT COLLATE "C" NOT NULL DEFAULT current_user,
    notebook TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (owner, notebook)
);
CREATE TABLE IF NOT EXISTS notebook_versions (
    owner    TEXT COLLATE "C" NOT NULL DEFAULT current_user,
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notebook TEXT COLLATE "C" NOT NULL,
    saved_at TEXT COLLATE "C" NOT NULL,
    blob     TEXT COLLATE "C" NOT NULL,
    size     BIGINT NOT NULL
);
-- Each user's signing key, kept here so that their pickles stay readable on whatever machine
-- they log in from (a machine thrown away loses no state); theirs alone like their state.
CREATE TABLE IF NOT EXISTS signing_keys (
    owner TEXT COLLATE "C" NOT NULL DEFAULT current_user PRIMARY KEY,
    key   BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS notebook_versions_by_notebook ON notebook_versions(owner, notebook, id);
CREATE INDEX IF NOT EXISTS notebook_versions_by_blob ON notebook_versions(blob);

-- Each user's rows are theirs alone, checked by the database on every statement.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['kernel_notebooks', 'kernel_versions', 'kernel_variables',
                             'kernel_frame_columns', 'kernel_version_cells', 'kernel_skip_restore',
                             'notebook_versions', 'signing_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS own_rows ON %I', t);
        EXECUTE format('CREATE POLICY own_rows ON %I USING (owner = current_user) '
                       'WITH CHECK (owner = current_user)', t);
    END LOOP;
END $$;

-- Blobs are content-addressed and shared by everyone's rows: garbage collection must see
-- every reference, not only the caller's. This function (run with its owner's rights)
-- returns the referenced hashes and nothing else of the rows.
CREATE OR REPLACE FUNCTION pipulate_referenced_blobs() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT blob FROM steps WHERE blob IS NOT NULL
    UNION SELECT blob FROM notebook_versions
    UNION SELECT blob FROM kernel_variables WHERE blob IS NOT NULL
    UNION SELECT blob FROM kernel_frame_columns
$$;
REVOKE ALL ON FUNCTION pipulate_referenced_blobs() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pipulate_referenced_blobs() TO pipulate_users;

GRANT SELECT, INSERT, UPDATE, DELETE ON jobs, steps, kernel_notebooks, kernel_versions,
    kernel_variables, kernel_frame_columns, kernel_version_cells, kernel_skip_restore,
    notebook_versions TO pipulate_users;
GRANT SELECT, INSERT ON signing_keys TO pipulate_users;
DO $$ BEGIN
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO pipulate_users', current_schema());
END $$;
