"""Load what a job's page and a run's page show, section by section.

Loaders take the node and the request's parameters (the path's over the query's):
`ref` names the job of a job's page, `run_id` the run of a run's page. Each loader
reads what it needs itself, so that any one section can be refreshed alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlencode

from socmeth.api.schemas import job_out
from socmeth.errors import NotFoundError, ScheduleError
from socmeth.fires import schedule_of
from socmeth.models import Job
from socmeth.node import Node
from socmeth.store.base import RunFilter
from socmeth.ui import graph, params
from socmeth.ui.sections import Context
from socmeth.ui.templating import RESERVED_NAMES

NEXT_FIRES_SHOWN = 5
RUNS_PAGE = 20
GRAPH_JOBS = 60


async def _job(node: Node, given: Mapping[str, str]) -> Job:
    return await node.jobs.resolve(given["ref"])


def next_fires(job: Job, count: int = NEXT_FIRES_SHOWN) -> list[datetime]:
    """Return the job's next fires from the stored next one; none while paused."""
    first = job.next_fire_at
    if first is None:
        return []
    schedule = schedule_of(job.definition, job.created_at)
    if schedule is None:
        return []
    return [first, *schedule.fires(first, count - 1)]


def schedule_reading(job: Job) -> str | None:
    """Read the job's schedule in plain words; None when it has none."""
    try:
        schedule = schedule_of(job.definition, job.created_at)
    except ScheduleError:
        return None  # stored before a rule tightened; the page still shows the text
    return None if schedule is None else schedule.describe()


async def load_job(node: Node, given: Mapping[str, str]) -> Context:
    """Read a job's settings (secrets masked), next fires and active runs."""
    job = await _job(node, given)
    active = (await node.store.active_runs([job.id]))[job.id]
    # A job named as a path word is linked by id: look up the few that are.
    reserved = [n for n in job.definition.depends_on if n in RESERVED_NAMES]
    return {
        "dependency_ids": {n: (await node.jobs.resolve(n)).id for n in reserved},
        "job": job,
        "shown": job_out(job),
        "next_fires": next_fires(job),
        "schedule_reading": schedule_reading(job),
        "active_count": len(active),
    }


async def load_job_graph(node: Node, given: Mapping[str, str]) -> Context:
    """Read the jobs upstream and downstream of a job, laid out as a graph."""
    job = await _job(node, given)
    dependencies = await node.jobs.dependencies(job, GRAPH_JOBS)
    return {"graph": graph.lay_out(dependencies)}


async def load_job_runs(node: Node, given: Mapping[str, str]) -> Context:
    """Read one page of a job's runs, newest first."""
    job = await _job(node, given)
    cursor = params.text(given, "cursor", max_length=1000)
    page = await node.store.list_runs(RunFilter(job_id=job.id), RUNS_PAGE, cursor)
    path = f"/jobs/{given['ref']}"
    older = page.next_cursor
    return {
        "job_runs": page.items,
        "runs_first_href": f"{path}#title-runs" if cursor else None,
        "runs_next_href": f"{path}?{urlencode({'cursor': older})}#title-runs"
        if older
        else None,
    }


async def load_run(node: Node, given: Mapping[str, str]) -> Context:
    """Read a run with its attempts and the dependency runs it is linked to."""
    run = await node.store.get_run(params.run_id(given["run_id"]))
    links = await node.store.upstream_links([run.id])
    return {"run": run, "upstream": links.get(run.id, [])}


async def load_output(node: Node, given: Mapping[str, str]) -> Context:
    """Read the output of the attempt `?attempt=N` names, by default the last one.

    While the attempt runs on this node the tail is its live copy; on another node
    it is what that node last saved (once a second).
    """
    run = await node.store.get_run(params.run_id(given["run_id"]))
    if not run.attempts:
        return {
            "run": run,
            "attempt": None,
            "output": "",
            "truncated": False,
            "output_live": False,
            "output_done": not run.state.is_active,
        }
    last = run.attempts[-1].number
    chosen = "attempt" in given and bool(given["attempt"])
    number = params.whole_number(given, "attempt", 1, 2**31 - 1, last)
    if number > last:
        raise NotFoundError(f"run {run.id} has no attempt {number}; it has {last}")
    attempt, text, truncated = await node.output(run.id, number)
    # Following the last attempt goes on while the run may get another one.
    done = attempt.state.is_final and (chosen or not run.state.is_active)
    return {
        "run": run,
        "attempt": attempt,
        "output": text,
        "truncated": truncated,
        "output_live": not attempt.state.is_final,
        "output_done": done,
    }
