"""Decide what job dependencies do: pure functions of the job graph, the runs and `now`.

SPEC "Dependencies" has one rule: a run of J executes only when every dependency D
has a succeeded run that finished after J last began executing, so each success of D
feeds J once. Here "began executing" is the instant a run of J passed that check (it
left `waiting` for `queued`); the job keeps it as `consumed_at`, and a success of D
is *fresh* for J when it finished after it. Taking the instant of the check, not of
the attempt's start, keeps a success from feeding two runs of J when the first one
waits in the queue for a worker.

The store gathers a `Snapshot` of what a pass needs (the waiting runs to look at,
the runs of dependencies that ended, the jobs around them) and applies the `Plan`
that `plan_dependencies` returns, in one transaction. A waiting run of J is looked
at when it is created, when a run it waits for ends, and when its
`dependency_timeout` passes; for each dependency D it is, in order:

- fed by a fresh success of D it is linked to, or else by D's latest fresh success;
- waiting for a run of D it is linked to that is still active, or else for D's
  newest active run;
- refused when the run it is linked to ended failed, timed out, cancelled or
  `upstream_failed` (the run ends `upstream_failed`) or skipped (it ends `skipped`),
  and when D is paused, since a paused job is not run on demand (`skipped`);
- otherwise D is *demanded*: a run of D with trigger `dependency` is created and
  linked, and D's own dependencies are resolved for it in a later pass.

When every dependency feeds it, the run is released to the queue. A success of D
also *pushes* each unscheduled, idle, enabled job that depends on D when it makes
all of that job's dependencies fresh.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from socmeth.errors import FieldError
from socmeth.models import RunState

K = TypeVar("K", bound=Hashable)

MAX_DEPENDENCIES = 100  # per job
# Runs one pass may create (demands and pushes). A pass is one write transaction;
# one success of a job that 5,000 others depend on must not hold the store for
# seconds. What a pass leaves goes back on the work list for the next one.
MAX_NEW_RUNS_PER_PASS = 200
_MAX_REASON = 1000

# The graph


def dependency_list_errors(name: str, depends_on: Sequence[str]) -> list[FieldError]:
    """Check a job's own list of dependencies: no self-reference, no repeats."""
    errors: list[FieldError] = []
    if name in depends_on:
        errors.append(
            FieldError(
                "depends_on",
                f"job {name} cannot depend on itself ({name} -> {name})",
            )
        )
    repeated = sorted({dep for dep in depends_on if depends_on.count(dep) > 1})
    if repeated:
        errors.append(
            FieldError("depends_on", f"lists {', '.join(repeated)} more than once")
        )
    if len(depends_on) > MAX_DEPENDENCIES:
        errors.append(
            FieldError(
                "depends_on",
                f"lists {len(depends_on)} jobs; a job may depend on at most "
                f"{MAX_DEPENDENCIES}",
            )
        )
    return errors


def find_cycle(
    upstream: Mapping[K, Sequence[K]], job: K, depends_on: Sequence[K]
) -> list[K] | None:
    """Return the cycle that giving `job` these dependencies would close.

    `upstream` maps jobs (names or ids) to the jobs they depend on, as stored; the
    job's own entry is replaced by `depends_on`. The cycle is returned from `job`
    back to it (`[a, b, a]`), or None when the graph stays acyclic.
    """
    graph: dict[K, Sequence[K]] = dict(upstream)
    graph[job] = list(depends_on)
    # Depth first from the job along its dependencies; the path is kept on a stack,
    # so that the cycle, once found, can be named in order.
    done: set[K] = set()
    path: list[K] = [job]
    stack = [iter(graph[job])]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            done.add(path.pop())
            continue
        if child == job:
            return [*path, job]
        if child in done or child in path:
            continue
        path.append(child)
        stack.append(iter(graph.get(child, ())))
    return None


def format_cycle(cycle: Sequence[str]) -> str:
    """Write a cycle as `a -> b -> a`."""
    return " -> ".join(cycle)


# What a pass sees


@dataclass(frozen=True)
class RunView:
    """A run as the resolver sees it."""

    id: int
    job_id: int
    state: RunState
    finished_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class JobView:
    """A job as the resolver sees it.

    `latest_success` is its succeeded run that finished last; `active_run_ids` its
    waiting, queued and running runs, oldest first. `consumed_at`: successes of its
    dependencies that finished at or before it have fed it already.
    """

    id: int
    name: str
    enabled: bool
    scheduled: bool
    depends_on: tuple[int, ...]
    consumed_at: datetime
    dependency_timeout: timedelta | None = None
    latest_success: RunView | None = None
    active_run_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class WaitingRun:
    """A waiting run to resolve, with the run of each dependency it is linked to.

    A link whose value is None points at a run that no longer exists (pruned).
    """

    run: RunView
    created_at: datetime
    links: Mapping[int, RunView | None] = field(default_factory=dict)
    give_up_at: datetime | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything one pass decides on.

    `jobs` holds the job of every waiting run and every job downstream of a success,
    and the dependencies of each; `downstream` maps the job of each success to the
    jobs that depend on it.
    """

    jobs: Mapping[int, JobView]
    waiting: Sequence[WaitingRun] = ()
    successes: Sequence[RunView] = ()
    downstream: Mapping[int, Sequence[int]] = field(default_factory=dict)


# What a pass does


@dataclass(frozen=True)
class DemandedRun:
    """A run of a dependency to create, with trigger `dependency`.

    `key` stands for its id within the plan (negative, so it never meets a stored
    id); `waiting` is true when the job has dependencies of its own.
    """

    key: int
    job_id: int
    needed_by_run_id: int
    waiting: bool
    give_up_at: datetime | None = None


@dataclass(frozen=True)
class Link:
    """Record that `run_id` waits for, or is fed by, `upstream_run_id` of `job_id`.

    Either id is a stored one or the key of a run the plan creates.
    """

    run_id: int
    job_id: int
    upstream_run_id: int


@dataclass(frozen=True)
class RunEnd:
    """End a waiting run without executing it."""

    run_id: int
    state: RunState
    reason: str


@dataclass(frozen=True)
class PushedRun:
    """A run of an unscheduled job whose dependencies all became fresh."""

    key: int
    job_id: int


@dataclass
class Plan:
    """The writes of one pass; `consumed` maps job ids to their new `consumed_at`.

    `leftover` names the runs the pass had no room for (waiting runs not resolved,
    successes whose dependents were not all pushed): they go back on the work list,
    and looking at them again is harmless.
    """

    demanded: list[DemandedRun] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    ended: list[RunEnd] = field(default_factory=list)
    pushed: list[PushedRun] = field(default_factory=list)
    consumed: dict[int, datetime] = field(default_factory=dict)
    leftover: list[int] = field(default_factory=list)

    @property
    def new_runs(self) -> int:
        return len(self.demanded) + len(self.pushed)

    @property
    def empty(self) -> bool:
        return not (
            self.demanded or self.links or self.released or self.ended or self.pushed
        )


def plan_dependencies(
    snapshot: Snapshot, now: datetime, max_new_runs: int = MAX_NEW_RUNS_PER_PASS
) -> Plan:
    """Decide, for one pass, what waiting runs and successes lead to.

    Once the plan creates `max_new_runs` runs, the rest of the snapshot is left
    for the next pass (`Plan.leftover`).
    """
    return _Planner(snapshot, now, max_new_runs).plan()


def give_up_at(timeout: timedelta | None, created_at: datetime) -> datetime | None:
    """Return when a waiting run created at `created_at` stops waiting, if ever."""
    return None if timeout is None else created_at + timeout


class _Planner:
    """Walk a snapshot once, keeping what the plan changed so far."""

    def __init__(self, snapshot: Snapshot, now: datetime, max_new_runs: int) -> None:
        self._max_new_runs = max_new_runs
        self._jobs = snapshot.jobs
        self._snapshot = snapshot
        self._now = now
        self._plan = Plan()
        self._consumed = {job.id: job.consumed_at for job in snapshot.jobs.values()}
        self._active = {
            job.id: list(job.active_run_ids) for job in snapshot.jobs.values()
        }
        self._next_key = -1

    def plan(self) -> Plan:
        for waiting in self._snapshot.waiting:
            if self._full:
                self._plan.leftover.append(waiting.run.id)
            else:
                self._resolve(waiting)
        for success in self._snapshot.successes:
            if self._full or not self._push_after(success):
                self._plan.leftover.append(success.id)
        return self._plan

    @property
    def _full(self) -> bool:
        return self._plan.new_runs >= self._max_new_runs

    # Waiting runs

    def _resolve(self, waiting: WaitingRun) -> None:
        run = waiting.run
        if run.state is not RunState.WAITING:
            return
        job = self._jobs[run.job_id]
        if waiting.give_up_at is not None and self._now >= waiting.give_up_at:
            self._end(run, RunState.SKIPPED, self._timeout_reason(job, waiting))
            return

        links: dict[int, int] = {}  # new links: dependency job id -> upstream run
        needed: list[int] = []
        waits = False
        feeding: list[RunView] = []
        for dep_id in job.depends_on:
            dep = self._jobs[dep_id]
            link = waiting.links.get(dep_id)
            if link is not None and link.state.is_active:
                waits = True  # still waiting for it; the link stands
                continue
            if link is not None and link.state is not RunState.SUCCEEDED:
                state = (
                    RunState.SKIPPED
                    if link.state is RunState.SKIPPED
                    else RunState.UPSTREAM_FAILED
                )
                self._end(run, state, _upstream_reason(dep, link))
                return
            if link is not None and self._fresh(link, job):
                feeding.append(link)
                continue
            # No usable link (none yet, its run is gone, or its success fed a
            # sibling run of this job since): find what serves instead.
            success = dep.latest_success
            if success is not None and self._fresh(success, job):
                links[dep_id] = success.id
                feeding.append(success)
            elif self._active[dep_id]:
                links[dep_id] = self._active[dep_id][-1]
                waits = True
            elif not dep.enabled:
                self._end(run, RunState.SKIPPED, _paused_reason(dep))
                return
            else:
                needed.append(dep_id)

        # Demands come last: a run that ends above must not have started any.
        for dep_id in needed:
            links[dep_id] = self._demand(self._jobs[dep_id], run.id)
            waits = True
        self._plan.links.extend(
            Link(run.id, dep_id, upstream_id) for dep_id, upstream_id in links.items()
        )
        if not waits:
            self._plan.released.append(run.id)
            self._consume(job, feeding)

    def _consume(self, job: JobView, feeding: Sequence[RunView]) -> None:
        """Mark the successes that fed a run of `job` as used.

        At `now` at the earliest, but never before one of them finished: a success
        recorded just after this pass read the clock must not feed the job again.
        """
        at = max([self._now, *(run.finished_at for run in feeding if run.finished_at)])
        self._consumed[job.id] = at
        self._plan.consumed[job.id] = at

    def _fresh(self, success: RunView, job: JobView) -> bool:
        finished = success.finished_at
        return finished is not None and finished > self._consumed[job.id]

    def _demand(self, dep: JobView, needed_by: int) -> int:
        key = self._key()
        waiting = bool(dep.depends_on)
        self._plan.demanded.append(
            DemandedRun(
                key=key,
                job_id=dep.id,
                needed_by_run_id=needed_by,
                waiting=waiting,
                give_up_at=(
                    give_up_at(dep.dependency_timeout, self._now) if waiting else None
                ),
            )
        )
        self._active[dep.id].append(key)
        return key

    def _end(self, run: RunView, state: RunState, reason: str) -> None:
        self._plan.ended.append(RunEnd(run.id, state, reason[:_MAX_REASON]))
        active = self._active.get(run.job_id, [])
        if run.id in active:
            active.remove(run.id)

    def _timeout_reason(self, job: JobView, waiting: WaitingRun) -> str:
        """Say how long the run waited and its bound, which the job's current
        `dependency_timeout` may no longer match (and which a pass may see late,
        after a restart)."""
        assert waiting.give_up_at is not None
        bound = (waiting.give_up_at - waiting.created_at).total_seconds()
        waited = (self._now - waiting.created_at).total_seconds()
        still = [
            self._jobs[dep_id].name
            for dep_id in job.depends_on
            if (link := waiting.links.get(dep_id)) is not None and link.state.is_active
        ]
        waited_for = f": still waiting for {', '.join(still)}" if still else ""
        return (
            f"gave up after waiting {_seconds(round(waited, 1))} s for dependencies "
            f"(dependency_timeout {_seconds(bound)} s){waited_for}"
        )

    def _key(self) -> int:
        key = self._next_key
        self._next_key -= 1
        return key

    # Pushes

    def _push_after(self, success: RunView) -> bool:
        """Push the dependents a success made ready; False if room ran out first."""
        for job_id in self._snapshot.downstream.get(success.job_id, ()):
            if self._full:
                return False
            job = self._jobs[job_id]
            if (
                job.scheduled
                or not job.enabled
                or not job.depends_on
                or self._active[job.id]
            ):
                continue
            feeding = [self._jobs[dep_id].latest_success for dep_id in job.depends_on]
            fresh = [run for run in feeding if run and self._fresh(run, job)]
            if len(fresh) == len(job.depends_on):
                key = self._key()
                self._plan.pushed.append(PushedRun(key, job.id))
                self._plan.links.extend(Link(key, run.job_id, run.id) for run in fresh)
                self._active[job.id].append(key)
                self._consume(job, fresh)
        return True


def _upstream_reason(dep: JobView, link: RunView) -> str:
    verb = "was skipped" if link.state is RunState.SKIPPED else "failed"
    reason = f"dependency {dep.name} {verb}: its run {link.id} ended {link.state}"
    if link.reason and link.state in (RunState.SKIPPED, RunState.UPSTREAM_FAILED):
        reason += f" ({link.reason})"
    return reason


def _paused_reason(dep: JobView) -> str:
    return (
        f"dependency {dep.name} is paused, and a paused job is not run on demand: "
        f"resume {dep.name} or run it by hand"
    )


def _seconds(value: float) -> str:
    """Write seconds as given: whole ones without a fraction."""
    return str(int(value)) if float(value).is_integer() else str(value)
