"""Define the queue: how queued attempts reach the workers of every node.

The store is the truth and the queue only carries references to queued attempts. A
message may be delivered more than once (a redelivery after a consumer died, a
re-publish after the queue lost data); workers make that harmless by claiming the
attempt in the store before executing it. A message is acknowledged once its attempt
ended or turned out not to be claimable.

Messages carry a version; a reader that meets a newer one refuses it and says why.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from socmeth.store.base import QueuedAttempt

MESSAGE_VERSION = 1


class MessageVersionError(ValueError):
    """Refuse a queue message written by a newer socmeth."""


@dataclass(frozen=True)
class Delivery:
    """Hand one message to a consumer; `token` identifies it for the acknowledgement."""

    attempt: QueuedAttempt
    token: str


class Queue(ABC):
    """Carry queued attempts to workers, at least once.

    Contract: `publish` returns once the messages are durable in the queue (for the
    in-process queue: in memory); `receive` blocks up to `timeout_s` for at least one
    message and returns at most `max_count`; a received message that is never
    acknowledged is delivered again to some consumer after its consumer is gone;
    `size` counts messages published and not yet received.
    """

    @abstractmethod
    async def publish(self, attempts: Sequence[QueuedAttempt]) -> None:
        """Add messages for these attempts."""

    @abstractmethod
    async def receive(
        self, consumer: str, max_count: int, timeout_s: float
    ) -> list[Delivery]:
        """Take up to `max_count` messages, waiting up to `timeout_s` for the first."""

    @abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge handled messages so they are never delivered again."""

    @abstractmethod
    async def size(self) -> int:
        """Count messages waiting for a consumer."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; pending messages stay for the next consumer."""


def encode_message(attempt: QueuedAttempt) -> str:
    """Serialize a message, version first."""
    return json.dumps(
        {
            "version": MESSAGE_VERSION,
            "attempt_id": attempt.attempt_id,
            "run_id": attempt.run_id,
            "number": attempt.number,
        }
    )


def decode_message(text: str) -> QueuedAttempt:
    """Parse a message; MessageVersionError when a newer socmeth wrote it."""
    data = json.loads(text)
    version = data.get("version")
    if not isinstance(version, int) or version > MESSAGE_VERSION:
        raise MessageVersionError(
            f"queue message version {version!r} is newer than this node understands "
            f"({MESSAGE_VERSION}); upgrade this node"
        )
    return QueuedAttempt(
        attempt_id=int(data["attempt_id"]),
        run_id=int(data["run_id"]),
        number=int(data["number"]),
    )
