"""Run three real nodes on PostgreSQL and Redis: membership, leadership, failover."""

from __future__ import annotations

from typing import Any

import pytest

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
