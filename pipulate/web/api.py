"""The HTTP API (DESIGN.md): JSON in and out, 4xx with a message on bad input.

    GET    /api/jobs                           every job: name, app, times, number of steps
    GET    /api/jobs/{job}                     one job: its steps, their formats, sizes and values
    GET    /api/notebooks                      every notebook with saved kernel state
    GET    /api/notebooks/{id}/state           has_saved_state, saved_at, variable_count, variable_names,
                                               file_size_bytes, checksum, versions
    DELETE /api/notebooks/{id}/state           forget the notebook's saved state
    POST   /api/notebooks/{id}/state/restore   {"version": V} (optional): the version its kernel loads next
"""
from __future__ import annotations

import json
import threading

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from .render import to_jsonable
from .state import fail, job_rows, safe_get

_KS_LOCK = threading.Lock()


def kernel_store(pip):
    """The kernel-state store on the same home as ``pip`` (made once, on first use)."""
    ks = getattr(pip, "_web_kernel_store", None)
    if ks is not None:
        return ks
    with _KS_LOCK:
        ks = getattr(pip, "_web_kernel_store", None)
        if ks is None:
            try:
                from ..kernel_state import KernelStateStore
            except ImportError as exc:
                fail(503, f"Kernel state is not available in this installation ({exc}).")
            ks = KernelStateStore(home=pip.home)
            pip._web_kernel_store = ks
    return ks


def notebook_id(raw: str) -> str:
    """A notebook id from the URL, or a 400 for one that could reach outside data/."""
    try:
        from ..kernel_state import validate_notebook_id
    except ImportError as exc:
        fail(503, f"Kernel state is not available in this installation ({exc}).")
    try:
        return validate_notebook_id(raw)
    except (ValueError, TypeError) as exc:
        fail(400, f"Bad notebook id {str(raw)[:80]!r}: {exc}")


def job_detail(pip, job: str) -> dict:
    info = pip.info(job)
    if info is None:
        fail(404, f"No job named {job[:80]!r}.")
    steps = []
    for meta in info["steps"]:
        value = safe_get(pip, job, meta["step"], meta["size"])
        steps.append({"step": meta["step"], "format": meta["format"], "size": meta["size"],
                      "created": meta["created"], "updated": meta["updated"],
                      "value": to_jsonable(value)})
    return {"job": info["job"], "app": info["app"], "created": info["created"],
            "updated": info["updated"], "steps": steps}


def _version(raw):
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        fail(400, "version must be a version number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw)
    fail(400, f"version must be a version number, got {str(raw)[:40]!r}")


def register(app, pip) -> None:
    @app.route("/api/jobs", methods=["get"], name="api:jobs")
    def api_jobs():
        return {"jobs": job_rows(pip)}

    @app.route("/api/jobs/{job:path}", methods=["get"], name="api:job")
    def api_job(job: str):
        if not job or len(job) > 1024:
            fail(400, "A job name is 1 to 1024 characters.")
        return job_detail(pip, job)

    @app.route("/api/notebooks", methods=["get"], name="api:notebooks")
    def api_notebooks():
        return {"notebooks": kernel_store(pip).notebooks()}

    @app.route("/api/notebooks/{nb_id:path}/state/restore", methods=["post"], name="api:nb_restore")
    async def api_notebook_restore(req, nb_id: str):
        nb = notebook_id(nb_id)
        body = await req.body()
        version = req.query_params.get("version")
        if body.strip():
            if "json" in req.headers.get("content-type", "") or body.lstrip()[:1] in (b"{", b"n"):
                try:
                    data = json.loads(body)
                except (ValueError, UnicodeDecodeError):
                    fail(400, "The body must be JSON like {\"version\": 3}, or empty for the latest.")
                if data is not None and not isinstance(data, dict):
                    fail(400, "The body must be a JSON object like {\"version\": 3}.")
                version = (data or {}).get("version", version)
            else:
                form = await req.form()
                version = form.get("version", version)
        version = _version(version)
        ks = await run_in_threadpool(kernel_store, pip)
        try:
            result = await run_in_threadpool(ks.select_restore, nb, version)
        except KeyError as exc:
            from ..kernel_state.report import unknown_version

            versions = await run_in_threadpool(ks.versions, nb)
            fail(404, unknown_version(exc.args[0], versions) + ".")
        return JSONResponse(to_jsonable(result) if not isinstance(result, dict) else
                            json.loads(json.dumps(result, default=str)))

    @app.route("/api/notebooks/{nb_id:path}/state", methods=["get"], name="api:nb_state")
    def api_notebook_state(nb_id: str):
        nb = notebook_id(nb_id)
        summary = kernel_store(pip).summary(nb)
        return JSONResponse(json.loads(json.dumps(summary, default=str)))

    @app.route("/api/notebooks/{nb_id:path}/state", methods=["delete"], name="api:nb_clear")
    def api_notebook_clear(nb_id: str):
        nb = notebook_id(nb_id)
        return {"notebook": nb, "cleared": bool(kernel_store(pip).clear(nb))}

    @app.route("/api/{rest:path}", methods=["get", "post", "put", "patch", "delete"], name="api:unknown")
    def api_unknown(rest: str):
        fail(404, f"No API endpoint /api/{rest[:80]}; see docs/web.md.")
