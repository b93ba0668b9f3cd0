"""Run three real nodes on PostgreSQL and Redis: membership, leadership, failover."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.conftest import create, run_now

pytestmark = pytest.mark.slow


def test_three_nodes_list_each_other_up_with_one_leader(cluster_factory: Any) -> None:
    cluster = cluster_factory(3)
    cluster.start()
    leader, _ = cluster.wait_for_leader()

    for node in cluster.nodes:
        items = node.api("GET", "/api/nodes").json()["items"]
        assert {i["id"]: i["state"] for i in items} == {
            "n1": "up",
            "n2": "up",
            "n3": "up",
        }
        assert [i["id"] for i in items if i["leader"]] == [leader.node_id]
    state = cluster.cluster_state()
    assert state["nodes"] == {"up": 3, "down": 0, "expected": 0}


def test_a_configured_peer_that_never_joined_is_listed_expected(
    cluster_factory: Any,
) -> None:
    cluster = cluster_factory(3)
    absent = cluster.node("n3")
    cluster.start(cluster.nodes[:2])
    cluster.wait_for_leader()
    peer = f"127.0.0.1:{absent.port}"

    for node in cluster.nodes[:2]:
        items = {i["id"]: i for i in node.api("GET", "/api/nodes").json()["items"]}
        assert {k: i["state"] for k, i in items.items()} == {
            "n1": "up",
            "n2": "up",
            peer: "expected",
        }
        assert items[peer] == {
            "id": peer,
            "address": peer,
            "state": "expected",
            "leader": False,
            "started_at": None,
            "last_heartbeat_at": None,
            "version": None,
            "running": 0,
        }
    assert cluster.cluster_state()["nodes"] == {"up": 2, "down": 0, "expected": 1}

    # Once it joins, it is listed by its id, up, and nothing is expected any more.
    cluster.start([absent])
    items = cluster.api("GET", "/api/nodes").json()["items"]
    assert {i["id"]: i["state"] for i in items} == {"n1": "up", "n2": "up", "n3": "up"}
    assert cluster.cluster_state()["nodes"] == {"up": 3, "down": 0, "expected": 0}


def test_a_second_node_with_the_id_of_a_node_up_is_refused(
    cluster_factory: Any,
) -> None:
    cluster = cluster_factory(2)
    cluster.start()
    cluster.wait_for_leader()
    before = cluster.cluster_state()
    original = cluster.node("n1")

    twin = cluster.extra_node("n1")
    with pytest.raises(AssertionError, match="socmeth serve exited"):
        twin.start()
    assert twin.process is not None
    assert twin.process.returncode == 2, twin.log()
    message = twin.log()
    assert "config cluster.node_id" in message, message
    assert f"'n1' is already up at 127.0.0.1:{original.port}" in message, message
    assert "Traceback" not in message, message

    # The refused node touched nothing: n1 is still up at its own address, and the
    # lease is where it was.
    items = {i["id"]: i for i in cluster.api("GET", "/api/nodes").json()["items"]}
    assert {k: i["state"] for k, i in items.items()} == {"n1": "up", "n2": "up"}
    assert items["n1"]["address"] == f"127.0.0.1:{original.port}"
    after = cluster.cluster_state()
    assert (after["leader"], after["term"]) == (before["leader"], before["term"])
    assert original.api("GET", "/readyz").status_code == 200


def peak_overlap(spans: list[tuple[float, float]], shrink: float = 0.0) -> int:
    """Return the most spans open at once, each cut by `shrink` at both ends.

    The cut keeps apart spans that only touch: a node records an attempt's start
    just before its claim commits and its end just before the finish commits, so
    the next attempt's start may precede the last one's end by a few ms.
    """
    events = []
    for start, end in spans:
        events += [(start + shrink, 1), (end - shrink, -1)]
    peak = open_now = 0
    for _, step in sorted(events):  # at a tie an end (-1) goes first
        open_now += step
        peak = max(peak, open_now)
    return peak


def attempt_spans(cluster: Cluster) -> list[tuple[str, float, float, str]]:
    """Return (node, start, end, state) of every attempt, from the attempts table."""
    rows = cluster.sql(
        "SELECT node_id, extract(epoch FROM started_at), "
        "extract(epoch FROM finished_at), state FROM attempts ORDER BY id"
    )
    return [(node, float(start), float(end), state) for node, start, end, state in rows]


def run_sleepers(cluster: Cluster, count: int, seconds: int) -> list[Counter[str]]:
    """Start `count` runs of `sleep` at once through several nodes; sample the
    running runs by node (GET /api/runs?state=running) until all have ended, and
    check that each succeeded at its first attempt."""
    ids = []
    for index in range(count):
        node = cluster.nodes[index % len(cluster.nodes)]
        create(node, name=f"sleeper-{index}", command=f"sleep {seconds}")
        ids.append(run_now(node, f"sleeper-{index}")["id"])
    samples: list[Counter[str]] = []
    deadline = time.monotonic() + count * seconds + 30
    while True:
        response = cluster.api("GET", "/api/runs", params={"state": "running"})
        assert response.status_code == 200, response.text
        running = response.json()["items"]
        assert {r["state"] for r in running} <= {"running"}, running
        samples.append(Counter(r["attempts"][-1]["node_id"] for r in running))
        active = cluster.api("GET", "/api/runs", params={"state": "queued,running"})
        if not active.json()["items"]:
            break
        assert time.monotonic() < deadline, f"runs still active: {active.json()}"
        time.sleep(0.1)
    runs = cluster.api("GET", "/api/runs", params={"limit": 200}).json()["items"]
    assert sorted(r["id"] for r in runs) == sorted(ids)
    assert {r["state"] for r in runs} == {"succeeded"}, runs
    assert all(len(r["attempts"]) == 1 for r in runs), runs
    return samples


def test_max_concurrent_jobs_caps_running_attempts_across_the_cluster(
    cluster_factory: Any,
) -> None:
    # Two slots per node: a node holds at most two messages, so the others get
    # some of the six and the cap must hold across nodes (six slots in all).
    cluster = cluster_factory(
        3,
        env={
            "SOCMETH_SCHEDULER_MAX_CONCURRENT_JOBS": "2",
            "SOCMETH_WORKERS_COUNT": "2",
        },
    )
    cluster.start()
    cluster.wait_for_leader()

    samples = run_sleepers(cluster, 6, 3)

    assert max(sum(s.values()) for s in samples) <= 2, samples
    spans = attempt_spans(cluster)
    assert len(spans) == 6
    # Never more than two at once, by the attempts' own times; and two at once
    # indeed: the cap, not a stall, is what held them.
    assert peak_overlap([(s, e) for _, s, e, _ in spans], shrink=0.2) == 2, spans
    assert len({node for node, *_ in spans}) >= 2, spans


def test_workers_count_caps_each_node(cluster_factory: Any) -> None:
    cluster = cluster_factory(3, env={"SOCMETH_WORKERS_COUNT": "1"})
    cluster.start()
    cluster.wait_for_leader()

    samples = run_sleepers(cluster, 6, 2)

    assert max(max(s.values(), default=0) for s in samples) <= 1, samples
    spans = attempt_spans(cluster)
    by_node: dict[str, list[tuple[float, float]]] = {}
    for node, start, end, _ in spans:
        by_node.setdefault(node, []).append((start, end))
    for node, node_spans in by_node.items():
        assert peak_overlap(node_spans, shrink=0.2) == 1, (node, node_spans)
    # One at a time per node, not one at a time in the cluster.
    assert peak_overlap([(s, e) for _, s, e, _ in spans], shrink=0.2) >= 2, spans
