"""Load what each live section of the dashboard shows, straight from the store.

A section is one partial template and the loader of its context. A page includes
its sections' partials; `?partial=NAME` renders one of them alone, which is what
the page's script fetches to refresh it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from socmeth.cluster import NodeState, node_states
from socmeth.models import ACTIVE_RUN_STATES, FINAL_RUN_STATES, RunState
from socmeth.node import Node
from socmeth.store.base import FAILED_RUN_STATES, JobFilter, JobSort, RunFilter
from socmeth.ui import chart, params

Context = dict[str, Any]
Loader = Callable[[Node, Mapping[str, str]], Awaitable[Context]]

ACTIVE_SHOWN = 20
FAILURES_SHOWN = 10
HISTORY_SHOWN = 15
JOBS_DEFAULT_PAGE = 50
JOBS_MAX_PAGE = 200
JOB_STATES = ("enabled", "paused")
ACTIVE_ORDER = (RunState.RUNNING, RunState.QUEUED, RunState.WAITING)


@dataclass(frozen=True)
class Section:
    """Name a live section: its partial is `partials/<name>.html`."""

    name: str
    title: str
    load: Loader

    @property
    def template(self) -> str:
        return f"partials/{self.name}.html"


async def load_summary(node: Node, _: Mapping[str, str]) -> Context:
    """Read counts by state, the queue size and who leads."""
    store = node.store
    now, lease = await store.current_lease()
    return {
        "job_counts": await store.count_jobs(),
        "run_counts": (await store.count_runs()).by_state,
        "queue_size": await store.queued_count(),
        "running_attempts": await store.running_count(),
        "leader": lease.leader_at(now),
        "term": lease.term,
    }


async def load_active(node: Node, _: Mapping[str, str]) -> Context:
    """Read the newest waiting, queued and running runs."""
    page = await node.store.list_runs(
        RunFilter(states=ACTIVE_RUN_STATES), ACTIVE_SHOWN, None
    )
    return {"active_runs": page.items, "active_more": page.next_cursor is not None}


async def load_failures(node: Node, _: Mapping[str, str]) -> Context:
    """Read the newest runs that ended failed, timed out or upstream failed."""
    page = await node.store.list_runs(
        RunFilter(states=FAILED_RUN_STATES), FAILURES_SHOWN, None
    )
    return {"failed_runs": page.items}


async def load_history(node: Node, _: Mapping[str, str]) -> Context:
    """Read the newest ended runs, whatever their end."""
    page = await node.store.list_runs(
        RunFilter(states=FINAL_RUN_STATES), HISTORY_SHOWN, None
    )
    return {"recent_runs": page.items}


async def load_chart(node: Node, _: Mapping[str, str]) -> Context:
    """Count ended and failed runs per hour over the last 24 hours."""
    since = chart.chart_since(node.clock.now())
    buckets = await node.store.ended_runs_by_bucket(since, chart.HOUR, chart.HOURS)
    return {"chart": chart.lay_out(buckets)}


async def load_nodes(node: Node, _query: Mapping[str, str]) -> Context:
    """Read every node's state by the store's clock, with peers never seen."""
    now, records = await node.store.list_nodes()
    _, lease = await node.store.current_lease()
    statuses = node_states(now, records, lease, node.config.cluster.peers)
    return {
        "nodes": statuses,
        "node_counts": {
            state: sum(s.state is state for s in statuses) for state in NodeState
        },
        "leader": lease.leader_at(now),
        "term": lease.term,
        "lease_expires_at": lease.expires_at if lease.leader_at(now) else None,
    }


def job_filter(
    query: Mapping[str, str],
) -> tuple[JobFilter, JobSort, int, str | None]:
    """Read the jobs list's search, state, tag, sort, page size and cursor."""
    state = params.optional_choice(query, "state", JOB_STATES)
    job_filter = JobFilter(
        search=params.text(query, "search"),
        enabled=None if state is None else state == "enabled",
        tag=params.text(query, "tag", max_length=64),
    )
    sort = params.choice(query, "sort", [s.value for s in JobSort], JobSort.NAME)
    limit = params.whole_number(query, "limit", 1, JOBS_MAX_PAGE, JOBS_DEFAULT_PAGE)
    cursor = params.text(query, "cursor", max_length=1000)
    return job_filter, JobSort(sort), limit, cursor


async def load_jobs(node: Node, query: Mapping[str, str]) -> Context:
    """Read one page of jobs in the order asked for, with each one's active runs."""
    filtered, sort, limit, cursor = job_filter(query)
    page = await node.store.list_jobs(filtered, limit, cursor, sort)
    filters = {
        "search": filtered.search or "",
        "state": query.get("state") or "",
        "tag": filtered.tag or "",
        "sort": sort.value,
        "limit": limit,
    }
    active = await node.store.active_runs([job.id for job in page.items])
    return {
        "jobs": page.items,
        "sorts": {
            JobSort.NAME.value: "name, A to Z",
            JobSort.NAME_DESC.value: "name, Z to A",
            JobSort.NEXT_FIRE.value: "next fire, soonest first",
            JobSort.UPDATED.value: "last update, newest first",
            JobSort.CREATED.value: "creation, newest first",
        },
        "active_by_job": {
            job_id: {s: sum(r.state is s for r in runs) for s in ACTIVE_ORDER}
            for job_id, runs in active.items()
        },
        "filters": filters,
        "first_href": _jobs_href(filters) if cursor else None,
        "next_href": _jobs_href(filters, page.next_cursor)
        if page.next_cursor
        else None,
    }


def _jobs_href(filters: Mapping[str, object], cursor: str | None = None) -> str:
    """Link to a page of the jobs list under the same filters."""
    kept = {name: value for name, value in filters.items() if value}
    if kept.get("limit") == JOBS_DEFAULT_PAGE:
        del kept["limit"]
    if kept.get("sort") == JobSort.NAME:
        del kept["sort"]
    if cursor is not None:
        kept["cursor"] = cursor
    return f"/jobs?{urlencode(kept)}" if kept else "/jobs"
