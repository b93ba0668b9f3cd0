"""Leadership and membership over a real SQLite store, moved by a fake clock; then
whole nodes in cluster mode on the machine's PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from socmeth.api.app import create_app
from socmeth.clock import FakeClock
from socmeth.cluster import DOWN_AFTER, RENEW_S, Leadership, Membership
from socmeth.config import Config, load_config
from socmeth.errors import ConfigError, StoreError
from socmeth.metrics import Metrics
from socmeth.models import JobDefinition, JobType
from socmeth.node import Node
from socmeth.queue.memory import MemoryQueue
from socmeth.scheduler import Scheduler
from socmeth.store.base import Fence, NodeBeat
from socmeth.store.schema import nodes
from socmeth.store.sql import SqlStore, open_store
from tests.integration.conftest import BACKENDS, REDIS_URL, QueueBackend

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqlStore]:
    opened = await open_store(f"sqlite:///{tmp_path / 'socmeth.db'}", clock=clock)
    yield opened
    await opened.close()


class Duties:
    """Record what a Leadership asked of its node."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def lead(self, term: int) -> None:
        self.events.append(f"lead {term}")

    async def follow(self) -> None:
        self.events.append("follow")


def leadership(
    store: SqlStore, clock: FakeClock, node_id: str
) -> tuple[Leadership, Duties]:
    duties = Duties()
    return (
        Leadership(store, clock, node_id, lead=duties.lead, follow=duties.follow),
        duties,
    )


async def tick(clock: FakeClock, seconds: float = RENEW_S) -> None:
    """Let the loops reach their sleeps, move the clock, and give them time for
    their store round trips."""
    await asyncio.sleep(0.01)
    clock.advance(seconds)
    await asyncio.sleep(0.05)


async def until(holds: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if holds():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not happen")


async def test_one_node_leads_and_the_other_takes_over_when_it_stops(
    store: SqlStore, clock: FakeClock
) -> None:
    a, a_duties = leadership(store, clock, "a")
    b, b_duties = leadership(store, clock, "b")
    await a.start()
    await b.start()
    try:
        await tick(clock)
        assert (a.leading, b.leading) == (True, False)
        assert a_duties.events == ["lead 1"]

        await a.stop()  # hands the lease over at once
        assert a_duties.events == ["lead 1", "follow"]
        await tick(clock)
        await until(lambda: b.leading, "b leading")
        assert b_duties.events == ["lead 2"]
    finally:
        await b.stop()


async def test_a_leader_whose_renewal_fails_stops_leading_at_once(
    store: SqlStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, duties = leadership(store, clock, "a")
    await a.start()
    try:
        assert a.lease is not None
        held_until = a.lease.expires_at

        async def unreachable(*_: object, **__: object) -> None:
            raise StoreError("the store cannot be reached")

        monkeypatch.setattr(store, "acquire_lease", unreachable)
        await tick(clock)
        await until(lambda: not a.leading, "a stepping down")
        assert duties.events == ["lead 1", "follow"]

        monkeypatch.undo()
        await tick(clock)
        await until(lambda: a.leading, "a leading again")
        assert duties.events == ["lead 1", "follow", "lead 1"]  # nobody took it
        # Its own lease taken back: a handover from its last renewal, so that the
        # fires of the gap are made, not missed.
        assert a.lease is not None
        assert a.lease.previous_expires_at == held_until
    finally:
        await a.stop()


async def test_a_lease_left_by_a_crash_is_taken_once_it_lapses(
    store: SqlStore, clock: FakeClock
) -> None:
    assert await store.acquire_lease("crashed", timedelta(seconds=1.5)) is not None
    a, duties = leadership(store, clock, "a")
    await a.start()
    try:
        await tick(clock, 1.0)
        assert not a.leading
        await tick(clock, 1.0)
        await until(lambda: a.leading, "a leading")
        assert duties.events == ["lead 2"]
    finally:
        await a.stop()


async def test_membership_beats_from_the_start_and_reads_stopped_after(
    store: SqlStore, clock: FakeClock
) -> None:
    running = [0]

    def describe() -> NodeBeat:
        return NodeBeat("a", "a:8080", "0.1.0", T0, running[0])

    membership = Membership(store, clock, describe)
    await membership.start()
    (first,) = (await store.list_nodes())[1]
    assert first.last_heartbeat_at == T0

    running[0] = 4
    await tick(clock, 1.0)
    for _ in range(200):
        (later,) = (await store.list_nodes())[1]
        if later.last_heartbeat_at > T0:
            break
        await asyncio.sleep(0.01)
    assert later.last_heartbeat_at == T0 + timedelta(seconds=1)
    assert later.running == 4

    await membership.stop()
    (stopped,) = (await store.list_nodes())[1]
    assert stopped.stopped_at == T0 + timedelta(seconds=1)


async def test_a_scheduler_whose_leadership_was_taken_over_stops_writing(
    store: SqlStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    lease = await store.acquire_lease("a", timedelta(0))  # lapses at once
    assert lease is not None
    scheduler = Scheduler(
        store,
        MemoryQueue(),
        clock,
        Metrics(),
        "a",
        stop_local=lambda run_ids: None,
    )
    assert await store.acquire_lease("b", timedelta(seconds=60)) is not None
    definition = JobDefinition(
        name="due", type=JobType.COMMAND, command="true", schedule="* * * * *"
    )
    job = await store.create_job(definition, T0, T0)  # due now

    scheduler.start(Fence("a", lease.term))
    await until(lambda: not scheduler.running, "the fenced scheduler stopping")

    assert (await store.get_job(job.id)).next_fire_at == T0  # it wrote nothing

    assert any(
        getattr(record, "event", None) == "scheduler.fenced"
        for record in caplog.records
    )
    await scheduler.stop()


# The address a node advertises


@pytest.mark.parametrize(
    ("overrides", "address"),
    [
        ({}, "127.0.0.1:8080"),
        ({"server.host": "10.1.2.3", "server.port": 9000}, "10.1.2.3:9000"),
        ({"server.host": "0.0.0.0"}, f"{socket.gethostname()}:8080"),
        ({"server.host": "::"}, f"{socket.gethostname()}:8080"),
        ({"server.host": "0.0.0.0", "cluster.advertise": "n1.lan:80"}, "n1.lan:80"),
        ({"server.host": "::1"}, "[::1]:8080"),
    ],
    ids=[
        "loopback-default",
        "bound-address",
        "every-ipv4-address",
        "every-ipv6-address",
        "advertised",
        "ipv6-address",
    ],
)
def test_a_node_advertises_the_address_others_reach_it_at(
    overrides: dict[str, Any], address: str, tmp_path: Path
) -> None:
    config = load_config(
        environ={}, overrides={"server.data_dir": str(tmp_path), **overrides}
    )

    assert Node(config).address == address


# Nodes in cluster mode: PostgreSQL for the store, Redis for the queue. The node's
# clock is fake (it paces the node's loops and its watch of a taken id); the
# store's clock is PostgreSQL's own, so rows are dated back by hand where needed.

ConfigFor = Callable[..., Config]


@pytest.fixture
async def postgres_url(tmp_path: Path) -> AsyncIterator[str]:
    async with BACKENDS["postgresql"](tmp_path) as url:
        yield url


@pytest.fixture
async def peer_store(postgres_url: str) -> AsyncIterator[SqlStore]:
    """Yield the store as the other nodes of the cluster reach it; one of them, n2,
    leads, so that the node under test only follows. (A leader's stop can hang on
    Python 3.11, see test_reaper.py: that is not what these tests are about.)"""
    opened = await open_store(postgres_url)
    lease = await opened.acquire_lease("n2", timedelta(minutes=5))
    assert lease is not None
    assert await opened.term_lock(lease.term)  # as a leader holds its term's lock
    yield opened
    await opened.close()


@pytest.fixture
def cluster_config(
    postgres_url: str, redis_backend: QueueBackend, tmp_path: Path
) -> ConfigFor:
    redis_backend.prefixes.add(redis_backend.prefix)  # its keys go with the test

    def make(overrides: Mapping[str, Any] | None = None) -> Config:
        return load_config(
            environ={},
            overrides={
                "database.url": postgres_url,
                "redis.url": REDIS_URL,
                "redis.prefix": redis_backend.prefix,
                "server.data_dir": str(tmp_path),
                "workers.shutdown_grace": 0,
                **(overrides or {}),
            },
        )

    return make


def beat_of(node_id: str, address: str) -> NodeBeat:
    return NodeBeat(node_id, address, "0.1.0", T0, 0)


async def start_watched(
    node: Node, clock: FakeClock, beat: Callable[[], Awaitable[object]] | None
) -> None:
    """Start the node, moving its clock half a second at a time; before each move
    the other holder of its id beats, when there is one."""
    starting = asyncio.create_task(node.start())
    deadline = time.monotonic() + 20
    try:
        while not starting.done():
            assert time.monotonic() < deadline, "the node never finished starting"
            if beat is not None:
                await beat()
            clock.advance(0.5)
            await asyncio.sleep(0.01)
    finally:
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    await starting


async def row_of(store: SqlStore, node_id: str) -> Any:
    (row,) = [r for r in (await store.list_nodes())[1] if r.id == node_id]
    return row


async def test_a_node_id_that_keeps_beating_is_refused(
    cluster_config: ConfigFor, peer_store: SqlStore
) -> None:
    live = beat_of("n1", "elsewhere:8080")
    await peer_store.heartbeat(live)
    clock = FakeClock(T0)
    node = Node(cluster_config(), clock=clock, node_id="n1")
    try:
        with pytest.raises(ConfigError) as refused:
            await start_watched(node, clock, lambda: peer_store.heartbeat(live))
    finally:
        await node.stop()

    assert refused.value.key == "cluster.node_id"
    assert "node 'n1' is already up at elsewhere:8080" in str(refused.value)
    row = await row_of(peer_store, "n1")
    assert (row.address, row.stopped_at) == ("elsewhere:8080", None)  # left alone


async def test_a_fresh_row_that_beats_no_more_is_a_previous_life(
    cluster_config: ConfigFor, peer_store: SqlStore
) -> None:
    await peer_store.heartbeat(beat_of("n1", "elsewhere:8080"))  # killed just now
    clock = FakeClock(T0)
    node = Node(cluster_config(), clock=clock, node_id="n1")
    try:
        await start_watched(node, clock, None)

        row = await row_of(peer_store, "n1")
        assert (row.address, row.stopped_at) == ("127.0.0.1:8080", None)
    finally:
        await node.stop()


@pytest.mark.parametrize("previous", ["stale", "stopped"])
async def test_a_stale_or_stopped_row_is_a_previous_life_accepted_at_once(
    cluster_config: ConfigFor, peer_store: SqlStore, previous: str
) -> None:
    await peer_store.heartbeat(beat_of("n1", "elsewhere:8080"))
    if previous == "stopped":
        await peer_store.mark_stopped("n1")
    else:
        silent_since = await peer_store.store_now() - DOWN_AFTER - timedelta(seconds=1)
        async with peer_store.engine.begin() as conn:
            await conn.execute(update(nodes).values(last_heartbeat_at=silent_since))
    node = Node(cluster_config(), clock=FakeClock(T0), node_id="n1")
    try:
        await asyncio.wait_for(node.start(), 10)  # the clock never moves: no watch

        row = await row_of(peer_store, "n1")
        assert (row.address, row.stopped_at) == ("127.0.0.1:8080", None)
    finally:
        await node.stop()


async def test_nodes_lists_configured_peers_never_seen_as_expected(
    cluster_config: ConfigFor, peer_store: SqlStore
) -> None:
    config = cluster_config(
        {
            "cluster.peers": "n2.lan:8080,n3.lan:8080,n3.lan:8080",
            "cluster.advertise": "n1.lan:8080",
        }
    )
    node = Node(config, clock=FakeClock(T0), node_id="n1")
    await node.start()
    try:
        await peer_store.heartbeat(beat_of("n2", "n2.lan:8080"))
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            listed = (await http.get("/api/nodes")).json()["items"]
            counts = (await http.get("/api/cluster")).json()["nodes"]
    finally:
        await node.stop()

    assert [(n["id"], n["address"], n["state"], n["leader"]) for n in listed] == [
        ("n1", "n1.lan:8080", "up", False),
        ("n2", "n2.lan:8080", "up", True),
        ("n3.lan:8080", "n3.lan:8080", "expected", False),
    ]
    assert listed[2] == {
        "id": "n3.lan:8080",
        "address": "n3.lan:8080",
        "state": "expected",
        "leader": False,
        "started_at": None,
        "last_heartbeat_at": None,
        "version": None,
        "running": 0,
    }
    assert counts == {"up": 2, "down": 0, "expected": 1}
