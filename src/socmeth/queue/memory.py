"""Implement the queue in process memory, for embedded mode and for tests."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence

from socmeth.queue.base import Delivery, Queue
from socmeth.store.base import QueuedAttempt


class MemoryQueue(Queue):
    """Keep messages in a deque; unacknowledged ones return when their consumer leaves.

    Messages for an attempt already waiting are not added twice, so re-publishing the
    store's queued attempts at start costs nothing.
    """

    def __init__(self) -> None:
        self._waiting: deque[QueuedAttempt] = deque()
        self._waiting_ids: set[int] = set()
        self._pending: dict[str, tuple[str, QueuedAttempt]] = {}
        self._tokens = itertools.count(1)
        self._arrived = asyncio.Event()

    async def publish(self, attempts: Sequence[QueuedAttempt]) -> None:
        for attempt in attempts:
            if attempt.attempt_id in self._waiting_ids:
                continue
            self._waiting.append(attempt)
            self._waiting_ids.add(attempt.attempt_id)
        if self._waiting:
            self._arrived.set()

    async def receive(
        self, consumer: str, max_count: int, timeout_s: float
    ) -> list[Delivery]:
        if not self._waiting:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout_s)
            except TimeoutError:
                return []
        deliveries: list[Delivery] = []
        while self._waiting and len(deliveries) < max_count:
            attempt = self._waiting.popleft()
            self._waiting_ids.discard(attempt.attempt_id)
            token = str(next(self._tokens))
            self._pending[token] = (consumer, attempt)
            deliveries.append(Delivery(attempt, token))
        return deliveries

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            self._pending.pop(delivery.token, None)

    async def release(self, consumer: str) -> None:
        """Return a departed consumer's unacknowledged messages to the front."""
        tokens = [t for t, (c, _) in self._pending.items() if c == consumer]
        returned = [self._pending.pop(t)[1] for t in tokens]
        for attempt in reversed(returned):
            if attempt.attempt_id in self._waiting_ids:
                continue  # re-published meanwhile: one waiting message is enough
            self._waiting.appendleft(attempt)
            self._waiting_ids.add(attempt.attempt_id)
        if returned:
            self._arrived.set()

    async def holders(self) -> set[str]:
        return {consumer for consumer, _ in self._pending.values()}

    async def held(self) -> set[int]:
        pending = {attempt.attempt_id for _, attempt in self._pending.values()}
        return self._waiting_ids | pending

    async def size(self) -> int:
        return len(self._waiting)

    async def close(self) -> None:
        self._arrived.set()
