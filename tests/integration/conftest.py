"""Give integration tests a migrated, empty store of every backend.

A backend is one entry of BACKENDS: a context manager that yields the URL of an
empty database of its kind and removes it afterwards. The contract suite runs once
per entry: SQLite, and PostgreSQL at SOCMETH_TEST_POSTGRES_URL (by default the
machine's, postgresql://postgres@127.0.0.1/postgres), where the user may create
databases; each test gets a database of its own and drops it. A PostgreSQL that does
not answer skips its tests with the reason, or fails them under
SOCMETH_REQUIRE_SERVICES=1 (CI).

Queues work the same way: QUEUE_KINDS lists the in-process queue and Redis Streams
at SOCMETH_TEST_REDIS_URL (by default redis://127.0.0.1:6379/0), each test under a
key prefix of its own whose keys it deletes afterwards. Tests that stop Redis start
a redis-server of their own instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from socmeth.queue.base import Queue
from socmeth.queue.memory import MemoryQueue
from socmeth.queue.redis import RedisQueue, display_url
from socmeth.store.sql import SqlStore, async_url, open_store
from tests.conftest import missing_service

POSTGRES_URL = os.environ.get(
    "SOCMETH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/postgres"
)


@contextlib.asynccontextmanager
async def _sqlite_url(tmp_path: Path) -> AsyncIterator[str]:
    # A subfolder that does not exist yet: opening the store must create it.
    yield f"sqlite:///{tmp_path / 'data' / 'socmeth.db'}"


@contextlib.asynccontextmanager
async def _postgresql_url(_: Path) -> AsyncIterator[str]:
    name = f"socmeth_test_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(async_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        try:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except (OSError, DBAPIError) as exc:
            missing_service(
                f"PostgreSQL at {_shown(POSTGRES_URL)} does not answer: {exc}"
            )
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(False)
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


BACKENDS: dict[str, Callable[[Path], contextlib.AbstractAsyncContextManager[str]]] = {
    "sqlite": _sqlite_url,
    "postgresql": _postgresql_url,
}


@pytest.fixture(params=sorted(BACKENDS))
async def store_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """Yield the URL of an empty database, not yet migrated."""
    async with BACKENDS[request.param](tmp_path) as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    """Yield a migrated store; fail the test if it leaked a connection."""
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        checked_out = opened.engine.pool.checkedout()  # type: ignore[attr-defined]
        await opened.close()
    assert checked_out == 0, f"{checked_out} connections were never given back"


# Queues. The contract suite runs once per entry of QUEUE_KINDS; a test that relies
# on a property only some kinds have asks for the fixture that lists just those, so
# the test ids say where it ran and nothing is skipped quietly.

REDIS_URL = os.environ.get("SOCMETH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SERVER = "/usr/bin/redis-server"


@dataclass(frozen=True)
class QueueKind:
    """Say what a kind of queue can be held to beyond the common contract."""

    durable: bool  # messages outlive the queue object that published them
    reads_messages: bool  # serializes messages, so it can meet unreadable ones


QUEUE_KINDS = {
    "memory": QueueKind(durable=False, reads_messages=False),
    "redis": QueueKind(durable=True, reads_messages=True),
}


@dataclass
class QueueBackend:
    """Open queues of one kind under per-test prefixes; close and remove them after.

    For Redis, `open` with the same prefix gives a second object on the same keys;
    an in-process queue is its own backend, so each `open` gives an empty one.
    """

    kind: str
    prefix: str
    opened: list[Queue] = field(default_factory=list)
    prefixes: set[str] = field(default_factory=set)

    def open(self, prefix: str | None = None) -> Queue:
        """Open a queue under `prefix` (the test's own prefix by default)."""
        chosen = prefix or self.prefix
        self.prefixes.add(chosen)
        queue: Queue = (
            MemoryQueue() if self.kind == "memory" else RedisQueue(REDIS_URL, chosen)
        )
        self.opened.append(queue)
        return queue

    def other_prefix(self) -> str:
        """Return a second prefix of this test, cleaned up like the first."""
        return f"{self.prefix}-other"

    async def add_raw(self, text: str) -> None:
        """Put a message with this exact text on the stream of the test's prefix."""
        assert QUEUE_KINDS[self.kind].reads_messages
        async with redis_client(REDIS_URL) as client:
            await client.xadd(f"{self.prefix}:attempts", {"message": text})

    async def close(self) -> None:
        for queue in self.opened:
            await queue.close()
        if self.kind == "redis":
            await delete_prefixes(REDIS_URL, self.prefixes)


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[Redis]:
    """Yield a plain client for what the tests check behind the queue's back."""
    client = Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),  # a probe: an answer or the error, at once
    )
    try:
        yield client
    finally:
        await client.aclose()


async def require_redis(url: str) -> None:
    """Make sure Redis answers at `url`."""
    try:
        async with redis_client(url) as client:
            await client.ping()
    except (RedisError, OSError) as exc:
        missing_service(f"Redis at {display_url(url)} does not answer: {exc}")


async def delete_prefixes(url: str, prefixes: set[str]) -> None:
    """Delete every key under the prefixes, one SCAN at a time: never FLUSHDB, as
    others share this Redis."""
    async with redis_client(url) as client:
        for prefix in prefixes:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)


@contextlib.asynccontextmanager
async def _queue_backend(kind: str) -> AsyncIterator[QueueBackend]:
    if kind == "redis":
        await require_redis(REDIS_URL)
    backend = QueueBackend(kind, f"socmeth-test-{uuid.uuid4().hex}")
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(params=sorted(QUEUE_KINDS))
async def queue_backend(request: pytest.FixtureRequest) -> AsyncIterator[QueueBackend]:
    """Yield a backend of every kind of queue."""
    async with _queue_backend(request.param) as backend:
        yield backend


@pytest.fixture(params=sorted(k for k, v in QUEUE_KINDS.items() if v.durable))
async def durable_queue_backend(
    request: pytest.FixtureRequest,
) -> AsyncIterator[QueueBackend]:
    """Yield a backend of each kind whose messages outlive the queue object."""
    async with _queue_backend(request.param) as backend:
        yield backend


@pytest.fixture(params=sorted(k for k, v in QUEUE_KINDS.items() if v.reads_messages))
async def reading_queue_backend(
    request: pytest.FixtureRequest,
) -> AsyncIterator[QueueBackend]:
    """Yield a backend of each kind that decodes serialized messages."""
    async with _queue_backend(request.param) as backend:
        yield backend


@pytest.fixture
async def redis_backend() -> AsyncIterator[QueueBackend]:
    """Yield a Redis backend, for what the contract leaves to the backend."""
    async with _queue_backend("redis") as backend:
        yield backend


class ThrowawayRedis:
    """Run a redis-server of a test's own on a free port, to stop and start at will.

    Never the shared one: tests that stop Redis must not disturb anyone else.
    """

    def __init__(self, data_dir: Path, *, persistent: bool) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._data_dir = data_dir
        self._persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start the server and wait until it answers."""
        assert self._process is None, "already running"
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self._persistent
            else ["--appendonly", "no"]
        )
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--dir", str(self._data_dir), *persistence]
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with redis_client(self.url) as client:
            for _ in range(100):
                with contextlib.suppress(RedisError, OSError):
                    await client.ping()
                    return
                await asyncio.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} never answered")

    async def stop(self) -> None:
        """Shut the server down (it writes its append-only file if it keeps one)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def throwaway_redis(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ThrowawayRedis]:
    """Yield a started redis-server of this test's own; `persistent` via indirect
    parametrisation keeps its data in an append-only file across restarts."""
    if not os.access(REDIS_SERVER, os.X_OK):
        missing_service(f"{REDIS_SERVER} is not installed")
    persistent = bool(getattr(request, "param", False))
    server = ThrowawayRedis(tmp_path, persistent=persistent)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
