"""Jobs: every job in the store, its steps and their values, with revert and delete.

Jobs are listed whoever made them: a web workflow, a notebook, a script. Job
names travel in the query string (``/jobs/view?job=...``), so any name the store
accepts can be opened here, ``/`` and all.
"""
import json
from urllib.parse import quote

from pipulate.web import (FINALIZED, A, Article, Button, Code, Div, H1, Header, P, Small, Span, Strong, Table, Tbody, Td,
                          Th, Thead, Tr, app_url, clear_flash, fail, human_size, job_rows, page, plural, safe_get,
                          value_view, when)

APP_NAME = "jobs"
TITLE = "Jobs"
ORDER = 20
DESCRIPTION = "Every job in the store, from the web or a notebook: steps, values, revert, delete."


def job_url(job):
    return app_url(f"/jobs/view?job={quote(job, safe='')}")


def check_job(job):
    if not isinstance(job, str) or not job:
        fail(400, "Name a job: ?job=NAME.")
    if len(job) > 1024:
        fail(400, f"A job name is at most 1024 characters; got {len(job)}.")
    return job


PAGE_LIMIT = 500  # jobs listed on the page (newest first); /api/jobs gives them all


def jobs_table(pip):
    rows = job_rows(pip)
    if not rows:
        return Div(P("The store holds no jobs yet. Start one in a workflow, or in a notebook with ",
                     Code('pip.set("job", "step", value)'), "."), id="jobs-list")
    more = P(Small(f"The newest {PAGE_LIMIT} of {len(rows)} jobs; /api/jobs lists them all.")) \
        if len(rows) > PAGE_LIMIT else ""
    return Div(more, Table(Thead(Tr(Th("Job"), Th("App"), Th("Steps"), Th("Updated"))),
                           Tbody(*[Tr(Td(A(r["job"], href=job_url(r["job"]))),
                                      Td(r["app"] or Span("notebook / script", cls="muted")),
                                      Td(r["steps"]), Td(Small(when(r["updated"]))))
                                   for r in rows[:PAGE_LIMIT]]),
                           cls="compact"), id="jobs-list")


def step_card(pip, job, meta):
    vals = json.dumps({"job": job, "step": meta["step"]})
    return Article(
        Header(Strong(meta["step"]), Small(f" · {meta['format']} · {human_size(meta['size'])}"
                                           f"{' (blob)' if meta['in_blob'] else ''} · updated {when(meta['updated'])}",
                                           cls="muted")),
        value_view(safe_get(pip, job, meta["step"], meta["size"])),
        Div(Button("Revert to here", cls="secondary outline", hx_post=app_url("/jobs/revert"), hx_vals=vals,
                   hx_target="#job-detail", hx_swap="outerHTML",
                   hx_confirm=f"Drop step {meta['step']} and every later step of {job}?"),
            cls="step-actions"),
        cls="step-card")


def job_detail(pip, job, apps=()):
    info = pip.info(job)
    if info is None:
        fail(404, f"No job named {job[:80]!r}.")
    vals = json.dumps({"job": job})
    head = Div(P(Strong(job), Span(f" · app {info['app'] or '(none)'} · created {when(info['created'])}"
                                   f" · {plural(len(info['steps']), 'step')}", cls="muted")),
               Div(Button("Delete job", cls="contrast", hx_post=app_url("/jobs/delete"), hx_vals=vals,
                          hx_target="#job-detail", hx_swap="outerHTML",
                          hx_confirm=f"Delete job {job} and all its steps?"),
                   A("Open in its app", href=app_url(f"/{info['app']}?key={quote(job, safe='')}"))
                   if info["app"] in apps else "",
                   cls="step-actions"))
    cards = [step_card(pip, job, m) for m in info["steps"]] or [P("No steps (all were reverted).")]
    return Div(head, *cards, id="job-detail")


def stop_work(app, job):
    """Stop background work on ``job`` (e.g. a List-to-spreadsheet run) before changing it."""
    for stop in getattr(app.state, "job_stoppers", []):
        stop(job)


def mounted(app):
    """Names of the apps that can open a job (for the "Open in its app" link)."""
    return {a.name for a in getattr(app.state, "apps", [])}


def register(app, rt, pip):
    @rt("")
    def index():
        return page(TITLE, H1(TITLE), P(DESCRIPTION), jobs_table(pip))

    @rt("/view")
    def view(job: str = ""):
        job = check_job(job)
        return page(f"Job {job[:40]}", H1("Job"), P(A("← all jobs", href=app_url("/jobs"))),
                    job_detail(pip, job, mounted(app)))

    @rt("/revert", methods=["post"])
    def revert(job: str = "", step: str = ""):
        job = check_job(job)
        if not step:
            fail(400, "Name the step to revert to.")
        if pip.info(job) is None:
            fail(404, f"No job named {job[:80]!r}.")
        if step != FINALIZED and safe_get(pip, job, FINALIZED) is True:
            fail(409, f"The job {job!r} is finalized; revert its {FINALIZED!r} step first to unlock it.")
        stop_work(app, job)
        try:
            pip.clear(job, from_step=step)
        except ValueError as exc:
            fail(404, str(exc))
        return job_detail(pip, job, mounted(app)), clear_flash()

    @rt("/delete", methods=["post"])
    def delete(job: str = ""):
        job = check_job(job)
        stop_work(app, job)
        if not pip.delete(job):
            fail(404, f"No job named {job[:80]!r}.")
        return (Div(P(f"Deleted job {job!r}. ", A("Back to all jobs", href=app_url("/jobs"))), id="job-detail"),
                clear_flash())
