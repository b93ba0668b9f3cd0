"""Start real `socmeth serve` processes on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One `socmeth serve` subprocess with its data dir, log and HTTP client."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.args = args or []
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "socmeth",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.data_dir.parent,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"socmeth serve exited:\n{self.log()}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"socmeth serve did not become ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, **kwargs)

    def wait_for_run(
        self, run_id: int, timeout: float = 20, until: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Poll a run until it reaches a final state (or one of `until`)."""
        final = {
            "succeeded",
            "failed",
            "timed_out",
            "cancelled",
            "skipped",
            "upstream_failed",
        }
        deadline = time.monotonic() + timeout
        while True:
            run: dict[str, Any] = self.api("GET", f"/api/runs/{run_id}").json()
            if run["state"] in (until or final):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['state']}: {run}")
            time.sleep(0.1)


def parse(instant: str) -> datetime:
    """Read an instant the API wrote (ISO 8601 with an offset)."""
    return datetime.fromisoformat(instant.replace("Z", "+00:00"))


def create(server: Server, **job: Any) -> dict[str, Any]:
    """Create a job through the API; fail the test unless it is accepted."""
    response = server.api("POST", "/api/jobs", json=job)
    assert response.status_code == 201, response.text
    return dict(response.json())


def run_now(server: Server, name: str) -> dict[str, Any]:
    """Start a manual run through the API; fail the test unless it is accepted."""
    response = server.api("POST", f"/api/jobs/{name}/run")
    assert response.status_code == 202, response.text
    return dict(response.json())


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def make(env: dict[str, str] | None = None, data_dir: Path | None = None) -> Server:
        server = Server(data_dir or tmp_path / f"data{len(started)}", env)
        server.data_dir.mkdir(exist_ok=True)
        started.append(server)
        return server

    yield make
    for server in started:
        if server.process is not None:
            server.process.kill()
            server.process.wait()
        server.client.close()


@pytest.fixture
def server(server_factory: Any) -> Server:
    started: Server = server_factory()
    started.start()
    return started


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    """Make clusters of real nodes (see tests/e2e/cluster.py); close them after."""
    from tests.e2e.cluster import Cluster, require_cluster_services

    require_cluster_services()
    made: list[Cluster] = []

    def make(size: int = 3, **kwargs: Any) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(made)}", size, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()
