"""Carry out operators' changes to jobs and runs: the API's one way into the store.

Every change goes through here so that the rules hold whoever asks: next fires are
computed from the schedule, the scheduler is woken when a job's timing changed, the
attempt of a new run is published to the queue once the run is stored, manual
runs follow the job's concurrency policy, and each change leaves an audit record
naming who made it (`actor`; `ANONYMOUS` while auth is off).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import replace

from socmeth.auth import audit
from socmeth.auth.models import ANONYMOUS, AuditAction, Principal
from socmeth.clock import Clock
from socmeth.dependencies import dependency_list_errors
from socmeth.errors import (
    ChangedError,
    ConflictError,
    LimitError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from socmeth.fires import fire_run, next_fire_at
from socmeth.metrics import Metrics
from socmeth.models import Concurrency, Job, JobDefinition, Run, RunState, Trigger
from socmeth.queue.base import Queue, QueueError
from socmeth.store.base import DependencyGraph, QueuedAttempt, Store, fits_id

log = logging.getLogger(__name__)

# Reads a change re-applied to a job that changed meanwhile before giving up (409).
CHANGED_RETRIES = 5
PUBLISH_TIMEOUT_S = 2.0  # a manual run answers even while the queue hangs


class JobService:
    """Create, change, pause, run and delete jobs; cancel runs."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        clock: Clock,
        *,
        max_jobs: int,
        metrics: Metrics,
        wake_scheduler: Callable[[], None],
        stop_local: Callable[[Collection[int]], None],
    ) -> None:
        """Build the service.

        `wake_scheduler` makes the scheduler take a turn after a timing change;
        `stop_local` stops this node's attempts of the given runs at once, rather
        than at the worker's next check of the store.
        """
        self._store = store
        self._queue = queue
        self._clock = clock
        self._max_jobs = max_jobs
        self._metrics = metrics
        self._wake_scheduler = wake_scheduler
        self._stop_local = stop_local

    async def resolve(self, ref: str) -> Job:
        """Return the job a path names: an all-digit reference is an id, else a name.

        NotFoundError for an id no store can hold, as for any id not stored.
        """
        if ref.isascii() and ref.isdigit():
            if not fits_id(ref):
                shown = ref if len(ref) <= 30 else f"{ref[:20]}... ({len(ref)} digits)"
                raise NotFoundError(f"no job has id {shown}")
            return await self._store.get_job(int(ref))
        return await self._store.get_job_by_name(ref)

    async def create(
        self, definition: JobDefinition, actor: Principal = ANONYMOUS
    ) -> Job:
        """Store a new job with its first next fire."""
        _check_dependency_list(definition)
        counts = await self._store.count_jobs()
        if counts.enabled + counts.paused >= self._max_jobs:
            raise LimitError(
                f"the cluster already holds {self._max_jobs} jobs, the limit set by "
                "limits.max_jobs; delete jobs or raise the limit",
                field="name",
            )
        now = self._clock.now()
        job = await self._store.create_job(
            definition, next_fire_at(definition, now, now), now
        )
        log.info(
            "job %s created", job.name, extra={"event": "job.created", "job": job.name}
        )
        self._wake_scheduler()
        await self._audit(actor, AuditAction.JOB_CREATED, job, {"job_id": job.id})
        return job

    async def update(
        self, job: Job, definition: JobDefinition, actor: Principal = ANONYMOUS
    ) -> Job:
        """Replace a job's definition; the next fire is computed anew from now.

        A new name is written into the `depends_on` of the jobs that depend on it,
        in the same transaction. ChangedError when `job` is no longer the stored
        one: the definition was made from a stale read.
        """
        if definition.name != job.name:
            await self._refuse_taken_name(definition.name)
        _check_dependency_list(definition)
        now = self._clock.now()
        fire_at = next_fire_at(definition, job.created_at, now)
        updated = await self._store.update_job(
            job.id, definition, fire_at, now, read_at=job.updated_at
        )
        log.info(
            "job %s updated",
            updated.name,
            extra={"event": "job.updated", "job": updated.name},
        )
        self._wake_scheduler()
        changed = changed_fields(job.definition, definition)
        detail = {"job_id": job.id, "fields": changed}
        if definition.name != job.name:
            detail["renamed_from"] = job.name
        await self._audit(actor, AuditAction.JOB_UPDATED, updated, detail)
        return updated

    async def _refuse_taken_name(self, name: str) -> None:
        """Refuse a rename to a taken name first, as the conflict it is: its
        `depends_on` naming that job would read as a self-reference. The store
        refuses it again in the transaction, whatever happens meanwhile."""
        try:
            await self._store.get_job_by_name(name)
        except NotFoundError:
            return
        raise ConflictError(
            f"a job named {name!r} already exists: choose another name", field="name"
        )

    async def set_enabled(
        self, job: Job, enabled: bool, actor: Principal = ANONYMOUS
    ) -> Job:
        """Pause or resume a job; a resumed job next fires after now, not before.

        Made from the job as stored: a change of it meanwhile (a rename of one of
        its dependencies rewrites it) is read again, never overwritten.
        """
        for _ in range(CHANGED_RETRIES):
            if job.definition.enabled == enabled:
                return job
            definition = replace(job.definition, enabled=enabled)
            now = self._clock.now()
            fire_at = next_fire_at(definition, job.created_at, now)
            try:
                updated = await self._store.update_job(
                    job.id, definition, fire_at, now, read_at=job.updated_at
                )
                break
            except ChangedError:
                job = await self._store.get_job(job.id)
        else:
            raise ChangedError(
                f"job {job.name} kept changing while it was paused or resumed; "
                "try again"
            )
        event = "job.resumed" if enabled else "job.paused"
        log.info("job %s %s", job.name, event[4:], extra={"event": event})
        self._wake_scheduler()
        await self._audit(actor, AuditAction(event), updated, {"job_id": job.id})
        return updated

    async def delete(self, job: Job, actor: Principal = ANONYMOUS) -> None:
        """Delete a job and its history in one transaction.

        Refused (409) while other jobs depend on it. A running attempt of the job is
        stopped by its worker, which finds the attempt gone from the store
        (`Store.cancel_requested`).
        """
        active = (await self._store.active_runs([job.id]))[job.id]
        await self._store.delete_job(job.id)
        self._stop_local([run.id for run in active])
        self._metrics.forget_job(job.name)
        log.info("job %s deleted", job.name, extra={"event": "job.deleted"})
        await self._audit(actor, AuditAction.JOB_DELETED, job, {"job_id": job.id})

    async def run_now(self, job: Job, actor: Principal = ANONYMOUS) -> Run:
        """Create a manual run and queue its first attempt.

        Under `concurrency: forbid` a job with an active run refuses (409) rather than
        piling up; under `replace` the active runs are cancelled. The store applies
        the policy in the run's own transaction, so concurrent requests cannot race.
        A job with dependencies gets a waiting run, which the scheduler resolves.
        """
        replaced: list[Run] = []
        if job.definition.concurrency is Concurrency.REPLACE:
            replaced = (await self._store.active_runs([job.id]))[job.id]
        now = self._clock.now()
        run = await self._store.create_run(
            fire_run(job.definition, job.id, None, False, now, Trigger.MANUAL),
            now,
            concurrency=job.definition.concurrency,
        )
        self._stop_local([old.id for old in replaced])
        await self.publish(run)
        if run.state is RunState.WAITING or replaced:
            self._wake_scheduler()
        log.info(
            "run %s of job %s created by hand",
            run.id,
            job.name,
            extra={"event": "run.created", "run_id": run.id, "trigger": "manual"},
        )
        await self._audit(actor, AuditAction.JOB_RUN, job, {"run_id": run.id})
        return run

    async def cancel(self, run_id: int, actor: Principal = ANONYMOUS) -> Run:
        """Cancel a run; a running attempt is stopped by its worker within a second."""
        run = await self._store.cancel_run(
            run_id, "cancelled by request", self._clock.now()
        )
        self._stop_local([run_id])
        if run.state is RunState.CANCELLED and run.finished_at is not None:
            self._metrics.runs_ended.labels(job=run.job_name, state=run.state).inc()
            self._wake_scheduler()  # runs waiting on it end upstream_failed
        log.info(
            "run %s cancel requested",
            run_id,
            extra={"event": "run.cancel_requested", "run_id": run_id},
        )
        await self._audit(
            actor, AuditAction.RUN_CANCELLED, run.job_name, {"run_id": run_id}
        )
        return run

    async def _audit(
        self,
        actor: Principal,
        action: AuditAction,
        target: Job | str,
        detail: dict[str, object],
    ) -> None:
        """Record who made a change that is done already.

        A store that fails now does not undo the change, nor fail the request that
        made it: the failure is logged as an error naming what went unrecorded.
        """
        name = target.name if isinstance(target, Job) else target
        try:
            await audit.record(
                self._store, actor, action, name, detail, self._clock.now()
            )
        except StoreError as exc:
            log.error(
                "%s by %s on %s is done but not in the audit records: %s",
                action,
                actor.actor,
                name,
                exc,
                extra={"event": "audit.write_failed"},
            )

    async def dependencies(self, job: Job, limit: int) -> DependencyGraph:
        """Return the jobs upstream and downstream of a job, with their latest runs."""
        return await self._store.dependency_graph(job.id, limit)

    async def publish(self, run: Run) -> None:
        """Put the run's queued attempt, if any, on the queue."""
        attempt = run.last_attempt
        if attempt is None or attempt.state != "queued":
            return
        try:
            # Bounded: a queue that hangs must not hold the API's answer, which would
            # read as a failure to a client that then asks again.
            await asyncio.wait_for(
                self._queue.publish(
                    [QueuedAttempt(attempt.id, run.id, attempt.number)]
                ),
                PUBLISH_TIMEOUT_S,
            )
        except (QueueError, TimeoutError) as exc:
            # The run is stored, which is what counts: the leader's reaper publishes
            # queued attempts the queue does not hold once it answers again.
            log.warning(
                "run %s is queued, but its message was not published: %s; it is "
                "published again once the queue answers",
                run.id,
                str(exc) or f"no answer within {PUBLISH_TIMEOUT_S}s",
                extra={"event": "run.publish_failed", "run_id": run.id},
            )


def changed_fields(before: JobDefinition, after: JobDefinition) -> list[str]:
    """Name the fields a change of a job's definition changed (never their values,
    which may be secrets)."""
    return [
        name
        for name in before.__dataclass_fields__
        if getattr(before, name) != getattr(after, name)
    ]


def _check_dependency_list(definition: JobDefinition) -> None:
    """Refuse self-references and repeats; the store checks names and cycles."""
    errors = dependency_list_errors(definition.name, definition.depends_on)
    if errors:
        raise ValidationError(errors)
