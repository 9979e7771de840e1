"""The team backend: the store's records on PostgreSQL and its blobs on S3-compatible object
storage, and ``pipulate store copy`` between a workstation's store and a team's.

Chosen by settings (``PIPULATE_DATABASE_URL``, ``PIPULATE_BLOBS_URL``); unset, the embedded
default (SQLite and blob files in the home) is used. See docs/team.md.
"""
