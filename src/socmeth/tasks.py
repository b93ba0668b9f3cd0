"""Stop the node's background loops the same way everywhere."""

from __future__ import annotations

import asyncio
from typing import Any

# How long one cancellation gets before it is sent again.
CANCEL_AGAIN_S = 0.1


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a loop's task and wait until it has ended; None is a no-op.

    The cancellation is sent again until the task ends: on Python 3.11
    `asyncio.wait_for` (which redis-py runs every command under) drops a
    cancellation that arrives as its inner call finishes, and a loop would then
    go on as if nothing had been asked.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_AGAIN_S)
    if not task.cancelled() and (failure := task.exception()) is not None:
        raise failure
