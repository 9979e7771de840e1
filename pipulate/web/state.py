"""Reading the store for pages: job lists with their app, values that survive damage, key checks."""
from __future__ import annotations

import re
from typing import Any

from starlette.exceptions import HTTPException

from ..errors import PipulateError
from .render import PREVIEW_BYTES_LIMIT, Damaged, human_size

KEY_MAX = 100
# Letters and digits of any script, then also space and a few punctuation marks.
_KEY_RE = re.compile(r"^\w[\w .,:@+=~-]*$")


def fail(status: int, message: str):
    """Stop handling this request: the server answers ``status`` with ``message``."""
    raise HTTPException(status, message)


def check_key(raw: Any, what: str = "key") -> str:
    """A workflow key the user typed, or a 400 that says what is wrong with it."""
    if isinstance(raw, list):  # the field was sent twice: take the last
        raw = raw[-1] if raw else ""
    key = (raw if isinstance(raw, str) else "").strip()
    if not key:
        fail(400, f"Enter a {what}: a short name for this job, e.g. hello.")
    if len(key) > KEY_MAX:
        fail(400, f"The {what} is {len(key)} characters long; at most {KEY_MAX} are allowed.")
    if "/" in key or "\\" in key or ".." in key:
        fail(400, f"The {what} {key[:40]!r} contains '/', '\\' or '..', which keys cannot contain.")
    if not _KEY_RE.match(key):
        fail(400, f"The {what} {key[:40]!r} has characters keys cannot use: use letters, digits, "
                  "spaces and _ . , : @ + = ~ - (starting with a letter or digit).")
    return key


def job_rows(pip) -> list[dict]:
    """Every job with its app, times and number of steps, newest first (one query)."""
    return pip.db.query(
        "SELECT j.job AS job, j.app AS app, j.created AS created, j.updated AS updated, "
        "(SELECT count(*) FROM steps s WHERE s.job = j.job) AS steps "
        "FROM jobs j ORDER BY j.created DESC, j.rowid DESC")


def job_app(pip, job: str) -> str | None:
    rows = pip.db.rows("SELECT app FROM jobs WHERE job = ?", (job,))
    return rows[0][0] if rows else None


def keys_for_app(pip, app_name: str, first_step: str | None = None, limit: int = 200) -> list[str]:
    """Jobs made by this app, plus app-less jobs (made in a notebook) that have its first step."""
    if first_step is None:
        rows = pip.db.rows("SELECT job FROM jobs WHERE app = ? ORDER BY updated DESC LIMIT ?",
                           (app_name, limit))
    else:
        rows = pip.db.rows(
            "SELECT job FROM jobs j WHERE app = ? OR (app IS NULL AND EXISTS "
            "(SELECT 1 FROM steps s WHERE s.job = j.job AND s.step = ?)) "
            "ORDER BY updated DESC LIMIT ?", (app_name, first_step, limit))
    return [r[0] for r in rows]


def step_names(pip, job: str) -> list[str]:
    """The steps a job has, in order, without decoding any value."""
    return [r[0] for r in pip.db.rows("SELECT step FROM steps WHERE job = ? ORDER BY ord", (job,))]


def safe_get(pip, job: str, step: str, size: int | None = None) -> Any:
    """A step's value, or a ``Damaged`` that says why it cannot be shown."""
    if size is not None and size > PREVIEW_BYTES_LIMIT:
        return Damaged(f"{human_size(size)} stored; too large to show here (read it with pip.get)")
    try:
        return pip.get(job, step)
    except PipulateError as exc:
        return Damaged(str(exc))
    except Exception as exc:  # a decoder failing on odd data must not take the page down
        return Damaged(f"{type(exc).__name__}: {exc}")


def safe_read(pip, job: str) -> dict[str, Any]:
    """``pip.read(job)``, but a damaged step becomes a ``Damaged`` instead of failing the job."""
    try:
        return pip.read(job)
    except PipulateError:
        return {step: safe_get(pip, job, step) for step in step_names(pip, job)}
