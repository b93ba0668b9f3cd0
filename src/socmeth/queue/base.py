"""Define the queue: how queued attempts reach the workers of every node.

The store is the truth and the queue only carries references to queued attempts. A
message may be delivered more than once (a redelivery after a consumer died, a
re-publish after the queue lost data); workers make that harmless by claiming the
attempt in the store before executing it. A message is acknowledged once its attempt
ended or turned out not to be claimable.

Messages carry a version; a reader that meets a newer one refuses it and says why.

    SocmethError
    └── QueueError           the queue failed or cannot be reached
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from socmeth.errors import SocmethError
from socmeth.store.base import QueuedAttempt

MESSAGE_VERSION = 1


class QueueError(SocmethError):
    """Report that the queue failed or cannot be reached, naming where it lives."""


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

    Further rules every queue keeps:

    - messages are received in the order they were published; a released message
      may come back before or after those still waiting;
    - one `receive` never returns two deliveries of the same attempt; the same
      attempt in two receives is possible (re-publishing, release) and harmless;
    - a consumer is gone when `release` says so: the leader calls it for a node it
      found down, so the queue itself never guesses from idle time;
    - a message this node cannot read (a newer version) is never returned; it
      stays unacknowledged, and `release` of its consumer offers it to the others;
    - an unreachable backend raises QueueError from the call that met it, and the
      same queue object works again once the backend answers.
    """

    @abstractmethod
    async def publish(self, attempts: Sequence[QueuedAttempt]) -> None:
        """Add messages for these attempts."""

    @abstractmethod
    async def receive(
        self, consumer: str, max_count: int, timeout_s: float
    ) -> list[Delivery]:
        """Take up to `max_count` messages, waiting up to `timeout_s` for the first.

        `max_count` is at least 1. A `timeout_s` of 0 takes what is waiting and
        returns at once. The messages stay pending for `consumer` until acknowledged.
        """

    @abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge handled messages so they are never delivered again."""

    @abstractmethod
    async def release(self, consumer: str) -> None:
        """Offer a gone consumer's unacknowledged messages to every consumer again.

        Safe to repeat, and a no-op for a consumer that holds nothing. A delivery
        the consumer still acknowledges afterwards (it was not gone after all) is
        ignored: its message is already back in the queue.
        """

    @abstractmethod
    async def holders(self) -> set[str]:
        """Return the consumers that hold unacknowledged messages.

        The leader releases those that are not live nodes.
        """

    @abstractmethod
    async def held(self) -> set[int]:
        """Return the attempt ids of every message held, waiting or pending.

        The leader compares them with the store's queued attempts to publish again
        what the queue lost.
        """

    @abstractmethod
    async def size(self) -> int:
        """Count messages waiting for a consumer."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; pending messages stay for the next consumer.

        A `receive` blocked meanwhile returns at once, with no messages.
        """


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
