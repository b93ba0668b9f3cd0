"""Node states as the API shows them: a pure function of the store's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from socmeth.cluster import NodeState, node_states
from socmeth.store.base import Lease, NodeRecord

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def record(node_id: str, silent_s: float, *, stopped: bool = False) -> NodeRecord:
    return NodeRecord(
        id=node_id,
        address=f"{node_id}.local:8080",
        version="0.1.0",
        started_at=NOW - timedelta(hours=1),
        last_heartbeat_at=NOW - timedelta(seconds=silent_s),
        running=2,
        stopped_at=NOW if stopped else None,
    )


LEASE = Lease("a", 4, NOW + timedelta(seconds=1))


def test_a_node_is_up_until_three_seconds_of_silence() -> None:
    states = node_states(
        NOW, [record("a", 0.5), record("b", 3.0), record("c", 3.1)], LEASE
    )
    assert [(s.id, s.state) for s in states] == [
        ("a", NodeState.UP),
        ("b", NodeState.UP),
        ("c", NodeState.DOWN),
    ]


def test_a_node_that_stopped_is_down_at_once() -> None:
    (state,) = node_states(NOW, [record("a", 0.1, stopped=True)], LEASE)
    assert state.state is NodeState.DOWN


def test_the_leader_is_the_holder_of_a_lease_still_running() -> None:
    states = node_states(NOW, [record("a", 0.1), record("b", 0.1)], LEASE)
    assert [s.leader for s in states] == [True, False]

    lapsed = Lease("a", 4, NOW)
    assert not any(s.leader for s in node_states(NOW, [record("a", 0.1)], lapsed))


def test_a_configured_peer_never_seen_is_expected() -> None:
    states = node_states(
        NOW,
        [record("a", 0.1)],
        LEASE,
        peers=["a.local:8080", "b.local:8080", "b.local:8080"],
    )
    assert [(s.id, s.state) for s in states] == [
        ("a", NodeState.UP),
        ("b.local:8080", NodeState.EXPECTED),
    ]
    expected = states[1]
    assert (expected.last_heartbeat_at, expected.version) == (None, None)
