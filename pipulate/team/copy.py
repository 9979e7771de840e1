"""``pipulate store copy FROM TO``: copy a whole store, verifying every blob and value.

A store is its records (SQLite ``pipulate.db`` in a folder, or PostgreSQL) and its blobs
(files in the folder, or S3-compatible storage):

    FOLDER                       an embedded store (the folder is its home)
    postgresql://...             a team store's records (as the role the URL names: that user's own)
    --from-blobs / --to-blobs    s3://bucket/prefix: that side's blobs in object storage

The copy goes through the same factories every process opens a store with
(``pipulate.db.open_database`` where it exists, ``pipulate.blobs.open_blobs``) and
copies table by table with their column lists, so it works on any backend they give.

Order: first every blob a source record names (read and checked against its hash - a
damaged one stops the copy, named - then stored), then the rows, each table in one
transaction; a record never names a blob the target lacks. A rerun skips the blobs the
target has (content-addressed: same name, same bytes) and the rows it has (same key;
checked equal), so an interrupted copy is finished by running it again. At the end every
step's value is decoded from the target.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..codecs import TEXT_FORMATS
from ..db import BLOB_REFERENCES, DB_FILE
from ..errors import IntegrityError, PipulateError
from ..settings import Settings
from ..signing import KEY_FILE, write_private_file

# Every table of a store, parents first, with the columns that say which row is which
# (a notebook version's number is made by the database on PostgreSQL: its content says it).
TABLES: list[tuple[str, tuple[str, ...]]] = [
    ("jobs", ("job",)),
    ("steps", ("job", "step")),
    ("notebook_versions", ("notebook", "saved_at", "blob")),
    ("kernel_notebooks", ("id",)),
    ("kernel_versions", ("notebook", "version")),
    ("kernel_variables", ("notebook", "version", "name")),
    ("kernel_frame_columns", ("notebook", "version", "name", "position")),
    ("kernel_version_cells", ("notebook", "version")),
    ("kernel_skip_restore", ("notebook",)),
]
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class CopyError(PipulateError):
    """The copy cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True)
class Spec:
    """One side of a copy: where its home, records and blobs are."""

    text: str
    home: Path
    database_url: str | None
    blobs_url: str | None

    def settings(self) -> Settings:
        # A folder's records and blobs are its own, never the environment's.
        return dataclasses.replace(Settings.from_env(), home=str(self.home), database_url=self.database_url,
                                   blobs_url=self.blobs_url)

    def same_records(self, other: "Spec") -> bool:
        if self.database_url or other.database_url:
            return self.database_url == other.database_url
        return self.home == other.home


def parse_spec(text: str, blobs_url: str | None, role: str) -> Spec:
    """FROM or TO (``role``) as typed, with its ``--*-blobs`` URL; CopyError if unusable."""
    if not text.strip():
        raise CopyError(f"{role}: give a folder or a postgresql:// URL")
    if blobs_url:
        from .s3 import parse_url

        try:
            parse_url(blobs_url)
        except ValueError as exc:
            raise CopyError(f"{role} blobs: {str(exc).replace('PIPULATE_BLOBS_URL', 'the blobs URL')}") from None
    scheme = _SCHEME.match(text)
    if scheme:
        if scheme.group(1).lower() not in ("postgresql", "postgres"):
            raise CopyError(f"{role}: unknown kind of store {text!r}: give a folder or a postgresql:// URL")
        from ..home import resolve_home

        return Spec(text, resolve_home(None), text, blobs_url)  # this user's home: their key, a cache
    home = Path(text).expanduser().resolve()
    if role == "FROM" and not (home / DB_FILE).is_file():
        why = "no such folder" if not home.exists() else f"no {DB_FILE} in it"
        raise CopyError(f"FROM: {text} is not a store ({why})")
    if role == "TO" and home.exists() and not home.is_dir():
        raise CopyError(f"TO: {text} is not a folder")
    return Spec(text, home, None, blobs_url)


class Side:
    """A store opened for the copy: its database and blobs, by the stores' own factories."""

    def __init__(self, spec: Spec):
        from ..kernel_state import notes, schema
        from ..recover import versions
        from ..store import Pipulate

        self.spec = spec
        spec.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Pipulate opens the records and blobs through the factories and makes the pipeline
        # tables; the other parts' tables are made as their own stores make them on open.
        self.engine = Pipulate(spec.home, settings=spec.settings())
        self.db, self.blobs = self.engine.db, self.engine.blobs
        for ddl in (versions.SCHEMA, schema.ensure_schema, notes.TABLES):
            self.db.add_schema(ddl)

    def close(self) -> None:
        self.engine.close()


def copy_store(source: Spec, target: Spec, say=print) -> dict:
    """Copy ``source`` into ``target`` (see the module's docstring); returns the counts."""
    if source.same_records(target):
        raise CopyError(f"FROM and TO are the same store ({source.text})")
    _share_key(source.home, target.home)
    src, dst = Side(source), Side(target)
    try:
        _same_key(src, dst)
        counts = {"blobs copied": 0, "blobs already there": 0}
        for digest in sorted(src.db.referenced_blobs()):
            if dst.blobs.exists(digest):
                counts["blobs already there"] += 1
                continue
            try:
                data = src.blobs.get_view(digest)  # checked against its name
            except IntegrityError as exc:
                raise CopyError(f"{exc} ({_where(src, digest)}): nothing that names it was copied; "
                                f"mend or drop it in FROM, then run the copy again") from None
            if dst.blobs.put(data) != digest:
                raise IntegrityError(f"blob {digest} changed while it was copied")
            counts["blobs copied"] += 1
        for table, key in TABLES:
            counts[table] = _copy_table(src, dst, table, key)
        steps = 0
        for job in dst.engine.jobs():  # every step's value decodes in the target (hash, signature)
            steps += len(dst.engine.read(job))
        counts["step values decoded"] = steps
    finally:
        src.close()
        dst.close()
    say(", ".join(f"{name}: {n}" for name, n in counts.items()))
    return counts


def _copy_table(src: Side, dst: Side, table: str, key: tuple[str, ...]) -> int:
    """Insert the source's rows the target lacks, in one transaction; every row of the
    source must then be in the target, equal. Returns how many rows the table has.

    The columns are those both sides write (``db.columns``: PostgreSQL adds an owner and
    numbers of its own); a step's value is text or bytes as the target stores it."""
    rows = src.db.query(f"SELECT * FROM {table}")
    if not rows:
        return 0
    wanted = set(dst.db.columns(table))
    columns = [c for c in rows[0] if c in wanted]
    # A step's text value (JSON) is text in SQLite, UTF-8 bytes on PostgreSQL.
    text_values = dst.db.text_values if table == "steps" else None
    # kernel_variables rows are inserted open (a trigger refuses closed ones: schema.py),
    # then closed.
    closing = "until" in columns and table == "kernel_variables"
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    where = " AND ".join(f"{k} = ?" for k in key)

    def value(row, column):
        v = row[column]
        if closing and column == "until":
            return None
        if text_values is not None and column == "value" and v is not None:
            if not text_values and isinstance(v, str):
                return v.encode("utf-8")
            if text_values and row["format"] in TEXT_FORMATS and not isinstance(v, str):
                return bytes(v).decode("utf-8")
        return v

    with dst.db.write() as conn:
        have = {tuple(r) for r in conn.execute(f"SELECT {', '.join(key)} FROM {table}").fetchall()}
        for row in rows:
            if tuple(row[k] for k in key) in have:
                continue
            conn.execute(insert, [value(row, c) for c in columns])
            if closing and row["until"] is not None:
                conn.execute(f"UPDATE {table} SET until = ? WHERE {where} AND until IS NULL",
                             [row["until"], *(row[k] for k in key)])
    there = {tuple(r[k] for k in key): r for r in dst.db.query(f"SELECT * FROM {table}")}
    for row in rows:
        ident = tuple(row[k] for k in key)
        theirs = there.get(ident)
        if theirs is None or any(_same_value(row[c]) != _same_value(theirs[c]) for c in columns):
            raise CopyError(f"TO already holds another {table} row {ident!r}: it is not a copy of FROM "
                            f"(copy into an empty store)")
    return len(rows)


def _same_value(v):
    """A value as both backends compare it: text and bytes (and views of them) as bytes."""
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def _where(side: Side, digest: str) -> str:
    """Which record names ``digest``, for messages."""
    for table, column in BLOB_REFERENCES:
        key = dict(TABLES).get(table, ())
        try:
            found = side.db.query(f"SELECT * FROM {table} WHERE {column} = ? LIMIT 1", (digest,))
        except Exception:  # a table this store lacks
            continue
        if found:
            return f"named by {table} " + ", ".join(f"{k}={found[0][k]!r}" for k in key)
    return "named by no record"


def _same_key(src: Side, dst: Side) -> None:
    """FROM's pickles must stay readable in TO: both sign with one key (a team database
    keeps its users' keys itself, so TO's key may already be set there)."""
    if src.spec.database_url is None and not (src.spec.home / KEY_FILE).exists():
        return  # nothing in FROM was ever signed
    if src.db.signing_key(src.spec.home) != dst.db.signing_key(dst.spec.home):
        raise CopyError("TO signs with another key than FROM: FROM's pickles would be refused there; "
                        "copy into a new store, or give TO the key of FROM")


def _share_key(source: Path, target: Path) -> None:
    """The target trusts the source's pickles: it gets the source's signing key, unless it
    has one of its own (then both stores' pickles cannot be trusted by one key: refused)."""
    theirs = source / KEY_FILE
    if not theirs.exists():
        return
    mine = target / KEY_FILE
    key = theirs.read_bytes()
    if mine.exists():
        if mine.read_bytes() != key:
            raise CopyError(f"TO has another signing key ({mine}): FROM's pickles would be refused there; "
                            f"copy into a new store, or give TO the key of FROM")
        return
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target / f".{KEY_FILE}.{os.getpid()}.tmp"
    write_private_file(tmp, key)
    os.replace(tmp, mine)


# --- the command -----------------------------------------------------------------------------

def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    p = sub.add_parser("copy", help="copy a whole store (embedded <-> team), verifying every value; safe to rerun",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="FROM", help="a store's folder (its home), or a postgresql:// URL")
    p.add_argument("target", metavar="TO", help="a folder (made if missing), or a postgresql:// URL")
    p.add_argument("--from-blobs", metavar="URL", default=None,
                   help="FROM's blobs are in s3://bucket/prefix (default: blob files in its folder)")
    p.add_argument("--to-blobs", metavar="URL", default=None,
                   help="TO's blobs go to s3://bucket/prefix (default: blob files in its folder)")
    p.set_defaults(func=cmd_copy)


def cmd_copy(args) -> int:
    try:
        source = parse_spec(args.source, args.from_blobs, "FROM")
        target = parse_spec(args.target, args.to_blobs, "TO")
        copy_store(source, target)
    except CopyError as exc:
        print(f"pipulate store copy: {exc}", file=sys.stderr)
        return 2
    return 0
