"""Assemble one socmeth node: store, queue, scheduler, workers and the services.

A node is what `socmeth serve` runs. It heartbeats to the store from its start,
works attempts, and runs the leader's duties (the scheduler, the reaper, the pruner)
only while it holds the leader lease (`cluster.Leadership`). It settles what a
previous crash of it left behind before it receives attempts.

Embedded mode (SQLite) has one node and an in-process queue; the node takes the
lease at once. Cluster mode (PostgreSQL and Redis) has any number of nodes, each
named by `cluster.node_id`, which must be unique among the nodes that are up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from socmeth import __version__
from socmeth.clock import Clock, SystemClock
from socmeth.cluster import (
    DOWN_AFTER,
    HANDOVER_AT_MOST,
    HEARTBEAT_S,
    LEASE_TTL,
    Leadership,
    Membership,
)
from socmeth.config import Config
from socmeth.errors import ConfigError, StoreError
from socmeth.executors import Executors
from socmeth.executors.procs import store_id_of
from socmeth.jobs import JobService
from socmeth.metrics import Metrics
from socmeth.models import Attempt, AttemptState
from socmeth.pruner import Pruner
from socmeth.queue.base import Queue, QueueError
from socmeth.queue.memory import MemoryQueue
from socmeth.queue.redis import RedisQueue
from socmeth.reaper import Reaper
from socmeth.scheduler import MAX_SLEEP_S, Scheduler
from socmeth.store.base import Fence, NodeBeat, Store
from socmeth.store.migrate import shown_url
from socmeth.store.sql import open_store
from socmeth.worker import WorkerPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeInfo:
    """Describe this node for the API."""

    id: str
    version: str
    started_at: datetime


class Node:
    """Own the long-lived parts of a server process and their start and stop order."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        node_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.info = NodeInfo(
            id=node_id or config.cluster.node_id or socket.gethostname(),
            version=__version__,
            started_at=self.clock.now(),
        )
        self.metrics = Metrics()
        self._store: Store | None = None
        self._queue: Queue | None = None
        self._jobs: JobService | None = None
        self._http: httpx.AsyncClient | None = None
        self._executors: Executors | None = None
        self.scheduler: Scheduler | None = None
        self.workers: WorkerPool | None = None
        self.pruner: Pruner | None = None
        self.reaper: Reaper | None = None
        self.membership: Membership | None = None
        self.leadership: Leadership | None = None
        self._handing_over = asyncio.Lock()
        self._started = False

    @property
    def store(self) -> Store:
        assert self._store is not None, "the node is not started"
        return self._store

    @property
    def queue(self) -> Queue:
        assert self._queue is not None, "the node is not started"
        return self._queue

    @property
    def jobs(self) -> JobService:
        assert self._jobs is not None, "the node is not started"
        return self._jobs

    async def output(self, run_id: int, number: int) -> tuple[Attempt, str, bool]:
        """Return an attempt of a run, its output tail and whether older output
        was left out; live while the attempt runs on this node."""
        attempt, text = await self.store.get_output(run_id, number)
        truncated = attempt.output_truncated
        live = None
        if attempt.state is AttemptState.RUNNING and self.workers is not None:
            # This node's copy is fresher than the store's, saved once a second.
            live = self.workers.live_output(attempt.id)
        if live is not None:
            text, truncated = live.text(), live.truncated
        return attempt, text, truncated

    async def start(self) -> None:
        """Open the store, settle what a crash left behind, then start the loops."""
        self._store = await self._open_store()
        redis = self.config.redis
        self._queue = (
            RedisQueue(redis.url, redis.prefix) if redis.url else MemoryQueue()
        )
        if redis.url:
            await self._check_queue()
        # Every worker slot may hold a connection; a smaller pool would turn waiting
        # for a connection into a job timeout.
        slots = self.config.workers.count
        self._http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
        )
        self._executors = Executors(
            self._http, self.clock, store_id=store_id_of(self.config.database_url)
        )
        self.scheduler = Scheduler(
            self.store,
            self.queue,
            self.clock,
            self.metrics,
            self.info.id,
            stop_local=self._stop_local,
        )
        self.workers = WorkerPool(
            self.store,
            self.queue,
            self.clock,
            self.metrics,
            self._executors,
            node_id=self.info.id,
            config=self.config,
            rng=self.rng,
            wake_scheduler=self.scheduler.wake,
        )
        self._jobs = JobService(
            self.store,
            self.queue,
            self.clock,
            max_jobs=self.config.limits.max_jobs,
            metrics=self.metrics,
            wake_scheduler=self.scheduler.wake,
            stop_local=self._stop_local,
        )
        self.pruner = Pruner(self.store, self.clock, self.config.history.retention_days)
        self.reaper = Reaper(
            self.store,
            self.queue,
            self.clock,
            self.metrics,
            self.rng,
            self.info.id,
            wake_scheduler=self.scheduler.wake,
        )
        if self.config.clustered:
            await self._refuse_taken_id()
        self.membership = Membership(self.store, self.clock, self._beat)
        await self.membership.start()
        await self.workers.recover(clustered=self.config.clustered)
        self.workers.start()
        self.leadership = Leadership(
            self.store, self.clock, self.info.id, lead=self._lead, follow=self._follow
        )
        await self.leadership.start()
        self._started = True
        log.info(
            "node %s started",
            self.info.id,
            extra={"event": "node.started", "node_id": self.info.id},
        )

    async def _open_store(self) -> Store:
        """Open (and migrate) the store; a failure names the setting to look at."""
        url = self.config.database_url
        try:
            return await open_store(url, clock=self.clock)
        except StoreError as exc:
            key = "database.url" if self.config.database.url else "server.data_dir"
            raise ConfigError(
                key, f"cannot open the store at {shown_url(url)}: {exc}"
            ) from exc

    async def _check_queue(self) -> None:
        """Refuse to start on a Redis that does not answer, naming redis.url; once
        started, a node rides out Redis outages instead."""
        try:
            await self.queue.size()
        except QueueError as exc:
            raise ConfigError("redis.url", str(exc)) from exc

    async def _refuse_taken_id(self) -> None:
        """Refuse to start under the id of a node that is up: the two would settle
        each other's attempts. A row whose heartbeats stopped is a previous life of
        this node, which is over."""
        store_now, records = await self.store.list_nodes()
        mine = next((r for r in records if r.id == self.info.id), None)
        if mine is None or mine.stopped_at is not None:
            return
        if store_now - mine.last_heartbeat_at > DOWN_AFTER:
            return
        # Fresh: watch it for one heartbeat interval to tell a live node from a
        # killed one whose last beat is recent.
        await self.clock.sleep(HEARTBEAT_S * 1.5)
        _, records = await self.store.list_nodes()
        again = next((r for r in records if r.id == self.info.id), None)
        if (
            again is not None
            and again.stopped_at is None
            and again.last_heartbeat_at > mine.last_heartbeat_at
        ):
            raise ConfigError(
                "cluster.node_id",
                f"node {self.info.id!r} is already up at {again.address} (it beats "
                "to the same store); give each node its own --node-id",
            )

    @property
    def address(self) -> str:
        """Return the host:port other nodes and the UI reach this node at."""
        if self.config.cluster.advertise:
            return self.config.cluster.advertise
        host = self.config.server.host or "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"  # an IPv6 address, as in a URL
        return f"{host}:{self.config.server.port}"

    def _beat(self) -> NodeBeat:
        return NodeBeat(
            id=self.info.id,
            address=self.address,
            version=self.info.version,
            started_at=self.info.started_at,
            running=self.workers.active_count if self.workers else 0,
        )

    async def _lead(self, term: int) -> None:
        """Start the leader's duties: fires, dependencies, retries, reaping, pruning."""
        assert self.scheduler is not None
        assert self.pruner is not None
        assert self.reaper is not None
        fence = Fence(self.info.id, term)
        self.scheduler.start(fence, self._handover_since())
        self.reaper.start(fence)
        self.pruner.start(fence)

    def _handover_since(self) -> datetime | None:
        """Return the instant the previous leader's duties may have stopped, when
        this lease was taken over from it moments ago; None otherwise.

        That is its last renewal (its lease's end minus the TTL) less one scheduler
        turn. Fires since then are the handover's: the new leader makes them, late,
        instead of treating them as missed. The unique fire key makes the margin
        safe: a fire the old leader did make is not made again. A lease that ended
        longer ago than HANDOVER_AT_MOST was not handed over but abandoned (the
        cluster was down), and the misfire policy applies as after any outage.
        """
        lease = self.leadership.lease if self.leadership else None
        ended = lease.previous_expires_at if lease else None
        if ended is None:
            return None
        since = ended - LEASE_TTL - timedelta(seconds=MAX_SLEEP_S)
        if self.clock.now() - since > HANDOVER_AT_MOST:
            return None
        return since

    async def _follow(self) -> None:
        """Stop the leader's duties at once: another node may lead now."""
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.reaper is not None:
            await self.reaper.stop()
        if self.pruner is not None:
            await self.pruner.stop()

    def _stop_local(self, run_ids: Collection[int]) -> None:
        if self.workers is not None:
            self.workers.stop_local(run_ids)

    async def hand_over(self) -> None:
        """Stop the leader's duties and release the lease, if this node leads;
        safe to call again, and `stop` calls it first (waiting for one under
        way)."""
        async with self._handing_over:
            if self.leadership is not None:
                await self.leadership.stop()

    async def stop(self) -> None:
        """Hand leadership over, give running attempts their grace, then close all."""
        await self.hand_over()
        await self._follow()
        if self.workers is not None:
            await self.workers.stop(self.config.workers.shutdown_grace)
        if self.membership is not None:
            await self.membership.stop()
        if self._executors is not None:
            self._executors.close()
        if self._http is not None:
            await self._http.aclose()
        if self._queue is not None:
            await self._queue.close()
        if self._store is not None:
            await self._store.close()
        if not self._started:
            return  # it never started: there is nothing to say stopped
        log.info(
            "node %s stopped",
            self.info.id,
            extra={"event": "node.stopped", "node_id": self.info.id},
        )

    def _scheduler_check(self) -> str:
        """Say `ok` while this node leads and its scheduler runs, and while another
        node leads: a follower still serves the API and works attempts."""
        scheduler = self.scheduler
        if self.leadership is None or scheduler is None:
            return "stopped"
        if not self.leadership.leading:
            return "ok"
        if scheduler.failing:
            return f"failing: {scheduler.failing}"
        return "ok" if scheduler.running else "stopped"

    async def ready(self) -> tuple[bool, dict[str, str]]:
        """Tell whether this node can serve: its store answers and its loops run."""
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.store.ping(), 2.0)
            checks["store"] = "ok"
        except Exception as exc:  # any failure means not ready; the reason is shown
            checks["store"] = f"error: {exc}"
        workers = self.workers
        checks["workers"] = (
            "ok" if workers is not None and workers.running else "stopped"
        )
        checks["scheduler"] = self._scheduler_check()
        return all(v == "ok" for v in checks.values()), checks
