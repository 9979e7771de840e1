"""The settings the state engine reads, each with its default and environment variable.

The package never imports the workstation's ``config.py``: the workstation
hands its settings over as environment variables (``Settings.to_env``), and a
bare ``pip install pipulate`` runs on the defaults below.

Keys (environment variable in brackets):

- ``home`` [PIPULATE_HOME]: the data folder; see ``pipulate.home`` for the default.
- ``inline_limit`` [PIPULATE_INLINE_LIMIT]: values encoded larger than this many
  bytes go to blob files instead of the database row. Default 65536.
- ``busy_timeout_ms`` [PIPULATE_BUSY_TIMEOUT_MS]: how long a write waits for
  another process's write before failing. Default 60000.
- ``compress`` [PIPULATE_COMPRESS]: compress blobs with zstd where it pays. Default on.
- ``autosave`` [PIPULATE_AUTOSAVE]: save kernel state after every successful cell. Default on.
- ``background_save`` [PIPULATE_BACKGROUND_SAVE]: finish each cell's save on a worker
  thread while the next cells run (the cell waits only for cheap snapshots). Off:
  the save is durable before the cell's reply. Default on (with pandas >= 3, whose
  copy-on-write makes frame snapshots safe; saves stay synchronous otherwise).
- ``lazy_restore`` [PIPULATE_LAZY_RESTORE]: a restore maps big arrays (8 MiB and more,
  stored uncompressed) from their blob files instead of reading them: the kernel is back
  at once, pages are read as code touches them, and the blobs' hash checks run in the
  background (a cell waits for those of the variables it uses). Off: everything is read
  and checked before the kernel answers. Default on.
- ``autorestore`` [PIPULATE_AUTORESTORE]: restore a notebook's latest state when
  the extension loads in a fresh kernel. Default on.
- ``auto_rebuild`` [PIPULATE_AUTO_REBUILD]: after a restore, run again the cells that
  made the variables that could not be stored (what ``%state rebuild`` does). Default
  off: those cells may act outside the kernel (write files, send requests).
- ``keep_versions`` [PIPULATE_KEEP_VERSIONS]: kernel-state versions kept per notebook. Default 20.
- ``max_variable_bytes`` [PIPULATE_MAX_VARIABLE_BYTES]: kernel variables larger than
  this are skipped (and reported). Default 8 GiB.
- ``notebook_versions_keep`` [PIPULATE_NOTEBOOK_VERSIONS_KEEP]: saved versions kept
  per notebook file for recovery. Default 100.
- ``database_url`` [PIPULATE_DATABASE_URL]: the team backend's records on PostgreSQL
  (``postgresql://USER:PASSWORD@HOST:PORT/DB``, each user with their own role; docs/team.md).
  Default empty (the embedded SQLite database in the home).
- ``user`` [PIPULATE_USER]: who is working; the database role when ``database_url`` names
  none. Default JUPYTERHUB_USER, else the login name.
- ``worker_nice`` [PIPULATE_WORKER_NICE]: how many nice levels below the kernel the
  background save worker runs (Linux), 0 to 19; 0: at the kernel's own priority. Default 10.
- ``blobs_url`` [PIPULATE_BLOBS_URL]: where the blobs live: empty (the default) for blob
  files in the home; ``s3://bucket/prefix`` for S3-compatible object storage (the team
  backend, ``pipulate.team.s3``; endpoint and credentials as the AWS tools read them).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields

_PREFIX = "PIPULATE_"


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected on/off, true/false, yes/no or 1/0, got {text!r}")


@dataclass(frozen=True)
class Settings:
    home: str | None = None
    inline_limit: int = 64 * 1024
    busy_timeout_ms: int = 60_000
    compress: bool = True
    autosave: bool = True
    background_save: bool = True
    autorestore: bool = True
    lazy_restore: bool = True
    auto_rebuild: bool = False
    keep_versions: int = 20
    max_variable_bytes: int = 8 * 1024**3
    notebook_versions_keep: int = 100
    worker_nice: int = 10
    database_url: str | None = None
    user: str | None = None
    blobs_url: str | None = None

    def __post_init__(self):
        if not 0 <= self.worker_nice <= 19:
            raise ValueError(f"{self.env_name('worker_nice')} must be 0 to 19 (nice levels), "
                             f"got {self.worker_nice}")
        if self.blobs_url:
            from .team.s3 import parse_url  # checks the URL only: s3fs is not imported

            parse_url(self.blobs_url)

    def resolved_user(self) -> str:
        """``user``, else JUPYTERHUB_USER, else the login name."""
        import getpass

        return self.user or os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    @staticmethod
    def env_name(key: str) -> str:
        return _PREFIX + key.upper()

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Defaults, overridden by the environment, overridden by ``overrides``."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is None or f.name in overrides:
                continue
            try:
                if f.type in ("bool", bool):
                    values[f.name] = _parse_bool(raw)
                elif f.type in ("int", int):
                    values[f.name] = int(raw)
                else:
                    values[f.name] = raw or None
            except ValueError as exc:
                raise ValueError(f"{cls.env_name(f.name)}: {exc}") from None
        values.update(overrides)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that hand these settings to another process."""
        env = {}
        for key, value in dataclasses.asdict(self).items():
            if value is None:
                continue
            env[self.env_name(key)] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env
