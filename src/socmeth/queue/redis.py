"""Implement the queue on a Redis stream read by one consumer group, for cluster mode.

Keys, under the configured prefix (`redis.prefix`):

- `{prefix}:attempts`: the stream; each entry has one field, `message`, holding an
  encoded message. Its consumer group `workers` holds every node's pending entries,
  one consumer per node id.

An entry lives from its XADD until its acknowledgement, which runs XACK and XDEL in
one transaction. With a single group nothing else reads the stream, so an entry the
group acknowledged is needed by nobody, and deleting it keeps the stream as long as
the messages not yet handled. That gives the invariant `size` rests on: every entry
at or below the group's last delivered id is pending, every entry above it waits.

Redis persistence decides how durable a published message is. When Redis restarts
without its data the group is gone; the next command that needs it creates it again,
reading from the start of whatever the stream holds by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from socmeth.queue.base import (
    Delivery,
    MessageVersionError,
    Queue,
    QueueError,
    decode_message,
    encode_message,
)
from socmeth.store.base import QueuedAttempt

log = logging.getLogger(__name__)

T = TypeVar("T")

GROUP = "workers"
FIELD = "message"
COMMAND_TIMEOUT_S = 5.0  # a socket read longer than this means Redis is not answering
# XREADGROUP blocks at most this long per command, below COMMAND_TIMEOUT_S, so a
# long receive never looks like a dead connection.
BLOCK_SLICE_S = 2.0
SCAN_BATCH = 1000  # entries per XRANGE when listing what the stream holds

# Move every entry pending for ARGV[2] to the end of the stream as a new entry, then
# drop the consumer. A script, so that no other command sees an entry both pending
# and re-added, or gone from both. XPENDING is read again after each batch: the batch
# was acknowledged, so the next call starts where it ended.
_RELEASE = """
local moved = 0
while true do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 100, ARGV[2])
  if #pending == 0 then break end
  for _, entry in ipairs(pending) do
    local id = entry[1]
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if #found > 0 then
      redis.call('XADD', KEYS[1], '*', unpack(found[1][2]))
      moved = moved + 1
    end
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
  end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return moved
"""

# Entries in the stream minus entries pending: those not delivered yet (see the
# module docstring). One script, so both counts come from the same instant.
_SIZE = """
local length = redis.call('XLEN', KEYS[1])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
return length - pending
"""


class RedisQueue(Queue):
    """Carry messages on the stream `{prefix}:attempts` through the group `workers`.

    `release` re-adds the consumer's pending entries as new entries instead of
    XCLAIMing them to another consumer: a claimed entry is only seen by a consumer
    that reads its own pending list, which workers never do (they read new entries
    with `>`), and a live consumer would have to be chosen, which only the leader
    could do. Re-added entries join the end of the stream, behind those waiting.

    There is no reclaim by idle time (XAUTOCLAIM): an entry stays pending for as long
    as its attempt runs, or while a worker holds it back because the cluster is at
    capacity, so idle time cannot tell a dead consumer from a busy one. The store's
    heartbeats can, and the leader then calls `release`.
    """

    def __init__(self, url: str, prefix: str = "socmeth") -> None:
        if not prefix:
            raise ValueError("the Redis key prefix must not be empty (redis.prefix)")
        self.stream_key = f"{prefix}:attempts"
        self._where = f"stream {self.stream_key} at {display_url(url)}"
        # One immediate retry on a fresh connection, for a connection that broke
        # under a command (a pooled one that Redis closed is replaced on checkout).
        # Beyond that the caller's loop backs off: an outage never stalls a call.
        self._redis: Redis = Redis.from_url(
            url,
            decode_responses=True,
            protocol=2,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._release = self._redis.register_script(_RELEASE)
        self._size = self._redis.register_script(_SIZE)
        self._group_ready = False
        self._answering = True
        self._closed = False
        self._readers: set[asyncio.Future[Any]] = set()

    async def publish(self, attempts: Sequence[QueuedAttempt]) -> None:
        if not attempts:
            return

        async def add_all() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for attempt in attempts:
                    pipe.xadd(self.stream_key, {FIELD: encode_message(attempt)})
                await pipe.execute()

        await self._call(f"publishing {len(attempts)} messages", add_all)

    async def receive(
        self, consumer: str, max_count: int, timeout_s: float
    ) -> list[Delivery]:
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, not {max_count}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        while not self._closed:
            block_ms = _block_ms(deadline - loop.time())
            entries = await self._call(
                "receiving messages",
                partial(self._read, consumer, max_count, block_ms),
            )
            if entries:
                return await self._deliver(consumer, entries)
            if block_ms is None or loop.time() >= deadline:
                break
        return []

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        await self._call(
            f"acknowledging {len(deliveries)} messages",
            lambda: self._ack_ids([d.token for d in deliveries]),
        )

    async def release(self, consumer: str) -> None:
        moved = await self._call(
            f"releasing the messages of consumer {consumer!r}",
            lambda: self._release(keys=[self.stream_key], args=[GROUP, consumer]),
        )
        if moved:
            log.info(
                "returned %s unacknowledged messages of consumer %s to the queue",
                moved,
                consumer,
                extra={"event": "queue.released", "consumer": consumer, "count": moved},
            )

    async def holders(self) -> set[str]:
        async def summary() -> set[str]:
            reply = await self._redis.xpending(self.stream_key, GROUP)
            return {str(c["name"]) for c in reply.get("consumers") or ()}

        return await self._call("listing consumers", summary)

    async def held(self) -> set[int]:
        return await self._call("listing messages", self._scan)

    async def _scan(self) -> set[int]:
        """Read the stream from its start in slices; unreadable entries are skipped
        (they stay, and are not ours to count)."""
        found: set[int] = set()
        start = "-"
        while True:
            reply = await self._redis.xrange(
                self.stream_key, min=start, count=SCAN_BATCH
            )
            entries = _entries([(self.stream_key, reply)])
            for _, fields in entries:
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    found.add(decode_message(fields[FIELD]).attempt_id)
            if len(entries) < SCAN_BATCH:
                return found
            start = f"({entries[-1][0]}"

    async def size(self) -> int:
        waiting = await self._call(
            "counting messages",
            lambda: self._size(keys=[self.stream_key], args=[GROUP]),
        )
        return max(0, int(waiting))

    async def close(self) -> None:
        self._closed = True
        readers = list(self._readers)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await self._redis.aclose()

    async def _deliver(
        self, consumer: str, entries: list[tuple[str, dict[str, str]]]
    ) -> list[Delivery]:
        """Decode entries; leave unreadable ones pending, acknowledge duplicates."""
        deliveries: list[Delivery] = []
        duplicates: list[str] = []
        seen: set[int] = set()
        for entry_id, fields in entries:
            attempt = self._decode(consumer, entry_id, fields)
            if attempt is None:
                continue
            if attempt.attempt_id in seen:
                duplicates.append(entry_id)
                continue
            seen.add(attempt.attempt_id)
            deliveries.append(Delivery(attempt, entry_id))
        if duplicates:
            # One batch holds one delivery per attempt; the copies are redundant.
            try:
                await self._call(
                    "acknowledging duplicate messages",
                    lambda: self._ack_ids(duplicates),
                )
            except QueueError as exc:
                # Still hand out the deliveries: the copies wait for a release.
                log.warning("%s", exc, extra={"event": "queue.ack_failed"})
        return deliveries

    def _decode(
        self, consumer: str, entry_id: str, fields: dict[str, str]
    ) -> QueuedAttempt | None:
        """Decode one entry, or log why not and leave it pending for `consumer`."""
        try:
            return decode_message(fields[FIELD])
        except MessageVersionError as exc:
            reason = str(exc)
        except (KeyError, ValueError, TypeError) as exc:
            reason = f"not a socmeth queue message ({exc!r})"
        log.warning(
            "queue message %s on the %s refused: %s; it stays pending for %s until "
            "that consumer is released",
            entry_id,
            self._where,
            reason,
            consumer,
            extra={"event": "queue.message_refused", "entry_id": entry_id},
        )
        return None

    async def _read(
        self, consumer: str, max_count: int, block_ms: int | None
    ) -> list[tuple[str, dict[str, str]]]:
        """Read new entries; a read that close() cuts short returns nothing."""
        if self._closed:
            return []
        # A task of its own, so that close() can end a blocked read: cancelled,
        # redis-py drops the connection, and Redis forgets the blocked client.
        reader = asyncio.ensure_future(
            self._redis.xreadgroup(
                GROUP, consumer, {self.stream_key: ">"}, count=max_count, block=block_ms
            )
        )
        self._readers.add(reader)
        try:
            reply = await reader
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._closed or (current is not None and current.cancelling()):
                raise  # our caller is being cancelled, not just the read
            return []
        finally:
            self._readers.discard(reader)
        return _entries(reply)

    async def _ack_ids(self, ids: list[str]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream_key, GROUP, *ids)
            pipe.xdel(self.stream_key, *ids)
            await pipe.execute()

    async def _call(self, action: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a command, creating the group first if it is missing; raise
        QueueError naming the action and the Redis server if it fails."""
        if self._closed:
            raise QueueError(
                f"{action} on the {self._where} failed: the queue is closed"
            )
        try:
            if not self._group_ready:
                await self._create_group()
            try:
                result = await operation()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis lost the group (restarted without its data, or someone
                # deleted the key): make it again and repeat once.
                await self._create_group(lost=True)
                result = await operation()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._note_unreachable(exc)
            raise QueueError(
                f"{action} on the {self._where} failed: Redis does not answer "
                f"({exc}); check that it runs and that redis.url points to it"
            ) from exc
        except RedisError as exc:
            raise QueueError(
                f"{action} on the {self._where} failed: Redis refused it ({exc})"
            ) from exc
        self._note_answering()
        return result

    async def _create_group(self, *, lost: bool = False) -> None:
        """Create the group reading from the stream's start, and the stream."""
        try:
            await self._redis.xgroup_create(
                self.stream_key, GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        else:
            if lost:
                log.warning(
                    "the consumer group of the %s was missing and is created again; "
                    "messages Redis lost must be published again from the store",
                    self._where,
                    extra={"event": "queue.group_recreated"},
                )
        self._group_ready = True

    def _note_unreachable(self, exc: BaseException) -> None:
        if not self._answering:
            return
        self._answering = False
        log.warning(
            "Redis does not answer for the %s (%s); queue calls fail until it does",
            self._where,
            exc,
            extra={"event": "queue.unreachable"},
        )

    def _note_answering(self) -> None:
        if self._answering:
            return
        self._answering = True
        log.info(
            "Redis answers again for the %s",
            self._where,
            extra={"event": "queue.reconnected"},
        )


def display_url(url: str) -> str:
    """Return the URL without its password or query, fit for messages and logs."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{parts.path}"


def _block_ms(remaining_s: float) -> int | None:
    """Return XREADGROUP's BLOCK for the time left, or None for no wait at all.

    BLOCK 0 means forever to Redis, so a wait that rounds to 0 ms waits 1 ms.
    """
    if remaining_s <= 0:
        return None
    return max(1, math.ceil(min(remaining_s, BLOCK_SLICE_S) * 1000))


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """Flatten an XREADGROUP reply for one stream into (entry id, fields) pairs."""
    if not reply:
        return []
    _, entries = reply[0]
    return [(str(entry_id), dict(fields or {})) for entry_id, fields in entries]
