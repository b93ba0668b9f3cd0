"""Keep a node's place in the cluster: its heartbeats, and the leader lease.

SPEC "Cluster and failover": every node heartbeats to the store each second and is
down once silent for 3 s by the store's clock; one leader holds a lease (holder,
term, expiry by the store's clock, TTL 1.5 s), renewed every 0.5 s, well before it
lapses. The leader's duties (fires, dependencies, retries, pruning) run only while
this node holds the lease; losing it stops them at once.

`node_states` is pure: the API shows what it returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from socmeth.clock import Clock
from socmeth.logs import OutageLog
from socmeth.store.base import Lease, NodeBeat, NodeRecord, Store
from socmeth.tasks import cancel_and_wait

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
DOWN_AFTER = timedelta(seconds=3)
LEASE_TTL = timedelta(seconds=1.5)
RENEW_S = 0.5
# A lease taken over at most this long after it ended was handed over: the fires
# in between belong to the handover, not to an outage (see Node._handover_since).
HANDOVER_AT_MOST = timedelta(seconds=30)


class NodeState(StrEnum):
    UP = "up"
    DOWN = "down"
    EXPECTED = "expected"  # a configured peer never seen


@dataclass(frozen=True)
class NodeStatus:
    """A node as the API shows it; the times are None for a peer never seen."""

    id: str
    address: str
    state: NodeState
    leader: bool
    started_at: datetime | None
    last_heartbeat_at: datetime | None
    version: str | None
    running: int


def node_states(
    now: datetime,
    records: Sequence[NodeRecord],
    lease: Lease,
    peers: Sequence[str] = (),
) -> list[NodeStatus]:
    """Tell each node's state at the store's `now`, with configured peers never seen.

    A peer is named by its `host:port` address; one that matches no node's address
    (or id) is `expected`.
    """
    statuses = [
        NodeStatus(
            id=record.id,
            address=record.address,
            state=_state_of(record, now),
            leader=lease.held_by(record.id, now),
            started_at=record.started_at,
            last_heartbeat_at=record.last_heartbeat_at,
            version=record.version,
            running=record.running,
        )
        for record in records
    ]
    seen = {r.address for r in records} | {r.id for r in records}
    statuses += [
        NodeStatus(peer, peer, NodeState.EXPECTED, False, None, None, None, 0)
        for peer in dict.fromkeys(peers)
        if peer not in seen
    ]
    return statuses


def _state_of(record: NodeRecord, now: datetime) -> NodeState:
    if record.stopped_at is not None or now - record.last_heartbeat_at > DOWN_AFTER:
        return NodeState.DOWN
    return NodeState.UP


class Membership:
    """Heartbeat this node to the store each second while it runs."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        describe: Callable[[], NodeBeat],
    ) -> None:
        self._store = store
        self._clock = clock
        self._describe = describe
        self._task: asyncio.Task[None] | None = None
        self._outage = OutageLog(log, "node.heartbeat_failed", "the heartbeat")

    async def start(self) -> None:
        """Beat once, so that the node is listed from its start, then every second."""
        await self._store.heartbeat(self._describe())
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def stop(self) -> None:
        """Stop beating and say so, so that the node reads down at once.

        Saying so may fail (the store is down or busy): the node then reads down
        once its last heartbeat is 3 s old, and stopping goes on.
        """
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await self._store.mark_stopped(self._describe().id)
        except Exception as exc:
            log.warning(
                "could not record this node's stop (%s); it reads down in %ss",
                exc,
                DOWN_AFTER.total_seconds(),
                extra={"event": "node.stop_unrecorded"},
            )

    async def _loop(self) -> None:
        while True:
            await self._clock.sleep(HEARTBEAT_S)
            try:
                await self._store.heartbeat(self._describe())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._outage.failed(exc, self._clock.monotonic())
            else:
                self._outage.succeeded()


class Leadership:
    """Hold the leader lease when this node can, and run the leader's duties then.

    `lead` starts the duties when the lease is taken; `follow` stops them when it
    is lost (not renewed, or taken by another node in a newer term).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        node_id: str,
        *,
        lead: Callable[[int], Awaitable[None]],
        follow: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self._clock = clock
        self._node_id = node_id
        self._lead = lead
        self._follow = follow
        self.lease: Lease | None = None
        self._held_until: datetime | None = None  # expiry of this process's last lease
        self._task: asyncio.Task[None] | None = None
        self._outage = OutageLog(log, "node.lease_failed", "reading the leader lease")

    @property
    def leading(self) -> bool:
        return self.lease is not None

    async def start(self) -> None:
        """Try for the lease once at once, then keep trying or renewing."""
        await self._try()
        self._task = asyncio.create_task(self._loop(), name="leadership")

    async def stop(self) -> None:
        """Stop the duties and hand the lease over at once, if this node holds it."""
        await cancel_and_wait(self._task)
        self._task = None
        lease = self.lease
        if lease is None:
            return
        await self._step_down("this node is stopping")
        try:
            await self._store.release_lease(self._node_id, lease.term)
        except Exception as exc:
            # The lease then lapses within its TTL, and another node takes it.
            log.warning(
                "could not hand the leader lease over (%s); it lapses in %ss",
                exc,
                LEASE_TTL.total_seconds(),
                extra={"event": "node.lease_unreleased"},
            )

    async def _loop(self) -> None:
        while True:
            await self._clock.sleep(RENEW_S)
            await self._try()

    async def _acquire(self) -> Lease | None:
        """Renew or take the lease; with term locks, take it from a gone holder.

        On PostgreSQL a leader holds its term's session lock for as long as it
        leads. A follower that can take the running term's lock knows the
        holder's process is gone (its session closed) and takes over at once
        instead of waiting out the TTL, which still covers a holder that hangs or
        is cut off with its session open. Whoever takes over holds the next term's
        lock first, so of the followers that try together only one goes on.
        """
        store = self._store
        if not store.has_term_locks:
            return await store.acquire_lease(self._node_id, LEASE_TTL)
        if self.lease is not None:
            lease = await store.acquire_lease(self._node_id, LEASE_TTL)
            if lease is not None and not await self._keep_term_lock(lease.term):
                return None
            return lease

        now, current = await store.current_lease()
        gone_term = None
        if current.leader_at(now) not in (None, self._node_id):
            if not await store.term_lock(current.term):
                return None  # its holder's session lives: it leads
            await store.release_term_lock(current.term)
            gone_term = current.term
        following = current.term + 1
        if not await store.term_lock(following):
            return None  # another node is taking over
        lease = await store.acquire_lease(self._node_id, LEASE_TTL, gone_term=gone_term)
        if lease is None or lease.term != following:
            await store.release_term_lock(following)
            # A lease of this node id from before: it leads only with its term's
            # lock, which another process under the same id may hold.
            if lease is not None and not await store.term_lock(lease.term):
                return None
        return lease

    async def _keep_term_lock(self, term: int) -> bool:
        """Hold this leader's term lock again if its session was lost; tell whether
        this node may go on leading.

        Another session holding the lock is a follower taking over, or a second
        process under this node id: either way this one steps down. A failure to
        reach the store does not stop the leading (the renewed lease stands), and
        a follower that takes the lock meanwhile takes over, which the fence makes
        safe.
        """
        try:
            held = await self._store.term_lock(term)
        except Exception as exc:
            log.debug("holding the term lock failed: %s", exc)
            return True
        if not held:
            log.warning(
                "node %s leads in term %s but another session holds its lock",
                self._node_id,
                term,
                extra={"event": "node.term_lock_taken", "term": term},
            )
        return held

    async def _try(self) -> None:
        try:
            lease = await self._acquire()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Unrenewed, the lease lapses within its TTL, when another node may take
            # it: stop acting as leader now rather than risk two.
            self._outage.failed(exc, self._clock.monotonic())
            lease = None
        else:
            self._outage.succeeded()
        if lease is not None and self.lease is None:
            if lease.previous_expires_at is None and self._held_until is not None:
                # This process led until a failed renewal and took its own lease
                # back: the fires since then belong to a handover too.
                lease = replace(lease, previous_expires_at=self._held_until)
            self.lease = lease
            log.info(
                "node %s leads in term %s",
                self._node_id,
                lease.term,
                extra={"event": "node.leading", "term": lease.term},
            )
            await self._lead(lease.term)
        elif lease is None and self.lease is not None:
            await self._step_down("the lease was not renewed")
        elif lease is not None and self.lease is not None:
            if lease.term != self.lease.term:
                # Another node led in between: start the duties afresh.
                await self._step_down(f"another node led before term {lease.term}")
                self.lease = lease
                await self._lead(lease.term)
            self.lease = lease
        if self.lease is not None:
            self._held_until = self.lease.expires_at

    async def _step_down(self, why: str) -> None:
        term = self.lease.term if self.lease else None
        self.lease = None
        if term is not None and self._store.has_term_locks:
            try:
                await self._store.release_term_lock(term)
            except Exception as exc:  # it goes with the session, which is in trouble
                log.debug("letting go of the term lock failed: %s", exc)
        log.warning(
            "node %s stops leading (term %s): %s",
            self._node_id,
            term,
            why,
            extra={"event": "node.following", "term": term},
        )
        await self._follow()
