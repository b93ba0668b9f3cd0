"""Run a cluster of real `socmeth serve` processes on loopback, for tests and benches.

A `Cluster` owns a scratch PostgreSQL database and a Redis key prefix of its own,
both removed by `close()`, and N nodes named `n1`, `n2`, ... that list each other as
peers. Nothing here touches data it did not create. The services default to the
machine's (`SOCMETH_TEST_POSTGRES_URL`, `SOCMETH_TEST_REDIS_URL` override them); a
test that restarts a service passes URLs of throwaway instances instead.

`close()` also kills, by pid, the commands that nodes started for the cluster's
store and left running (a SIGKILLed node's children outlive it on this machine).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.conftest import missing_service, require_postgres
from tests.e2e.conftest import Server, free_port

POSTGRES_URL = os.environ.get(
    "SOCMETH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/postgres"
)
REDIS_URL = os.environ.get("SOCMETH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PROC = Path("/proc")

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `check` until it returns something other than None; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `check` until it holds; fail naming `what`."""
    wait_for(lambda: True if check() else None, timeout, what, interval)


def with_database(url: str, name: str) -> str:
    """Return a PostgreSQL URL naming another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def psql(url: str, sql: str) -> list[list[str]]:
    """Run SQL through psql (tab-separated, unaligned); return the rows' fields."""
    done = subprocess.run(
        ["psql", url, "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-F", "\t", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"psql failed on {sql!r}: {done.stderr.strip()}")
    return [line.split("\t") for line in done.stdout.splitlines() if line]


class ClusterNode(Server):
    """One node of a cluster: a server with a node id, peers and shared services."""

    def __init__(self, node_id: str, data_dir: Path, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.node_id = node_id

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_exit(self, timeout: float = 30) -> int:
        """Wait for the process to end without signalling it; return its status.

        (`stop` signals a process still running, and a second SIGTERM that lands
        while CPython finalizes, after it restored the default handlers, ends the
        process by the signal instead of its exit status.)
        """
        assert self.process is not None, f"{self.node_id} is not running"
        code = self.process.wait(timeout)
        self.process = None
        return code


class Cluster:
    """Own a scratch database, a key prefix and the nodes that share them."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        postgres_url: str = POSTGRES_URL,
        redis_url: str = REDIS_URL,
        env: dict[str, str] | None = None,
    ) -> None:
        tag = uuid.uuid4().hex[:10]
        self.admin_url = postgres_url
        self.database = f"socmeth_e2e_{tag}"
        self.database_url = with_database(postgres_url, self.database)
        self.redis_url = redis_url
        self.prefix = f"socmeth-e2e-{tag}"
        self.root = root
        psql(self.admin_url, f'CREATE DATABASE "{self.database}"')
        ports = [free_port() for _ in range(size)]
        self.shared_env = shared = {
            "POSTGRES_URL": self.database_url,
            "REDIS_URL": redis_url,
            "SOCMETH_REDIS_PREFIX": self.prefix,
            **(env or {}),
        }
        self.nodes: list[ClusterNode] = []
        for index, port in enumerate(ports):
            node_id = f"n{index + 1}"
            peers = ",".join(f"127.0.0.1:{p}" for p in ports if p != port)
            data_dir = root / node_id
            data_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                ClusterNode(
                    node_id,
                    data_dir,
                    env=shared,
                    args=["--node-id", node_id, "--peers", peers],
                    port=port,
                )
            )

    def extra_node(self, node_id: str) -> ClusterNode:
        """Add a node on a new port, sharing the store and queue, not yet started.

        Its peers are the cluster's other nodes; `close()` cleans it up as well.
        """
        port = free_port()
        peers = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        data_dir = self.root / f"{node_id}-extra{len(self.nodes)}"
        data_dir.mkdir(parents=True, exist_ok=True)
        node = ClusterNode(
            node_id,
            data_dir,
            env=self.shared_env,
            args=["--node-id", node_id, "--peers", peers],
            port=port,
        )
        self.nodes.append(node)
        return node

    def start(self, nodes: Sequence[ClusterNode] | None = None) -> None:
        """Start nodes (all by default) and wait until each is ready."""
        for node in nodes or self.nodes:
            node.start()

    def node(self, node_id: str) -> ClusterNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def alive(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive]

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the API of the first live node that answers."""
        last: Exception | None = None
        for node in self.alive():
            try:
                return node.api(method, path, **kwargs)
            except httpx.TransportError as exc:
                last = exc
        raise AssertionError(f"no node answers {method} {path}: {last}")

    def cluster_state(self) -> dict[str, Any]:
        return dict(self.api("GET", "/api/cluster").json())

    def leader(self) -> ClusterNode | None:
        """Return the node the lease names, if it leads by the store's clock."""
        leader_id = self.cluster_state()["leader"]
        return self.node(leader_id) if leader_id else None

    def wait_for_leader(
        self, *, other_than: str | None = None, timeout: float = 10.0
    ) -> tuple[ClusterNode, float]:
        """Wait for a leader (other than a given node); return it and the wait."""
        started = time.monotonic()
        while True:
            try:
                state = self.cluster_state()
            except (AssertionError, httpx.HTTPError):
                state = {"leader": None}
            leader_id = state["leader"]
            if leader_id and leader_id != other_than:
                return self.node(leader_id), time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"no new leader within {timeout}s (last state {state})"
                )
            time.sleep(0.02)

    def kill(self, node: ClusterNode, sig: int = signal.SIGKILL) -> None:
        """Signal a node and wait for its process to end."""
        assert node.process is not None, f"{node.node_id} is not running"
        node.stop(sig)

    def sql(self, query: str) -> list[list[str]]:
        """Read the cluster's store directly, as a check beside the API."""
        return psql(self.database_url, query)

    @property
    def store_id(self) -> str:
        """The name nodes give the store in the environment of the commands they
        run (`SOCMETH_STORE_ID`, see socmeth.executors.procs)."""
        from socmeth.executors.procs import store_id_of

        return store_id_of(self.database_url)

    def attempt_processes(self) -> list[int]:
        """Return the pids of live processes that nodes started for this store's
        attempts (by the environment they were given), wherever their node is."""
        return [pid for pid, _ in _processes_of_store(self.store_id)]

    def kill_attempt_processes(self) -> list[int]:
        """SIGKILL the process groups of this store's attempt processes, by pid;
        return the pids found. A SIGKILLed node leaves its commands running."""
        found = _processes_of_store(self.store_id)
        for _, group in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        return [pid for pid, _ in found]

    def close(self) -> None:
        """Kill every node, drop the database and delete the prefix's keys."""
        for node in self.nodes:
            if node.process is not None:
                node.process.kill()
                node.process.wait()
            node.client.close()
        self.kill_attempt_processes()
        psql(
            self.admin_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.database}'",
        )
        psql(self.admin_url, f'DROP DATABASE IF EXISTS "{self.database}"')
        delete_redis_prefix(self.redis_url, self.prefix)


def require_cluster_services(redis_url: str = REDIS_URL) -> None:
    """Make sure PostgreSQL and Redis answer: fail in CI, skip elsewhere."""
    import redis

    require_postgres()
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        missing_service(f"Redis at {redis_url} does not answer: {exc}")
    finally:
        client.close()


def delete_redis_prefix(url: str, prefix: str) -> None:
    """Delete every key under a prefix, one SCAN at a time: never FLUSHDB."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass  # a throwaway Redis already gone holds nothing of anybody's
    finally:
        client.close()


def _processes_of_store(store_id: str) -> list[tuple[int, int]]:
    """Return (pid, process group) of live processes whose environment names the
    store: `SOCMETH_STORE_ID`, which socmeth sets on every command it starts."""
    if not PROC.is_dir():
        return []
    wanted = f"SOCMETH_STORE_ID={store_id}".encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and wanted in environ.split(b"\0"):
            found.append((int(entry.name), int(fields[2])))
    return found
