"""Serve jobs: the README's seven endpoints, plus pause and resume.

A job is addressed by id or by name (`JobService.resolve`: all digits is an id), once
`params.JobRef` has answered 404 for an id no store can hold. Every change goes
through `node.jobs`, which keeps next fires and the scheduler right.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from socmeth.api import NodeDep
from socmeth.api.access import VIEWER, Admin, Operator
from socmeth.api.params import JobRef, QueryText
from socmeth.api.runs import RunQueryDep, list_run_page, runs_out
from socmeth.api.schemas import (
    DEFAULT_PAGE,
    MAX_PAGE,
    DependencyGraphOut,
    JobIn,
    JobOut,
    JobPage,
    JobPatch,
    RunOut,
    RunPage,
    apply_patch,
    graph_out,
    job_out,
    to_definition,
)
from socmeth.errors import ChangedError
from socmeth.jobs import CHANGED_RETRIES
from socmeth.store.base import JobFilter, JobSort

# Reading takes the viewer role; each change names the role it takes.
router = APIRouter(prefix="/api/jobs", tags=["jobs"], dependencies=[VIEWER])

MAX_GRAPH_JOBS = 500


@router.get("")
async def list_jobs(
    node: NodeDep,
    search: Annotated[
        QueryText | None, Query(max_length=200, description="A part of the name.")
    ] = None,
    enabled: bool | None = None,
    tag: Annotated[QueryText | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    sort: Annotated[
        JobSort,
        Query(
            description="The order: `name` (A to Z), `-name` (Z to A), "
            "`next_fire_at` (soonest first, jobs with no next fire last), "
            "`-updated_at` or `-created_at` (newest first). A cursor pages only "
            "under the sort it was made with."
        ),
    ] = JobSort.NAME,
) -> JobPage:
    """List jobs in the order asked for (by name unless told), optionally narrowed
    by name, state or tag."""
    job_filter = JobFilter(search=search or None, enabled=enabled, tag=tag or None)
    page = await node.store.list_jobs(job_filter, limit, cursor, sort)
    return JobPage(items=[job_out(j) for j in page.items], next_cursor=page.next_cursor)


@router.post("", status_code=201)
async def create_job(
    node: NodeDep, body: JobIn, response: Response, principal: Admin
) -> JobOut:
    """Create a job; fields left out get their defaults. Role: admin."""
    job = await node.jobs.create(to_definition(body, node.config), principal)
    response.headers["Location"] = f"/api/jobs/{job.id}"
    return job_out(job)


@router.get("/{ref}")
async def get_job(node: NodeDep, ref: JobRef) -> JobOut:
    """Return one job."""
    return job_out(await node.jobs.resolve(ref))


@router.put("/{ref}")
async def update_job(
    node: NodeDep, ref: JobRef, body: JobPatch, principal: Admin
) -> JobOut:
    """Change the fields given; the others keep their stored values. Role: admin.

    The fields are applied to the job as stored when it is written: should it change
    meanwhile (a concurrent update, or a rename of a job it depends on), they are
    applied again to the new version.
    """
    for tries_left in reversed(range(CHANGED_RETRIES)):
        job = await node.jobs.resolve(ref)
        definition = apply_patch(job.definition, body, node.config)
        try:
            return job_out(await node.jobs.update(job, definition, principal))
        except ChangedError:
            if not tries_left:
                raise
    raise AssertionError("unreachable: the last try returns or raises")


@router.delete("/{ref}", status_code=204)
async def delete_job(node: NodeDep, ref: JobRef, principal: Admin) -> Response:
    """Delete a job and its history; its active runs are cancelled. Role: admin.

    409, naming them, while other jobs depend on it.
    """
    await node.jobs.delete(await node.jobs.resolve(ref), principal)
    return Response(status_code=204)


@router.post("/{ref}/run", status_code=202)
async def run_job(node: NodeDep, ref: JobRef, principal: Operator) -> RunOut:
    """Start a manual run now; 409 while a forbid job has an active run.
    Role: operator.

    A job with dependencies gets a `waiting` run: its stale dependencies are run
    first, then it is queued.
    """
    run = await node.jobs.run_now(await node.jobs.resolve(ref), principal)
    (shown,) = await runs_out(node, [run])
    return shown


@router.post("/{ref}/pause")
async def pause_job(node: NodeDep, ref: JobRef, principal: Operator) -> JobOut:
    """Stop the job's schedule from firing; runs already made go on.
    Role: operator."""
    job = await node.jobs.set_enabled(await node.jobs.resolve(ref), False, principal)
    return job_out(job)


@router.post("/{ref}/resume")
async def resume_job(node: NodeDep, ref: JobRef, principal: Operator) -> JobOut:
    """Let the job's schedule fire again, from the next fire after now.
    Role: operator."""
    job = await node.jobs.set_enabled(await node.jobs.resolve(ref), True, principal)
    return job_out(job)


@router.get("/{ref}/history")
async def job_history(node: NodeDep, ref: JobRef, query: RunQueryDep) -> RunPage:
    """List the job's runs, newest first, with the filters of GET /api/runs."""
    job = await node.jobs.resolve(ref)
    return await list_run_page(node, query, job.id)


@router.get("/{ref}/dependencies")
async def job_dependencies(
    node: NodeDep,
    ref: JobRef,
    limit: Annotated[int, Query(ge=1, le=MAX_GRAPH_JOBS)] = MAX_GRAPH_JOBS,
) -> DependencyGraphOut:
    """Return the jobs upstream and downstream of a job, the edges among them and
    each one's latest run; at most `limit` jobs, the job itself first."""
    job = await node.jobs.resolve(ref)
    return graph_out(await node.jobs.dependencies(job, limit))
