"""Hold every queue to the contract of socmeth.queue.base.Queue.

The contract tests run once per kind of conftest.QUEUE_KINDS. Durability and
unreadable messages apply only to some kinds; their tests take the fixture that
lists just those. The last section covers what Redis adds: its keys, its errors,
and surviving a restart of a redis-server of the test's own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

import socmeth.queue.redis
from socmeth.queue.base import MESSAGE_VERSION, Delivery, Queue, QueueError
from socmeth.queue.redis import SCAN_BATCH, RedisQueue
from socmeth.store.base import QueuedAttempt
from tests.integration.conftest import (
    REDIS_URL,
    QueueBackend,
    ThrowawayRedis,
    redis_client,
)


def attempts(*ids: int) -> list[QueuedAttempt]:
    return [QueuedAttempt(attempt_id=i, run_id=100 + i, number=1) for i in ids]


def ids_of(deliveries: list[Delivery]) -> list[int]:
    return [d.attempt.attempt_id for d in deliveries]


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


@pytest.fixture
def queue(queue_backend: QueueBackend) -> Queue:
    return queue_backend.open()


# The contract


async def test_a_published_message_is_received_once_acknowledged(
    queue: Queue,
) -> None:
    await queue.publish(attempts(1, 2))

    got = await queue.receive("node-a", 10, 1.0)
    await queue.ack(got)
    await queue.release("node-a")

    assert [d.attempt for d in got] == attempts(1, 2)
    assert await queue.size() == 0
    assert await queue.receive("node-b", 10, 0) == []


async def test_messages_arrive_in_the_order_they_were_published(queue: Queue) -> None:
    await queue.publish(attempts(1, 2, 3))
    await queue.publish(attempts(4, 5))

    received = [ids_of(await queue.receive("node-a", 2, 1.0)) for _ in range(3)]

    assert received == [[1, 2], [3, 4], [5]]


async def test_receive_takes_at_most_max_count(queue: Queue) -> None:
    await queue.publish(attempts(1, 2, 3, 4, 5))

    first = await queue.receive("node-a", 3, 1.0)

    assert ids_of(first) == [1, 2, 3]
    assert await queue.size() == 2


async def test_receive_on_an_empty_queue_waits_about_the_timeout(
    queue: Queue,
) -> None:
    started = time.monotonic()
    got = await queue.receive("node-a", 10, 0.1)
    waited = time.monotonic() - started

    assert got == []
    assert 0.05 <= waited < 2.0


async def test_a_zero_timeout_returns_at_once(queue: Queue) -> None:
    started = time.monotonic()
    empty = await queue.receive("node-a", 10, 0)
    waited = time.monotonic() - started
    await queue.publish(attempts(1))

    assert empty == []
    assert waited < 0.5
    assert ids_of(await queue.receive("node-a", 10, 0)) == [1]


async def test_a_blocked_receive_wakes_when_a_message_is_published(
    queue: Queue,
) -> None:
    waiting = asyncio.create_task(queue.receive("node-a", 10, 10.0))
    await asyncio.sleep(0.1)
    assert not waiting.done()

    started = time.monotonic()
    await queue.publish(attempts(1))
    got = await asyncio.wait_for(waiting, 2.0)

    assert ids_of(got) == [1]
    assert time.monotonic() - started < 1.0


async def test_unacknowledged_messages_return_after_release_acknowledged_never(
    queue: Queue,
) -> None:
    await queue.publish(attempts(1, 2, 3))
    held = await queue.receive("node-a", 10, 1.0)
    await queue.ack([d for d in held if d.attempt.attempt_id == 2])
    assert await queue.receive("node-b", 10, 0) == []  # still node-a's

    await queue.release("node-a")
    again = await queue.receive("node-b", 10, 1.0)

    assert sorted(ids_of(again)) == [1, 3]
    assert await queue.receive("node-b", 10, 0) == []


async def test_release_returns_only_that_consumers_messages(queue: Queue) -> None:
    await queue.publish(attempts(1, 2))
    await queue.receive("node-a", 1, 1.0)
    await queue.receive("node-b", 1, 1.0)

    await queue.release("node-a")

    assert ids_of(await queue.receive("node-c", 10, 1.0)) == [1]
    assert await queue.size() == 0


async def test_release_is_safe_to_repeat_and_for_unknown_consumers(
    queue: Queue,
) -> None:
    await queue.publish(attempts(1))
    await queue.receive("node-a", 10, 1.0)

    await queue.release("node-a")
    await queue.release("node-a")
    await queue.release("never-seen")

    assert ids_of(await queue.receive("node-b", 10, 1.0)) == [1]
    assert await queue.receive("node-b", 10, 0) == []


async def test_an_acknowledgement_after_release_leaves_the_returned_message(
    queue: Queue,
) -> None:
    await queue.publish(attempts(1))
    stale = await queue.receive("node-a", 10, 1.0)
    await queue.release("node-a")  # node-a was only slow, not gone

    await queue.ack(stale)

    assert ids_of(await queue.receive("node-b", 10, 1.0)) == [1]


async def test_size_counts_messages_not_yet_received(queue: Queue) -> None:
    await queue.publish(attempts(1, 2, 3, 4, 5))
    assert await queue.size() == 5

    held = await queue.receive("node-a", 4, 1.0)
    assert await queue.size() == 1
    await queue.ack([held[1], held[3]])  # out of order: leaves gaps behind
    assert await queue.size() == 1
    await queue.publish(attempts(6))
    assert await queue.size() == 2

    await queue.release("node-a")  # attempts 1 and 3 wait again

    assert await queue.size() == 4


async def test_one_receive_holds_one_delivery_per_attempt(queue: Queue) -> None:
    await queue.publish(attempts(1, 2))
    await queue.publish(attempts(1))  # re-published, e.g. after a restart

    first = await queue.receive("node-a", 10, 1.0)
    await queue.publish(attempts(2))  # re-published while node-a holds it
    await queue.release("node-a")
    second = await queue.receive("node-b", 10, 1.0)

    assert sorted(ids_of(first)) == [1, 2]
    assert sorted(ids_of(second)) == [1, 2]
    assert await queue.size() == 0


async def test_a_cancelled_receive_leaves_the_queue_usable(queue: Queue) -> None:
    waiting = asyncio.create_task(queue.receive("node-a", 10, 10.0))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # Let Redis see the cancelled read's connection go before anything is published:
    # a message it still handed to that read would wait for node-a's release.
    await asyncio.sleep(0.1)

    await queue.publish(attempts(1))

    assert ids_of(await queue.receive("node-a", 10, 1.0)) == [1]


async def test_close_ends_a_blocked_receive_empty(queue: Queue) -> None:
    waiting = asyncio.create_task(queue.receive("node-a", 10, 10.0))
    await asyncio.sleep(0.1)

    started = time.monotonic()
    await queue.close()
    got = await asyncio.wait_for(waiting, 2.0)

    assert got == []
    assert time.monotonic() - started < 1.0


async def test_prefixes_keep_queues_apart(queue_backend: QueueBackend) -> None:
    queue = queue_backend.open()
    other = queue_backend.open(queue_backend.other_prefix())
    await queue.publish(attempts(1))
    await other.publish(attempts(2))
    await queue.receive("node-a", 10, 1.0)

    await other.release("node-a")

    assert await queue.size() == 0
    assert ids_of(await other.receive("node-a", 10, 1.0)) == [2]
    assert await queue.receive("node-b", 10, 0) == []


async def test_held_names_waiting_and_pending_messages_not_acknowledged_ones(
    queue: Queue,
) -> None:
    assert await queue.held() == set()
    await queue.publish(attempts(1, 2, 3, 4))
    got = await queue.receive("node-a", 3, 1.0)  # 1, 2, 3 pending; 4 waiting

    await queue.ack([d for d in got if d.attempt.attempt_id == 2])
    assert await queue.held() == {1, 3, 4}

    await queue.ack(got)
    assert await queue.held() == {4}


async def test_released_messages_are_still_held(queue: Queue) -> None:
    await queue.publish(attempts(1, 2))
    stale = await queue.receive("node-a", 10, 1.0)

    await queue.release("node-a")
    assert await queue.held() == {1, 2}

    again = await queue.receive("node-b", 10, 1.0)
    await queue.ack(stale)  # node-a was slow, not gone: its late ack changes nothing
    assert await queue.held() == {1, 2}
    await queue.ack(again)
    assert await queue.held() == set()


async def test_holders_are_the_consumers_with_unacknowledged_messages(
    queue: Queue,
) -> None:
    assert await queue.holders() == set()
    await queue.publish(attempts(1, 2, 3))
    on_a = await queue.receive("node-a", 1, 1.0)
    on_b = await queue.receive("node-b", 1, 1.0)
    assert await queue.holders() == {"node-a", "node-b"}  # 3 waits: nobody's

    await queue.ack(on_a)
    assert await queue.holders() == {"node-b"}

    await queue.release("node-b")
    assert await queue.holders() == set()
    assert on_b


# Durable queues


async def test_messages_outlive_the_queue_object(
    durable_queue_backend: QueueBackend,
) -> None:
    first = durable_queue_backend.open()
    await first.publish(attempts(1, 2))
    await first.receive("node-a", 1, 1.0)  # node-a dies holding attempt 1
    await first.close()

    second = durable_queue_backend.open()
    assert await second.size() == 1
    assert ids_of(await second.receive("node-b", 10, 1.0)) == [2]
    await second.release("node-a")

    assert ids_of(await second.receive("node-b", 10, 1.0)) == [1]


# Queues that read serialized messages


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            json.dumps({"version": MESSAGE_VERSION + 1, "attempt_id": 9}),
            "is newer than this node understands",
        ),
        ("not json at all", "not a socmeth queue message"),
    ],
    ids=["newer-version", "garbage"],
)
async def test_an_unreadable_message_is_refused_and_left_pending(
    reading_queue_backend: QueueBackend,
    caplog: pytest.LogCaptureFixture,
    text: str,
    reason: str,
) -> None:
    queue = reading_queue_backend.open()
    await queue.publish(attempts(1))
    await reading_queue_backend.add_raw(text)
    await queue.publish(attempts(2))

    got = await queue.receive("node-a", 10, 1.0)
    assert ids_of(got) == [1, 2]
    assert await queue.size() == 0  # received by node-a, not handled
    [refused] = events(caplog, "queue.message_refused")
    assert refused.levelno == logging.WARNING
    assert reason in refused.getMessage()

    await queue.ack(got)
    await queue.release("node-a")  # offered to the others: a newer node reads it

    assert await queue.size() == 1


async def test_held_leaves_out_messages_it_cannot_read(
    reading_queue_backend: QueueBackend,
) -> None:
    queue = reading_queue_backend.open()
    await queue.publish(attempts(1))
    await reading_queue_backend.add_raw("not json at all")
    await queue.publish(attempts(2))

    assert await queue.held() == {1, 2}


# Redis: keys, errors, restarts


async def test_redis_keeps_one_stream_under_the_prefix_and_drops_handled_entries(
    redis_backend: QueueBackend,
) -> None:
    queue = redis_backend.open()
    stream = f"{redis_backend.prefix}:attempts"
    await queue.publish(attempts(1, 2, 3))
    await queue.ack(await queue.receive("node-a", 2, 1.0))
    await queue.receive("node-b", 1, 1.0)
    await queue.release("node-b")

    async with redis_client(REDIS_URL) as client:
        keys = [key async for key in client.scan_iter(match=f"{redis_backend.prefix}*")]
        length = await client.xlen(stream)
        [group] = await client.xinfo_groups(stream)
        consumers = await client.xinfo_consumers(stream, "workers")

    assert keys == [stream]
    assert length == 1  # the two acknowledged entries are deleted
    assert group["name"] == "workers"
    assert [c["name"] for c in consumers] == ["node-a"]  # node-b was released


async def test_a_redis_receive_longer_than_the_socket_timeout_waits_in_slices(
    redis_backend: QueueBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis ends a BLOCK up to a tick (100 ms) late, hence the margin.
    monkeypatch.setattr(socmeth.queue.redis, "COMMAND_TIMEOUT_S", 0.6)
    monkeypatch.setattr(socmeth.queue.redis, "BLOCK_SLICE_S", 0.2)
    queue = redis_backend.open()

    started = time.monotonic()
    got = await queue.receive("node-a", 10, 1.2)

    assert got == []
    assert time.monotonic() - started >= 1.1


async def test_redis_refuses_an_empty_prefix() -> None:
    with pytest.raises(ValueError, match="prefix must not be empty"):
        RedisQueue("redis://127.0.0.1:6379/0", "")


async def test_an_unreachable_redis_raises_queue_error_naming_it_without_password(
    throwaway_redis: ThrowawayRedis,
) -> None:
    await throwaway_redis.stop()  # the port is free: nothing listens there
    url = f"redis://worker:s3cret@127.0.0.1:{throwaway_redis.port}/0?password=s3cret"
    queue = RedisQueue(url, "socmeth")
    try:
        started = time.monotonic()
        with pytest.raises(QueueError) as raised:
            await queue.publish(attempts(1))
        with pytest.raises(QueueError):
            await queue.receive("node-a", 10, 1.0)
    finally:
        await queue.close()

    message = str(raised.value)
    assert f"redis://worker@127.0.0.1:{throwaway_redis.port}/0" in message
    assert "socmeth:attempts" in message
    assert "s3cret" not in message
    assert time.monotonic() - started < 5.0


async def test_the_same_redis_queue_works_again_after_redis_restarts(
    throwaway_redis: ThrowawayRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="socmeth")
    queue = RedisQueue(throwaway_redis.url, "socmeth")
    try:
        await queue.publish(attempts(1))
        assert ids_of(await queue.receive("node-a", 10, 1.0)) == [1]
        blocked = asyncio.create_task(queue.receive("node-a", 10, 10.0))
        await asyncio.sleep(0.1)

        await throwaway_redis.stop()
        with pytest.raises(QueueError):
            await asyncio.wait_for(blocked, 5.0)  # the outage ends the wait at once
        with pytest.raises(QueueError):
            await queue.publish(attempts(2))
        await throwaway_redis.start()  # empty: it kept no data
        await queue.publish(attempts(3))
        got = await queue.receive("node-a", 10, 1.0)
    finally:
        await queue.close()

    assert ids_of(got) == [3]
    assert len(events(caplog, "queue.unreachable")) == 1
    assert len(events(caplog, "queue.reconnected")) == 1
    assert len(events(caplog, "queue.group_recreated")) == 1


@pytest.mark.parametrize("throwaway_redis", [True], ids=["appendonly"], indirect=True)
async def test_redis_messages_survive_a_restart_with_persistence(
    throwaway_redis: ThrowawayRedis,
) -> None:
    queue = RedisQueue(throwaway_redis.url, "socmeth")
    try:
        await queue.publish(attempts(1, 2, 3))
        await queue.receive("node-a", 1, 1.0)

        await throwaway_redis.stop()
        await throwaway_redis.start()

        assert await queue.size() == 2
        assert ids_of(await queue.receive("node-b", 10, 1.0)) == [2, 3]
        await queue.release("node-a")
        assert ids_of(await queue.receive("node-b", 10, 1.0)) == [1]
    finally:
        await queue.close()


@pytest.mark.parametrize(
    "count",
    [SCAN_BATCH, 2 * SCAN_BATCH + 1],
    ids=["one-full-batch", "three-batches"],
)
async def test_redis_held_reads_every_entry_however_many_batches_it_takes(
    redis_backend: QueueBackend, count: int
) -> None:
    queue = redis_backend.open()
    await queue.publish(attempts(*range(1, count + 1)))
    pending = await queue.receive("node-a", 5, 1.0)
    await queue.ack(pending[:2])  # deleted entries leave gaps in the first batch

    assert await queue.held() == set(range(3, count + 1))
