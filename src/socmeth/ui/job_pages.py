"""Route a job's pages: its page, the new-job and edit forms, and its actions.

A job's page is `/jobs/{ref}`, by name or id as in the API. Forms post
`application/x-www-form-urlencoded` bodies here (no JavaScript needed), each change
goes through `node.jobs` as the API's do, and a change that worked answers
`303 See Other` to the page that shows its result. A form with errors is shown
again with the text as typed and each error beside its input. That page is the
answer to the post, so its status is 200: browsers log any 4xx as an error.

Forms and actions post to the job's id, so that a rename meanwhile does not lose
what was typed; pages are shown by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from socmeth.api.access import check_role
from socmeth.api.schemas import (
    TYPE_FIELDS,
    JobIn,
    JobPatch,
    apply_patch,
    field_errors,
    job_out,
    to_definition,
)
from socmeth.auth.models import Principal, Role
from socmeth.errors import (
    ChangedError,
    ConflictError,
    FieldError,
    LimitError,
    NotFoundError,
    ScheduleError,
    StoreError,
    ValidationError,
)
from socmeth.models import Concurrency, Job, JobDefinition, JobType, Misfire
from socmeth.node import Node
from socmeth.schedule import parse_schedule, validate_timezone
from socmeth.schedule.timezones import zone_names
from socmeth.ui import params, posting
from socmeth.ui.details import load_job, load_job_graph, load_job_runs
from socmeth.ui.forms import (
    INPUTS,
    JobForm,
    job_values,
    keep_stored_text,
    read_form,
)
from socmeth.ui.pages import Page, error_page, make_page, render, templates
from socmeth.ui.sections import Section
from socmeth.ui.templating import job_path

router = APIRouter(include_in_schema=False)

JOB = make_page(
    "job",
    "Job",
    Section("job", "Settings", load_job),
    Section("graph", "Dependencies", load_job_graph),
    Section("runs", "Runs", load_job_runs),
)
PREVIEW_FIRES = 5
# A valid name that stands in for a wrong one while the other rules are checked.
PLACEHOLDER_NAME = "form-check"
NOTICES = {
    "created": "Job created.",
    "updated": "Changes saved.",
    "paused": "Job paused: its schedule no longer fires.",
    "resumed": "Job resumed: it fires from its next fire after now.",
}


def _node(request: Request) -> Node:
    return cast(Node, request.app.state.node)


@router.get("/jobs/new", response_class=HTMLResponse)
async def new_job(request: Request) -> Response:
    """Show an empty job form; `?type=` chooses the job type shown first."""
    await check_role(request, Role.ADMIN)
    chosen = request.query_params.get("type", JobType.COMMAND.value)
    values = {"type": chosen if chosen in set(JobType) else JobType.COMMAND.value}
    return _form_page(request, JobForm(values={**values, "enabled": "on"}), None)


@router.post("/jobs/new", response_class=HTMLResponse)
async def create_job(request: Request) -> Response:
    """Create a job from the form, or show the form again with its errors."""
    pairs = await posting.read(request)
    if isinstance(pairs, Response):
        return pairs
    principal = await check_role(request, Role.ADMIN)
    node = _node(request)
    values, fields, errors = read_form(pairs)
    definition = _validated(node, fields, errors, None)
    if definition is not None:
        try:
            created = await node.jobs.create(definition, principal)
            return _see(f"/jobs/{_ref(created)}?done=created")
        except (ValidationError, ConflictError, LimitError) as exc:
            errors += _errors_of(exc)
    form = JobForm(values=values)
    form.add(errors, fields)
    return _form_page(request, form, None)


@router.get("/jobs/{ref}", response_class=HTMLResponse)
async def job_page(request: Request, ref: str) -> Response:
    """Show a job: settings, next fires, dependencies and runs, with its actions."""
    notice = NOTICES.get(request.query_params.get("done", ""))
    return await render(request, JOB, {"notice": notice})


@router.get("/jobs/{ref}/edit", response_class=HTMLResponse)
async def edit_job(request: Request, ref: str) -> Response:
    """Show the job form filled with the stored job, its secrets masked."""
    await check_role(request, Role.ADMIN)
    job = await _job_or_page(request, ref)
    if isinstance(job, Response):
        return job
    form = JobForm(values=job_values(job_out(job)), version=_version(job))
    return _form_page(request, form, job)


@router.post("/jobs/{ref}/edit", response_class=HTMLResponse)
async def update_job(request: Request, ref: str) -> Response:
    """Save the form over the stored job, unless someone changed it meanwhile.

    The form carries the `updated_at` it was filled from; a job changed since is
    not overwritten: the form is shown again, as typed, to be saved once more.
    Masks left in place keep the stored secrets, as in the API.
    """
    pairs = await posting.read(request)
    if isinstance(pairs, Response):
        return pairs
    principal = await check_role(request, Role.ADMIN)
    job = await _job_or_page(request, ref)
    if isinstance(job, Response):
        return job
    node = _node(request)
    values, fields, errors = read_form(pairs)
    keep_stored_text(fields, job.definition)
    form = JobForm(values=values, version=_version(job))
    definition = _validated(node, fields, errors, job)
    if dict(pairs).get("version") != _version(job):
        form.general.append(_changed_meanwhile(job, values))
    elif definition is not None:
        try:
            updated = await node.jobs.update(job, definition, principal)
            return _see(f"/jobs/{_ref(updated)}?done=updated")
        except ChangedError:
            form.general.append(
                "This job changed while it was being saved; save again."
            )
        except (ValidationError, ConflictError, LimitError) as exc:
            errors += _errors_of(exc)
    form.add(errors, fields)
    return _form_page(request, form, job)


def _changed_meanwhile(job: Job, values: Mapping[str, str]) -> str:
    """Say that the job changed since its form was opened, and what it holds now
    where that differs from the form."""
    stored = job_values(job_out(job))
    types = {job.definition.type.value, values.get("type", "")}
    differing = [
        f"{spec.label}: {_brief(stored.get(spec.name, '')) or '(empty)'}"
        for spec in INPUTS
        if stored.get(spec.name, "") != values.get(spec.name, "")
        and _taken_by(spec.name, types)
    ]
    now = (
        f" Stored now, where it differs from this form: {'; '.join(differing)}."
        if differing
        else ""
    )
    return (
        "This job was changed by someone else after this form was opened."
        f"{now} Save again to replace the stored job with this form."
    )


def _taken_by(name: str, types: set[str]) -> bool:
    """Tell whether an input belongs to one of the job types."""
    takers = TYPE_FIELDS.get(name)
    return takers is None or any(t.value in types for t in takers)


def _brief(text: str) -> str:
    line = text.replace("\n", " ⏎ ")
    return line if len(line) <= 80 else f"{line[:77]}..."


@router.post("/jobs/{ref}/run", response_class=HTMLResponse)
async def run_job(request: Request, ref: str) -> Response:
    """Start a manual run and show its page."""
    acting = await _action(request, ref, Role.OPERATOR)
    if isinstance(acting, Response):
        return acting
    principal, job = acting
    try:
        run = await _node(request).jobs.run_now(job, principal)
    except ConflictError as exc:
        return error_page(request, 409, str(exc), back=_back(job))
    return _see(f"/runs/{run.id}?done=started")


@router.post("/jobs/{ref}/pause", response_class=HTMLResponse)
async def pause_job(request: Request, ref: str) -> Response:
    """Stop the job's schedule from firing."""
    return await _set_enabled(request, ref, enabled=False)


@router.post("/jobs/{ref}/resume", response_class=HTMLResponse)
async def resume_job(request: Request, ref: str) -> Response:
    """Let the job's schedule fire again."""
    return await _set_enabled(request, ref, enabled=True)


async def _set_enabled(request: Request, ref: str, *, enabled: bool) -> Response:
    acting = await _action(request, ref, Role.OPERATOR)
    if isinstance(acting, Response):
        return acting
    principal, job = acting
    try:
        job = await _node(request).jobs.set_enabled(job, enabled, principal)
    except ChangedError as exc:
        return error_page(request, 409, str(exc), back=_back(job))
    return _see(f"/jobs/{_ref(job)}?done={'resumed' if enabled else 'paused'}")


@router.get("/jobs/{ref}/delete", response_class=HTMLResponse)
async def confirm_delete(request: Request, ref: str) -> Response:
    """Ask before deleting: say what goes with the job, and what stands in the way."""
    await check_role(request, Role.ADMIN)
    job = await _job_or_page(request, ref)
    if isinstance(job, Response):
        return job
    node = _node(request)
    graph = await node.jobs.dependencies(job, 500)
    edges = set(graph.edges)
    downstream = sorted((j.name, j.id) for j in graph.jobs if (job.id, j.id) in edges)
    active = (await node.store.active_runs([job.id]))[job.id]
    context = {
        "page": Page("delete", f"Delete {job.name}", "delete.html", {}),
        "job": job,
        "dependents": downstream,
        "active_runs": active,
    }
    return templates.TemplateResponse(request, "delete.html", context)


@router.post("/jobs/{ref}/delete", response_class=HTMLResponse)
async def delete_job(request: Request, ref: str) -> Response:
    """Delete the job and its history; refused while other jobs depend on it."""
    acting = await _action(request, ref, Role.ADMIN)
    if isinstance(acting, Response):
        return acting
    principal, job = acting
    try:
        await _node(request).jobs.delete(job, principal)
    except ConflictError as exc:
        return error_page(request, 409, str(exc), back=_back(job))
    return _see(f"/jobs?deleted={job.name}")


async def _action(
    request: Request, ref: str, role: Role
) -> tuple[Principal, Job] | Response:
    """Check an action's post (its form and CSRF token), the caller's role and the
    job it names; return the caller and the job, or the page that refuses."""
    posted = await posting.read(request)
    if isinstance(posted, Response):
        return posted
    principal = await check_role(request, role)
    job = await _job_or_page(request, ref)
    if isinstance(job, Response):
        return job
    return principal, job


async def _job_or_page(request: Request, ref: str) -> Job | Response:
    """Return the job the path names, or the page saying why there is none."""
    try:
        return await _node(request).jobs.resolve(ref)
    except NotFoundError as exc:
        return error_page(request, 404, str(exc), back=("/jobs", "All jobs"))
    except StoreError as exc:
        return error_page(request, 503, f"The store is unavailable: {exc}; retry")


def _form_page(request: Request, form: JobForm, job: Job | None) -> Response:
    node = _node(request)
    defaults = node.config.scheduler
    editing = job is not None
    title = f"Edit {job.name}" if job is not None else "New job"
    context: dict[str, Any] = {
        "page": Page("job-form", title, "job_form.html", {}),
        "form": form,
        "job": job,
        "action": f"/jobs/{job.id}/edit" if job is not None else "/jobs/new",
        "cancel_href": f"/jobs/{_ref(job)}" if job is not None else "/jobs",
        "editing": editing,
        "types": [t.value for t in JobType],
        # The default first: a select shows it for an empty value.
        "concurrencies": [Concurrency.FORBID, Concurrency.ALLOW, Concurrency.REPLACE],
        "misfires": [Misfire.RUN_ONCE, Misfire.SKIP],
        "methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        "zones": zone_names(),
        "default_timezone": defaults.timezone,
        "default_timeout": min(defaults.job_timeout, defaults.max_job_timeout),
        "preview": _preview(node, form.value("schedule"), form.value("timezone"), job),
    }
    return templates.TemplateResponse(request, "job_form.html", context)


@router.get("/ui/schedule-preview", response_class=HTMLResponse)
async def schedule_preview(request: Request) -> Response:
    """Render the job form's schedule preview for `?schedule=&timezone=`.

    The form's script swaps it in as the schedule is typed. A schedule that does
    not parse is a preview too (its error, status 200), not a failed request.
    `?job=` (an edited job's id) counts `@every` from that job's creation.
    """
    query = request.query_params
    try:
        schedule = params.text(query, "schedule", max_length=1000) or ""
        zone = params.text(query, "timezone", max_length=100) or ""
        ref = params.text(query, "job", max_length=200)
        job = await _node(request).jobs.resolve(ref) if ref else None
    except ValidationError as exc:
        return error_page(request, 422, "A query parameter is invalid", exc.errors)
    except NotFoundError:
        job = None
    context = {"preview": _preview(_node(request), schedule, zone, job)}
    return templates.TemplateResponse(
        request, "partials/schedule_preview.html", context
    )


def _preview(node: Node, schedule: str, zone: str, job: Job | None) -> dict[str, Any]:
    """Read a schedule as the form's preview shows it: in words, with next fires.

    The same reading as GET /api/schedules/preview, except that an `@every`
    schedule counts from the job's creation, as the scheduler does for it, or from
    now for a new job.
    """
    schedule = schedule.strip()
    zone = zone.strip() or node.config.scheduler.timezone
    shown: dict[str, Any] = {"error": None, "reading": None, "fires": [], "zone": zone}
    if not schedule:
        return shown
    now = node.clock.now()
    try:
        validate_timezone(zone)
        parsed = parse_schedule(schedule, zone, job.created_at if job else now)
    except ScheduleError as exc:
        shown["error"] = "; ".join(error.message for error in exc.errors)
        return shown
    shown["reading"] = parsed.describe()
    shown["fires"] = parsed.fires(now, PREVIEW_FIRES)
    return shown


def _validated(
    node: Node, fields: dict[str, Any], errors: list[FieldError], job: Job | None
) -> JobDefinition | None:
    """Check the form's fields as the API checks a job's (a new one, or a change
    of `job`); add each error found to `errors`, and return the job when none is.

    The model's own checks come first and the rules that span fields after them;
    so that the form shows every error at once, those rules are checked again
    without the fields already found wrong.
    """
    try:
        definition = _definition(node, fields, job)
    except pydantic.ValidationError as exc:
        errors += field_errors(exc.errors())
    except ValidationError as exc:
        errors += exc.errors
        return None
    else:
        return None if errors else definition
    wrong = {_input_of(error.field) for error in errors}
    if "type" in wrong:
        return None  # which fields belong is then unknown
    rest = {name: None if name in wrong else v for name, v in fields.items()}
    if "name" in wrong:
        rest["name"] = PLACEHOLDER_NAME
    try:
        _definition(node, rest, job)
    except pydantic.ValidationError:
        pass  # nothing new: those fields were found wrong already
    except ValidationError as exc:
        errors += [e for e in exc.errors if _input_of(e.field) not in wrong]
    return None


def _definition(node: Node, fields: dict[str, Any], job: Job | None) -> JobDefinition:
    if job is None:
        return to_definition(JobIn.model_validate(fields), node.config)
    return apply_patch(job.definition, JobPatch.model_validate(fields), node.config)


def _input_of(field: str) -> str:
    """Return the top field of an API field path: `env` of `env.TOKEN`."""
    return re.split(r"[.\[]", field, maxsplit=1)[0]


def _errors_of(exc: ValidationError | ConflictError | LimitError) -> list[FieldError]:
    if isinstance(exc, ValidationError):
        return list(exc.errors)
    return [FieldError(exc.field or "", str(exc))]


def _version(job: Job) -> str:
    return job.updated_at.isoformat()


def _ref(job: Job) -> str:
    """Address a job in a path: by name, unless the name is a word of the paths."""
    return job_path(job.name, job.id).removeprefix("/jobs/")


def _back(job: Job) -> tuple[str, str]:
    return f"/jobs/{_ref(job)}", f"Back to {job.name}"


def _see(location: str) -> Response:
    return RedirectResponse(location, status_code=303)
