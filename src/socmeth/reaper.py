"""Settle what silent nodes left behind and publish again what the queue lost.

Leader duties, next to the scheduler and the pruner, run once a second:

- **reap**: a running attempt whose node has been silent for `DOWN_AFTER` (no
  heartbeat by the store's clock, a clean stop, or no node row at all) becomes
  `lost`, and the job's retry policy decides what follows, as for any other end. The
  finish is conditional on the node still being silent, in its own transaction, so a
  node that beats again in between keeps its attempt;
- **release**: the unacknowledged messages of queue consumers that are not live
  nodes (silent, stopped, or never seen) go back to every consumer. Asked of the
  queue on every pass, so a message a node took just before it fell silent is
  never left behind;
- **republish**: queued attempts the store holds but the queue does not (Redis
  restarted without its data, or a leader died between its commit and its
  publish) are published again: at the start of each leadership, once more when
  the grace has passed (for what the previous leader queued just before it died),
  then every `REPUBLISH_EVERY_S`. A second message of an attempt is harmless:
  workers claim in the store.

The reaper only reaps and releases after it has watched the store answer for
`DOWN_AFTER` itself, in passes no further apart than `WATCH_GAP`. Without that, a
new leader, one whose store just came back from a restart, or one whose machine
was suspended, would read every node's heartbeat as stale, since nobody could write
one meanwhile, and settle attempts that are still running. The leader's own
attempts are never reaped: its own workers, in this process, hold them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta

from socmeth.clock import Clock
from socmeth.cluster import DOWN_AFTER
from socmeth.errors import FencedError, StoreError
from socmeth.metrics import Metrics
from socmeth.models import AttemptState
from socmeth.queue.base import Queue, QueueError
from socmeth.retry import settle_attempt
from socmeth.store.base import AttemptFinish, Fence, Store
from socmeth.tasks import cancel_and_wait
from socmeth.worker import count_finished

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 1.0
REPUBLISH_EVERY_S = 5.0
# Attempts queued this recently are left alone: their publish may be on its way.
REPUBLISH_GRACE = timedelta(seconds=2)
REAP_BATCH = 500
# Passes further apart than this (by the store's clock) start the watch again.
WATCH_GAP = DOWN_AFTER
REPUBLISH_BATCH = 1000


class Reaper:
    """Keep the cluster's attempts owned: settle orphans, release and republish."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        clock: Clock,
        metrics: Metrics,
        rng: random.Random,
        node_id: str,
        wake_scheduler: Callable[[], None],
    ) -> None:
        self._store = store
        self._queue = queue
        self._clock = clock
        self._metrics = metrics
        self._rng = rng
        self._node_id = node_id
        self._wake_scheduler = wake_scheduler
        self._task: asyncio.Task[None] | None = None
        self._fence: Fence | None = None
        self._watching_since: datetime | None = None  # store instant
        self._last_pass_at: datetime | None = None  # store instant
        self._republish_due: float | None = None  # monotonic; None: now

    def start(self, fence: Fence | None = None) -> None:
        """Start the loop under this leadership; watching starts afresh."""
        self._fence = fence
        self._watching_since = None
        self._last_pass_at = None
        self._republish_due = None
        self._task = asyncio.create_task(self._loop(), name="reaper")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except FencedError as exc:
                log.warning("reaper stops: %s", exc, extra={"event": "reaper.fenced"})
                return
            except QueueError as exc:
                log.warning(
                    "releasing or republishing failed (%s); will retry",
                    exc,
                    extra={"event": "reaper.failed"},
                )
            except Exception as exc:
                # The store failed: heartbeats could not be written either, so
                # watching starts again once it answers.
                self._watching_since = None
                log.warning(
                    "reaping failed (%s); will retry",
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                    extra={"event": "reaper.failed"},
                )
            await self._clock.sleep(REAP_INTERVAL_S)

    async def pass_once(self) -> None:
        """Reap and release what went silent, and republish when it is time."""
        store_now = await self._store.store_now()
        last, self._last_pass_at = self._last_pass_at, store_now
        if self._watching_since is None or last is None or store_now - last > WATCH_GAP:
            # A first pass, or one after the loop was held up (a paused process, a
            # suspended machine): heartbeats may be stale for reasons that are not
            # the nodes', so watching starts again.
            self._watching_since = store_now
        if store_now - self._watching_since >= DOWN_AFTER:
            silent_since = store_now - DOWN_AFTER
            await self.reap(silent_since)
            await self.release(silent_since)
        monotonic = self._clock.monotonic()
        if self._republish_due is None or monotonic >= self._republish_due:
            await self.republish()
            wait = REPUBLISH_EVERY_S
            if self._republish_due is None:  # the first of this leadership
                wait = REPUBLISH_GRACE.total_seconds() + REAP_INTERVAL_S / 2
            self._republish_due = monotonic + wait

    async def reap(self, silent_since: datetime) -> int:
        """Settle as lost the running attempts of nodes silent since then."""
        total = 0
        while orphans := await self._store.orphaned_attempts(
            silent_since, REAP_BATCH, except_node=self._node_id
        ):
            now = self._clock.now()
            finishes = [
                AttemptFinish(
                    orphan.attempt.id,
                    settle_attempt(
                        orphan.job.definition,
                        orphan.attempt.number,
                        AttemptState.LOST,
                        now,
                        self._rng,
                        error=f"node {orphan.attempt.node_id} stopped answering "
                        "while it ran this attempt",
                    ),
                )
                for orphan in orphans
            ]
            finished = await self._store.finish_attempts(
                finishes, now, silent_since=silent_since, fence=self._fence
            )
            if count_finished(finished, self._metrics):
                self._wake_scheduler()
            for orphan, run in zip(orphans, finished.runs, strict=True):
                if run is None:
                    continue  # it ended, or its node beat again, meanwhile
                total += 1
                log.warning(
                    "attempt %s of run %s (job %s) lost: node %s stopped answering",
                    orphan.attempt.number,
                    orphan.run.id,
                    orphan.job.name,
                    orphan.attempt.node_id,
                    extra={
                        "event": "attempt.lost",
                        "run_id": orphan.run.id,
                        "node_id": orphan.attempt.node_id,
                    },
                )
            if len(orphans) < REAP_BATCH:
                break
        return total

    async def release(self, silent_since: datetime) -> None:
        """Return the queue messages held by consumers that are not live nodes."""
        holders = await self._queue.holders()
        if not holders - {self._node_id}:
            return
        _, records = await self._store.list_nodes()
        live = {
            record.id
            for record in records
            if record.stopped_at is None and record.last_heartbeat_at >= silent_since
        }
        for consumer in sorted(holders - live - {self._node_id}):
            await self._queue.release(consumer)

    async def republish(self) -> int:
        """Publish the store's queued attempts that the queue does not hold."""
        held = await self._queue.held()
        queued_before = self._clock.now() - REPUBLISH_GRACE
        missing = []
        after_id = 0
        while batch := await self._store.queued_attempts(
            REPUBLISH_BATCH, after_id, queued_before
        ):
            missing += [a for a in batch if a.attempt_id not in held]
            after_id = batch[-1].attempt_id
        if missing:
            await self._queue.publish(missing)
            log.warning(
                "published %s queued attempts again: the queue did not hold them",
                len(missing),
                extra={"event": "queue.republished", "count": len(missing)},
            )
        return len(missing)
