"""Serve runs: list and filter them, read one, cancel one, read an attempt's output."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from socmeth.api import NodeDep
from socmeth.api.access import VIEWER, Operator
from socmeth.api.params import AttemptNumber, JobFilterRef, QueryInstant, RunId
from socmeth.api.schemas import DEFAULT_PAGE, MAX_PAGE, RunOut, RunPage, run_out
from socmeth.errors import ValidationError
from socmeth.models import Run, RunState, Trigger
from socmeth.node import Node
from socmeth.store.base import RunFilter

router = APIRouter(prefix="/api/runs", tags=["runs"], dependencies=[VIEWER])

TRUNCATED_HEADER = "X-Socmeth-Output-Truncated"


@dataclass(frozen=True)
class RunQuery:
    """Hold the filters and paging of a run listing, the job aside."""

    states: frozenset[RunState] | None
    trigger: Trigger | None
    created_after: datetime | None
    created_before: datetime | None
    limit: int
    cursor: str | None

    def filter(self, job_id: int | None) -> RunFilter:
        """Return the store's filter for these parameters and a job, if any."""
        return RunFilter(
            job_id=job_id,
            states=self.states,
            trigger=self.trigger,
            created_after=self.created_after,
            created_before=self.created_before,
        )


def run_query(
    state: Annotated[
        list[str] | None,
        Query(description="Run states, repeated or comma-separated."),
    ] = None,
    trigger: Trigger | None = None,
    created_after: Annotated[
        QueryInstant | None, Query(description="ISO 8601 with an offset or Z.")
    ] = None,
    created_before: Annotated[
        QueryInstant | None, Query(description="ISO 8601 with an offset or Z.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> RunQuery:
    """Read the query parameters of a run listing."""
    return RunQuery(
        states=parse_states(state),
        trigger=trigger,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
    )


RunQueryDep = Annotated[RunQuery, Depends(run_query)]


def parse_states(values: list[str] | None) -> frozenset[RunState] | None:
    """Read `state`, repeated or comma-separated; None matches every state."""
    names = [n.strip() for value in values or () for n in value.split(",")]
    names = [name for name in names if name]
    if not names:
        return None
    known = {state.value: state for state in RunState}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValidationError.single(
            "state",
            f"{unknown[0]!r} is not a run state; use one of {', '.join(known)}",
        )
    return frozenset(known[name] for name in names)


async def runs_out(node: Node, runs: list[Run]) -> list[RunOut]:
    """Show runs with the runs of dependencies each one is linked to."""
    links = await node.store.upstream_links([run.id for run in runs])
    return [run_out(run, links.get(run.id, ())) for run in runs]


async def list_run_page(node: Node, query: RunQuery, job_id: int | None) -> RunPage:
    """Return one page of runs, newest first."""
    page = await node.store.list_runs(query.filter(job_id), query.limit, query.cursor)
    return RunPage(items=await runs_out(node, page.items), next_cursor=page.next_cursor)


@router.get("")
async def list_runs(node: NodeDep, query: RunQueryDep, job: JobFilterRef) -> RunPage:
    """List runs, newest first, optionally of one job."""
    job_id = None if job is None else (await node.jobs.resolve(job)).id
    return await list_run_page(node, query, job_id)


@router.get("/{run_id}")
async def get_run(node: NodeDep, run_id: RunId) -> RunOut:
    """Return one run with its attempts."""
    (shown,) = await runs_out(node, [await node.store.get_run(run_id)])
    return shown


@router.post("/{run_id}/cancel", status_code=202)
async def cancel_run(node: NodeDep, run_id: RunId, principal: Operator) -> RunOut:
    """Cancel a run; a running attempt is stopped by its worker shortly after.
    Role: operator."""
    (shown,) = await runs_out(node, [await node.jobs.cancel(run_id, principal)])
    return shown


@router.get(
    "/{run_id}/attempts/{number}/output",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {"text/plain": {}},
            "headers": {
                TRUNCATED_HEADER: {
                    "description": "true when older output was left out (the cap)",
                    "schema": {"type": "string", "enum": ["true", "false"]},
                }
            },
        }
    },
)
async def get_output(
    node: NodeDep, run_id: RunId, number: AttemptNumber
) -> PlainTextResponse:
    """Return the captured output tail of an attempt, live while it runs here."""
    _, text, truncated = await node.output(run_id, number)
    return PlainTextResponse(
        text, headers={TRUNCATED_HEADER: "true" if truncated else "false"}
    )
