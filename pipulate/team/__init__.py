"""The team backend: the store's records on PostgreSQL and its blobs on object storage.

Chosen by settings (``PIPULATE_DATABASE_URL``, ``PIPULATE_BLOBS_URL``); empty, the
embedded default (SQLite and blob files in the home) is used. See docs/team.md.
"""
