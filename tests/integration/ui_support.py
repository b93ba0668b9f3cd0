"""Build a real node on SQLite for the dashboard's page tests, and make runs on it.

The node's workers are stopped, so runs stay as a test made them; time is a
FakeClock at START, a Monday morning.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from socmeth.api.app import create_app
from socmeth.clock import FakeClock
from socmeth.config import load_config
from socmeth.models import AttemptState, JobDefinition, JobType, Run, RunState
from socmeth.node import Node
from socmeth.store.base import AttemptFinish, AttemptOutcome

START = datetime(2026, 1, 5, 8, 30, tzinfo=UTC)
PEER = "peer-b.example:8080"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """Start a node with its workers stopped, so runs stay as the test made them."""
    config = load_config(
        environ={},
        overrides={
            "server.data_dir": str(tmp_path),
            "workers.shutdown_grace": 0,
            "cluster.peers": PEER,
        },
    )
    node = Node(config, clock=FakeClock(START), node_id="ui-test")
    await node.start()
    assert node.workers is not None
    await node.workers.stop(0)
    yield node
    await node.stop()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def add_job(node: Node, name: str, **fields: object) -> None:
    definition = JobDefinition(name=name, type=JobType.COMMAND, command="true")
    await node.jobs.create(JobDefinition(**{**definition.__dict__, **fields}))


async def run_to(
    node: Node, name: str, state: RunState | None, output: str | None = None
) -> Run:
    """Start a manual run of a job; claim it, and end it in `state` unless None."""
    run = await node.jobs.run_now(await node.jobs.resolve(name))
    batch = await node.store.claim_attempts(
        [run.attempts[-1].id], "ui-test", START, max_running=10
    )
    (claimed,) = batch.claimed
    if state is None:
        return claimed.run
    attempt_state = (
        AttemptState.SUCCEEDED if state is RunState.SUCCEEDED else AttemptState.FAILED
    )
    outcome = AttemptOutcome(
        attempt_state, state, exit_code=0 if state is RunState.SUCCEEDED else 1
    )
    finish = AttemptFinish(claimed.attempt.id, outcome, output=output)
    (ended,) = (await node.store.finish_attempts([finish], START)).runs
    assert ended is not None
    return ended


def section(html: str, name: str) -> str:
    """Return the markup of one live section of a page."""
    match = re.search(
        rf'<div class="live" id="live-{name}"[^>]*>(.*?)</div></section>', html, re.S
    )
    assert match, f"no live section {name!r} in the page"
    return match.group(1)
