"""Run a cluster of real `socmeth serve` processes on loopback, for tests and benches.

A `Cluster` owns a scratch PostgreSQL database and a Redis key prefix of its own,
both removed by `close()`, and N nodes named `n1`, `n2`, ... that list each other as
peers. Nothing here touches data it did not create. The services default to the
machine's (`SOCMETH_TEST_POSTGRES_URL`, `SOCMETH_TEST_REDIS_URL` override them); a
test that restarts a service passes URLs of throwaway instances instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.conftest import missing_service, require_postgres
from tests.e2e.conftest import Server, free_port

POSTGRES_URL = os.environ.get(
    "SOCMETH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/postgres"
)
REDIS_URL = os.environ.get("SOCMETH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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
        psql(self.admin_url, f'CREATE DATABASE "{self.database}"')
        ports = [free_port() for _ in range(size)]
        shared = {
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

    def close(self) -> None:
        """Kill every node, drop the database and delete the prefix's keys."""
        for node in self.nodes:
            if node.process is not None:
                node.process.kill()
                node.process.wait()
            node.client.close()
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
