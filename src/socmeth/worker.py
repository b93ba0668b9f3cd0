"""Execute queued attempts on this node, `workers.count` at a time.

The pool has three loops:

- the receiver takes messages from the queue while a slot is free and claims their
  attempts in the store; a worker executes an attempt only after its claim moved the
  row from `queued` to `running`, so a redelivered message never runs twice;
- the finisher writes ended attempts to the store in batches (one transaction for all
  that ended together), so a thousand short attempts do not cost a thousand commits;
- the watcher, once a second, saves the output tails that grew (the live output) and
  stops attempts whose run was cancelled.

Claims and finishes take turns on one lock, and each gathers its batch only once it
has the turn: what ended, or freed a slot, during the other's transaction joins the
next one. Store writes are serialised anyway (SQLite has one writer), so a batch fixed
before waiting for the store only makes more, smaller transactions: 1,000 `true` jobs
due at once took 58 claims and 60 finishes without turns, 23 and 45 with them
(`bench/scale.py`).

On stop no new attempt is claimed; running ones get a grace period, then are killed
and recorded `lost`, which the retry policy follows.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from socmeth.clock import Clock
from socmeth.config import Config
from socmeth.errors import StoreError
from socmeth.executors import ExecutionContext, Executors, OutputTail
from socmeth.executors.base import ExecutionResult
from socmeth.executors.procs import kill_attempt_processes
from socmeth.metrics import Metrics
from socmeth.models import AttemptState, Run, RunState
from socmeth.queue.base import Delivery, Queue, QueueError
from socmeth.retry import settle_attempt
from socmeth.store.base import (
    AttemptFinish,
    AttemptOutcome,
    ClaimedAttempt,
    FinishedAttempts,
    Store,
)
from socmeth.tasks import cancel_and_wait

log = logging.getLogger(__name__)

RECEIVE_TIMEOUT_S = 1.0
WATCH_INTERVAL_S = 1.0
DEFER_DELAY_S = 0.25  # wait before claiming again when the cluster is at capacity
CLAIM_RETRY_S = 1.0  # wait before claiming again after the store failed
RECEIVE_BACKOFF_S = (1.0, 2.0, 5.0)  # waits after the queue or the store failed
FINISH_BATCH = 500
REPUBLISH_BATCH = 1000


# An ended attempt on its way to the store, and where its settled run is told (None:
# the store no longer had the attempt running).
_Finish = tuple[AttemptFinish, "asyncio.Future[Run | None]"]


@dataclass
class _Running:
    """Track one attempt this node executes."""

    claimed: ClaimedAttempt
    delivery: Delivery
    output: OutputTail
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    lost: bool = False  # killed by shutdown: recorded as lost whatever it returned
    # A new tail (version 0) is empty, which reads the same as no stored tail: the
    # watcher saves it only once something was appended.
    saved_version: int = 0


class WorkerPool:
    """Receive, claim, execute and record attempts for one node."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        clock: Clock,
        metrics: Metrics,
        executors: Executors,
        *,
        node_id: str,
        config: Config,
        rng: random.Random,
        wake_scheduler: Callable[[], None],
    ) -> None:
        self._store = store
        self._queue = queue
        self._clock = clock
        self._metrics = metrics
        self._executors = executors
        self._node_id = node_id
        self._config = config
        self._rng = rng
        self._wake_scheduler = wake_scheduler
        self._running: dict[int, _Running] = {}
        self._slot_freed = asyncio.Event()
        self._store_turn = asyncio.Lock()  # claims and finishes take turns
        self._finishes: asyncio.Queue[_Finish] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._executions: set[asyncio.Task[None]] = set()
        self._receiving = False
        self._claiming = False  # the receiver is between a claim and its starts

    @property
    def running(self) -> bool:
        return self._receiving and all(not t.done() for t in self._tasks)

    @property
    def active_count(self) -> int:
        return len(self._running)

    def stop_local(self, run_ids: Collection[int]) -> None:
        """Stop this node's attempts of these runs now, without waiting for a check."""
        wanted = set(run_ids)
        for entry in self._running.values():
            if entry.claimed.run.id in wanted:
                entry.cancel.set()

    def live_output(self, attempt_id: int) -> OutputTail | None:
        """Return the output tail of an attempt this node runs right now."""
        entry = self._running.get(attempt_id)
        return entry.output if entry else None

    async def recover(self, *, clustered: bool = False) -> None:
        """Settle attempts a crash left running, before this node receives any.

        In embedded mode this node is the only one, so every running attempt in the
        store belonged to a process that is gone, and the queue (in memory) lost
        every message: the store's queued attempts are published again. In cluster
        mode only this node id's attempts are settled (a node restarted under its
        id), and its previous life's pending messages go back to the queue; the
        leader's reaper settles other nodes' and republishes what the queue lost.

        Each settled attempt becomes `lost` and the retry policy decides what
        follows. Commands such an attempt left running on this machine are
        killed, so that a retry never runs beside them.
        """
        now = self._clock.now()
        orphans = await self._store.running_attempts(
            self._node_id if clustered else None
        )
        finishes = []
        for orphan in orphans:
            outcome = settle_attempt(
                orphan.job.definition,
                orphan.attempt.number,
                AttemptState.LOST,
                now,
                self._rng,
                error=f"node {orphan.attempt.node_id} stopped before this attempt "
                "ended, and settled it when it started again",
            )
            finishes.append(AttemptFinish(orphan.attempt.id, outcome))
            log.warning(
                "attempt %s of run %s lost: its node stopped",
                orphan.attempt.number,
                orphan.run.id,
                extra={"event": "attempt.lost", "run_id": orphan.run.id},
            )
        if finishes:
            count_finished(
                await self._store.finish_attempts(finishes, now), self._metrics
            )
            await self._kill_leftovers([(o.run.id, o.attempt.number) for o in orphans])
        if clustered:
            await self._queue.release(self._node_id)
        else:
            await self._republish_queued()

    async def _kill_leftovers(self, attempts: list[tuple[int, int]]) -> None:
        """Kill processes a crashed life of this node left running for lost attempts.

        A lost attempt may be retried; its old process must not run on beside it.
        """
        killed = await asyncio.to_thread(
            kill_attempt_processes, attempts, self._executors.store_id
        )
        if killed:
            log.warning(
                "killed %s processes left running by lost attempts",
                len(killed),
                extra={"event": "attempt.leftovers_killed", "count": len(killed)},
            )

    async def _republish_queued(self) -> None:
        after_id = 0
        while batch := await self._store.queued_attempts(REPUBLISH_BATCH, after_id):
            await self._queue.publish(batch)
            after_id = batch[-1].attempt_id

    def start(self) -> None:
        """Start the receiver, finisher and watcher loops."""
        self._receiving = True
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name="worker-receive"),
            asyncio.create_task(self._finish_loop(), name="worker-finish"),
            asyncio.create_task(self._watch_loop(), name="worker-watch"),
        ]

    async def stop(self, grace_s: float) -> None:
        """Stop claiming, wait `grace_s` for running attempts, then kill the rest."""
        await self._stop_receiving()
        if self._executions:
            await asyncio.wait(set(self._executions), timeout=grace_s)
        for entry in self._running.values():
            entry.lost = True
            entry.cancel.set()
        if self._executions:
            await asyncio.wait(set(self._executions))
        await self._finishes.join()
        for task in self._tasks[1:]:
            await cancel_and_wait(task)
        self._tasks = []

    async def _stop_receiving(self) -> None:
        """End the receiver, but never between a claim's commit and its starts.

        Cancelled there, the claimed attempts would stay `running` with nothing
        executing them until the next start; anywhere else the receiver only waits
        for messages, which the store still holds as queued.
        """
        self._receiving = False
        while self._claiming:
            await asyncio.sleep(0.01)
        await cancel_and_wait(self._tasks[0] if self._tasks else None)

    # The receiver

    async def _receive_loop(self) -> None:
        deferred: list[Delivery] = []
        failures = 0
        while self._receiving:
            free = self._config.workers.count - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                deferred = await self._receive_and_claim(deferred, free)
            except asyncio.CancelledError:
                raise
            except (QueueError, StoreError) as exc:
                # An outage: one line, without a traceback, backing off.
                delay = RECEIVE_BACKOFF_S[min(failures, len(RECEIVE_BACKOFF_S) - 1)]
                failures += 1
                log.warning(
                    "receiving attempts failed (%s); retrying in %ss",
                    exc,
                    delay,
                    extra={"event": "worker.receive_failed"},
                )
                await self._clock.sleep(delay)
            except Exception:
                failures += 1
                log.exception(
                    "receiving attempts failed; retrying",
                    extra={"event": "worker.receive_failed"},
                )
                await self._clock.sleep(1.0)
            else:
                if failures:
                    log.info(
                        "receiving attempts again",
                        extra={"event": "worker.receive_recovered"},
                    )
                failures = 0

    async def _receive_and_claim(
        self, deferred: list[Delivery], free: int
    ) -> list[Delivery]:
        """Claim deferred deliveries first, then new ones; return those deferred."""
        deliveries = deferred[:free]
        rest = deferred[free:]
        if len(deliveries) < free and not rest:
            deliveries += await self._queue.receive(
                self._node_id,
                free - len(deliveries),
                DEFER_DELAY_S if deliveries else RECEIVE_TIMEOUT_S,
            )
        if not deliveries:
            return rest
        self._claiming = True
        try:
            kept, pause_s = await self._claim(deliveries, top_up=not rest)
        finally:
            self._claiming = False
        if pause_s:
            await self._clock.sleep(pause_s)
        return kept + rest

    async def _claim(
        self, deliveries: list[Delivery], *, top_up: bool
    ) -> tuple[list[Delivery], float]:
        """Claim and start what the store gives; return what to keep, and a pause."""
        async with self._store_turn:
            if top_up:  # older deferred deliveries go first
                deliveries += await self._top_up(len(deliveries))
            by_id: dict[int, Delivery] = {}
            repeats: list[Delivery] = []  # a second message of an attempt held
            for delivery in deliveries:
                if delivery.attempt.attempt_id in by_id:
                    repeats.append(delivery)
                else:
                    by_id[delivery.attempt.attempt_id] = delivery
            await self._queue.ack(repeats)
            deliveries = list(by_id.values())
            now = self._clock.now()
            try:
                batch = await self._store.claim_attempts(
                    list(by_id),
                    self._node_id,
                    now,
                    self._config.scheduler.max_concurrent_jobs,
                )
            except Exception as exc:
                # The claim's transaction rolled back: the attempts are still queued
                # and these deliveries are their only messages, so keep them.
                log.warning(
                    "claiming %s attempts failed (%s); will retry",
                    len(deliveries),
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                    extra={"event": "worker.claim_failed"},
                )
                return deliveries, CLAIM_RETRY_S
        for claimed in batch.claimed:
            self._begin(claimed, by_id.pop(claimed.attempt.id), now)
        still_deferred = [by_id.pop(i) for i in batch.deferred if i in by_id]
        await self._queue.ack(list(by_id.values()))  # not claimable: drop
        return still_deferred, DEFER_DELAY_S if still_deferred else 0.0

    async def _top_up(self, holding: int) -> list[Delivery]:
        """Receive, without waiting, for the slots that freed while we waited."""
        more = self._config.workers.count - len(self._running) - holding
        if more <= 0:
            return []
        return await self._queue.receive(self._node_id, more, 0)

    def _begin(
        self, claimed: ClaimedAttempt, delivery: Delivery, now: datetime
    ) -> None:
        run = claimed.run
        if claimed.attempt.number == 1 and run.scheduled_at is not None:
            lateness = (now - run.scheduled_at).total_seconds()
            self._metrics.schedule_lateness.observe(max(0.0, lateness))
        entry = _Running(
            claimed, delivery, OutputTail(self._config.limits.output_bytes)
        )
        self._running[claimed.attempt.id] = entry
        task = asyncio.create_task(self._execute(entry), name=f"attempt-{run.id}")
        self._executions.add(task)
        task.add_done_callback(self._executions.discard)
        log.info(
            "attempt %s of run %s (job %s) started",
            claimed.attempt.number,
            run.id,
            claimed.job.name,
            extra={"event": "attempt.started", "run_id": run.id},
        )

    # One attempt

    async def _execute(self, entry: _Running) -> None:
        claimed = entry.claimed
        started = self._clock.monotonic()
        try:
            executor = self._executors.for_type(claimed.job.definition.type)
            result = await executor.execute(
                self._context(claimed), entry.output, entry.cancel
            )
        except Exception as exc:  # a bug of ours must not leave the run active
            log.exception(
                "executing run %s failed inside socmeth",
                claimed.run.id,
                extra={"event": "attempt.internal_error", "run_id": claimed.run.id},
            )
            result = ExecutionResult(AttemptState.FAILED, error=f"socmeth error: {exc}")
        state, error = result.state, result.error
        if entry.lost:
            state, error = (
                AttemptState.LOST,
                "the node stopped before the attempt ended",
            )
        duration = self._clock.monotonic() - started
        self._metrics.attempt_duration.labels(
            type=claimed.job.definition.type.value, state=state.value
        ).observe(duration)
        await self._record(entry, result, state, error)

    def _context(self, claimed: ClaimedAttempt) -> ExecutionContext:
        job = claimed.job
        cap = timedelta(seconds=self._config.scheduler.max_job_timeout)
        previous = claimed.previous_run
        return ExecutionContext(
            job=job,
            run_id=claimed.run.id,
            attempt=claimed.attempt.number,
            trigger=claimed.run.trigger,
            scheduled_at=claimed.run.scheduled_at,
            previous_state=previous.state if previous else None,
            previous_run_id=previous.id if previous else None,
            timeout=min(job.definition.timeout, cap),
            kill_grace=timedelta(seconds=self._config.scheduler.kill_grace),
        )

    async def _record(
        self,
        entry: _Running,
        result: ExecutionResult,
        state: AttemptState,
        error: str | None,
    ) -> None:
        claimed = entry.claimed
        outcome = settle_attempt(
            claimed.job.definition,
            claimed.attempt.number,
            state,
            self._clock.now(),
            self._rng,
            exit_code=result.exit_code,
            http_status=result.http_status,
            error=error,
        )
        finish = AttemptFinish(
            claimed.attempt.id,
            outcome,
            entry.output.text(),
            entry.output.truncated,
        )
        done: asyncio.Future[Run | None] = asyncio.get_running_loop().create_future()
        await self._finishes.put((finish, done))
        try:
            settled = await done
        finally:
            del self._running[claimed.attempt.id]
            self._slot_freed.set()
        try:
            await self._queue.ack([entry.delivery])
        except QueueError as exc:
            # The attempt is recorded, so its message only finds nothing to claim
            # if it is delivered again (after a release); the slot is free anyway.
            log.warning(
                "acknowledging the message of run %s failed (%s)",
                claimed.run.id,
                exc,
                extra={"event": "worker.ack_failed", "run_id": claimed.run.id},
            )
        if settled is None:
            # The store no longer had it running: the leader took this node for gone
            # (it was paused or cut off) and settled the attempt as lost.
            log.warning(
                "attempt %s of run %s (job %s) ended %s here, but it had been settled "
                "as lost already (this node was silent); its result is dropped",
                claimed.attempt.number,
                claimed.run.id,
                claimed.job.name,
                outcome.state,
                extra={"event": "attempt.result_dropped", "run_id": claimed.run.id},
            )
            return
        self._log_end(claimed, outcome)

    def _log_end(self, claimed: ClaimedAttempt, outcome: AttemptOutcome) -> None:
        run = claimed.run
        number = claimed.attempt.number
        extra = {"event": "attempt.ended", "run_id": run.id, "state": outcome.state}
        if outcome.state is AttemptState.SUCCEEDED:
            log.info(
                "attempt %s of run %s (job %s) succeeded",
                number,
                run.id,
                claimed.job.name,
                extra=extra,
            )
            return
        next_attempt_at = outcome.next_attempt_at
        log.warning(
            "attempt %s of run %s (job %s) ended %s: %s%s",
            number,
            run.id,
            claimed.job.name,
            outcome.state,
            outcome.error or "-",
            f"; retry at {next_attempt_at.isoformat()}" if next_attempt_at else "",
            extra=extra,
        )

    # The finisher

    async def _finish_loop(self) -> None:
        while True:
            first = await self._finishes.get()
            batch = [first]
            try:
                async with self._store_turn:
                    while len(batch) < FINISH_BATCH and not self._finishes.empty():
                        batch.append(self._finishes.get_nowait())
                    await self._write_finishes(batch)
            finally:
                for _ in batch:
                    self._finishes.task_done()

    async def _write_finishes(self, batch: list[_Finish]) -> None:
        delay = 0.5
        while True:
            try:
                finished = await self._store.finish_attempts(
                    [finish for finish, _ in batch], self._clock.now()
                )
                break
            except Exception as exc:
                # The attempts ended; losing their result would leave runs active
                # with no owner, so keep trying until the store answers.
                log.warning(
                    "recording %s ended attempts failed (%s); retrying in %ss",
                    len(batch),
                    exc,
                    delay,
                    exc_info=not isinstance(exc, StoreError),
                    extra={"event": "worker.finish_failed"},
                )
                await self._clock.sleep(delay)
                delay = min(delay * 2, 10.0)
        if count_finished(finished, self._metrics):
            self._wake_scheduler()
        for (_, done), run in zip(batch, finished.runs, strict=True):
            if not done.done():
                done.set_result(run)

    # The watcher

    async def _watch_loop(self) -> None:
        while True:
            await self._clock.sleep(WATCH_INTERVAL_S)
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "saving live output or checking cancels failed (%s); will retry",
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                    extra={"event": "worker.watch_failed"},
                )

    async def _watch_once(self) -> None:
        entries = list(self._running.values())
        if not entries:
            return
        changed = [e for e in entries if e.output.version != e.saved_version]
        if changed:
            await self._store.save_outputs(
                [
                    (e.claimed.attempt.id, e.output.text(), e.output.truncated)
                    for e in changed
                ]
            )
            for entry in changed:
                entry.saved_version = entry.output.version
        ids = [e.claimed.attempt.id for e in entries]
        for attempt_id in await self._store.cancel_requested(ids):
            stopping = self._running.get(attempt_id)
            if stopping is not None and not stopping.cancel.is_set():
                stopping.cancel.set()


def count_finished(finished: FinishedAttempts, metrics: Metrics) -> bool:
    """Count the runs these finishes ended; tell whether the scheduler has work:
    a pending retry, or runs that wait on one that ended."""
    wake = finished.dependency_work
    for run in finished.runs:
        if run is None:
            continue
        if run.state is RunState.QUEUED:
            wake = True
        elif not run.state.is_active:
            metrics.runs_ended.labels(job=run.job_name, state=run.state).inc()
    return wake
