"""Check the lease's row locks on PostgreSQL, where leaders of several nodes meet.

A fenced write holds the lease row FOR KEY SHARE for its whole transaction. The
holder's renewal must go through meanwhile (a long leader transaction must not cost
the lease), while another node's takeover must wait for it to end (no write commits
in a term that is over). A leader also holds its term's session lock, so that a
follower takes over at once when the leader's session is gone. SQLite has one node
and one writer, so this is PostgreSQL's alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from socmeth.clock import SystemClock
from socmeth.cluster import LEASE_TTL, RENEW_S, Leadership
from socmeth.store.sql import (
    IDLE_IN_TRANSACTION_S,
    PG_TERM_LOCK,
    SqlStore,
    async_url,
    open_store,
)
from tests.integration.conftest import BACKENDS

TTL = timedelta(seconds=1.5)


@pytest.fixture
async def pg_url(tmp_path: Path) -> AsyncIterator[str]:
    async with BACKENDS["postgresql"](tmp_path) as url:
        yield url


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[SqlStore]:
    store = await open_store(pg_url)
    yield store
    await store.close()


@pytest.fixture
async def fenced_write(pg_url: str) -> AsyncIterator[AsyncConnection]:
    """Yield a connection inside a transaction that holds the row as a fenced
    write does; it rolls back at the end."""
    engine = create_async_engine(async_url(pg_url))
    async with engine.connect() as conn:
        await conn.begin()
        yield conn
        await conn.rollback()
    await engine.dispose()


async def hold_like_a_fenced_write(conn: AsyncConnection) -> None:
    await conn.execute(
        text("SELECT holder FROM leader_lease WHERE id = 1 FOR KEY SHARE")
    )


async def test_the_holder_renews_while_its_own_fenced_write_runs(
    pg_store: SqlStore, fenced_write: AsyncConnection
) -> None:
    first = await pg_store.acquire_lease("a", TTL)
    assert first is not None
    await hold_like_a_fenced_write(fenced_write)

    renewed = await asyncio.wait_for(pg_store.acquire_lease("a", TTL), 5)

    assert renewed is not None
    assert renewed.term == first.term
    assert renewed.expires_at is not None
    assert first.expires_at is not None
    assert renewed.expires_at > first.expires_at


async def test_a_takeover_waits_for_the_fenced_write_then_raises_the_term(
    pg_store: SqlStore, fenced_write: AsyncConnection
) -> None:
    first = await pg_store.acquire_lease("a", timedelta(milliseconds=50))
    assert first is not None
    await hold_like_a_fenced_write(fenced_write)
    await asyncio.sleep(0.1)  # the lease lapses (store clock)

    takeover = asyncio.create_task(pg_store.acquire_lease("b", TTL))
    await asyncio.sleep(0.5)
    assert not takeover.done(), "the takeover did not wait for the fenced write"

    await fenced_write.rollback()
    taken = await asyncio.wait_for(takeover, 5)

    assert taken is not None
    assert (taken.holder, taken.term) == ("b", first.term + 1)


async def test_a_takeover_that_waited_finds_the_holder_renewed_and_follows(
    pg_store: SqlStore, pg_url: str, fenced_write: AsyncConnection
) -> None:
    first = await pg_store.acquire_lease("a", timedelta(milliseconds=50))
    assert first is not None
    await hold_like_a_fenced_write(fenced_write)
    await asyncio.sleep(0.1)
    other = await open_store(pg_url, migrate_first=False)
    try:
        # b read the lapsed lease and waits to take it; a renews meanwhile.
        takeover = asyncio.create_task(other.acquire_lease("b", TTL))
        await asyncio.sleep(0.3)
        renewal = asyncio.create_task(pg_store.acquire_lease("a", TTL))
        await asyncio.sleep(0.3)
        await fenced_write.rollback()
        results = await asyncio.wait_for(asyncio.gather(takeover, renewal), 5)
    finally:
        await other.close()

    holders = [lease.holder if lease else None for lease in results]
    # Exactly one of them holds the lease afterwards, and the store agrees.
    _, current = await pg_store.current_lease()
    assert current.holder in holders
    assert holders.count(current.holder) == 1
    assert None in holders


async def test_a_session_stalled_in_a_transaction_is_ended_by_the_server(
    pg_store: SqlStore,
) -> None:
    # A node lost mid-transaction would otherwise hold the lease row until TCP
    # gives up; the server ends such sessions after IDLE_IN_TRANSACTION_S.
    async with pg_store.engine.connect() as conn:
        shown = (
            await conn.execute(text("SHOW idle_in_transaction_session_timeout"))
        ).scalar_one()

    assert shown == f"{int(IDLE_IN_TRANSACTION_S)}s"


class Duties:
    """Record the terms a Leadership led in."""

    def __init__(self) -> None:
        self.terms: list[int] = []

    async def lead(self, term: int) -> None:
        self.terms.append(term)

    async def follow(self) -> None:
        self.terms.append(-1)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def leadership(store: SqlStore, node_id: str) -> tuple[Leadership, Duties]:
    """Build a Leadership of `node_id` on the system clock, with its duties."""
    duties = Duties()
    return (
        Leadership(
            store, SystemClock(), node_id, lead=duties.lead, follow=duties.follow
        ),
        duties,
    )


async def test_a_follower_takes_over_at_once_when_the_leaders_session_is_gone(
    pg_store: SqlStore, pg_url: str
) -> None:
    other = await open_store(pg_url, migrate_first=False)
    a, a_duties = leadership(pg_store, "a")
    b, b_duties = leadership(other, "b")
    try:
        await a.start()
        await b.start()
        await asyncio.sleep(2 * RENEW_S)
        assert a_duties.terms == [1]
        assert b_duties.terms == []  # a's session lives: b waits, though it polls

        # a dies: its loop ends and its sessions close, with the lease running.
        assert a._task is not None
        a._task.cancel()
        await pg_store.close()
        await until(lambda: b.leading)
        taken = b.lease
    finally:
        await b.stop()
        await other.close()

    assert taken is not None
    assert taken.term == 2
    assert taken.previous_expires_at is not None
    # Taken before a's lease would have lapsed: the session lock, not the TTL.
    assert taken.expires_at is not None
    assert taken.expires_at - LEASE_TTL < taken.previous_expires_at


async def test_only_one_of_two_followers_takes_over_from_a_gone_leader(
    pg_store: SqlStore, pg_url: str
) -> None:
    first = await pg_store.acquire_lease("a", TTL)
    assert first is not None
    assert await pg_store.term_lock(first.term)
    b_store = await open_store(pg_url, migrate_first=False)
    c_store = await open_store(pg_url, migrate_first=False)
    b, b_duties = leadership(b_store, "b")
    c, c_duties = leadership(c_store, "c")
    try:
        await pg_store.close()  # a's session goes; its lease still runs
        await asyncio.gather(b.start(), c.start())
        await until(lambda: b.leading or c.leading)
        await asyncio.sleep(2 * RENEW_S)
        leaders = [x for x in (b, c) if x.leading]
    finally:
        await asyncio.gather(b.stop(), c.stop())
        await b_store.close()
        await c_store.close()

    assert len(leaders) == 1
    led = [term for term in b_duties.terms + c_duties.terms if term > 0]
    assert led == [2]


async def test_a_leader_whose_lock_session_dies_takes_its_lock_again_and_leads_on(
    pg_store: SqlStore, fenced_write: AsyncConnection
) -> None:
    a, duties = leadership(pg_store, "a")
    holders = text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = :kind "
        "AND objid = 1 AND granted"
    )
    try:
        await a.start()
        (pid,) = (await fenced_write.execute(holders, {"kind": PG_TERM_LOCK})).scalars()
        # The database ends the session the lock lives on (a restart does that).
        await fenced_write.execute(
            text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
        )
        await asyncio.sleep(3 * RENEW_S)
        again = list(
            (await fenced_write.execute(holders, {"kind": PG_TERM_LOCK})).scalars()
        )
        leading = a.leading
    finally:
        await a.stop()

    assert leading
    assert duties.terms == [1, -1]  # led all along; the -1 is the stop
    assert len(again) == 1
    assert again != [pid]


async def test_of_two_processes_under_one_node_id_only_the_lock_holder_leads(
    pg_store: SqlStore, pg_url: str
) -> None:
    # A second process started under a live node's id while that one was paused
    # (so the start-up check saw it silent): the lease's holder is the same id for
    # both, the term lock tells them apart.
    twin_store = await open_store(pg_url, migrate_first=False)
    first, _ = leadership(pg_store, "n2")
    twin, twin_duties = leadership(twin_store, "n2")
    try:
        await first.start()
        await twin.start()
        await asyncio.sleep(4 * RENEW_S)
        leading = (first.leading, twin.leading)
    finally:
        await twin.stop()
        await first.stop()
        await twin_store.close()

    assert leading == (True, False)
    assert [t for t in twin_duties.terms if t > 0] == []
