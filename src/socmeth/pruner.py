"""Delete runs older than `history.retention_days`, in small batches, in the background.

Small batches keep each transaction short, so pruning a large backlog never holds the
store's write lock long enough to delay fires. Nodes silent for a day are forgotten
too, unless the store still has attempts of theirs running.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from socmeth.clock import Clock
from socmeth.errors import FencedError, StoreError
from socmeth.store.base import Fence, Store
from socmeth.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PRUNE_BATCH = 500
PRUNE_INTERVAL_S = 60.0
# A node silent this long is forgotten: it left the cluster (a replaced machine, a
# pod's old name), and the nodes list would otherwise grow with every one.
FORGET_NODES_AFTER = timedelta(days=1)


class Pruner:
    """Keep history within its retention."""

    def __init__(self, store: Store, clock: Clock, retention_days: int) -> None:
        self._store = store
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self._task: asyncio.Task[None] | None = None
        self._fence: Fence | None = None

    def start(self, fence: Fence | None = None) -> None:
        """Start pruning, each deletion fenced by the leadership it runs under."""
        self._fence = fence
        self._task = asyncio.create_task(self._loop(), name="pruner")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def prune(self) -> int:
        """Delete every run past retention, batch by batch; return how many."""
        cutoff = self._clock.now() - self._retention
        total = 0
        while deleted := await self._store.prune_runs(
            cutoff, PRUNE_BATCH, fence=self._fence
        ):
            total += deleted
            await asyncio.sleep(0)  # let fires and attempts through between batches
        forgotten = await self._store.forget_nodes(
            self._clock.now() - FORGET_NODES_AFTER, fence=self._fence
        )
        if forgotten:
            log.info(
                "forgot %s nodes silent for over %s",
                forgotten,
                FORGET_NODES_AFTER,
                extra={"event": "nodes.forgotten", "count": forgotten},
            )
        if total:
            log.info(
                "pruned %s runs that ended before %s",
                total,
                cutoff.isoformat(),
                extra={"event": "history.pruned", "count": total},
            )
        return total

    async def _loop(self) -> None:
        while True:
            try:
                await self.prune()
            except asyncio.CancelledError:
                raise
            except FencedError as exc:
                log.warning("pruner stops: %s", exc, extra={"event": "pruner.fenced"})
                return
            except Exception as exc:
                log.warning(
                    "pruning history failed (%s); will retry",
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                    extra={"event": "history.prune_failed"},
                )
            await self._clock.sleep(PRUNE_INTERVAL_S)
