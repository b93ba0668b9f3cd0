"""Serve the cluster as the store sees it: its nodes, who leads, the queue size.

Node states are read by the store's clock (`cluster.node_states`): up while its
heartbeats are fresh, down after 3 s of silence or a clean stop, expected for a
configured peer never seen.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from socmeth.api import NodeDep
from socmeth.api.access import VIEWER
from socmeth.api.schemas import Instant
from socmeth.cluster import NodeState, NodeStatus, node_states
from socmeth.node import Node
from socmeth.store.base import Lease

router = APIRouter(prefix="/api", tags=["cluster"], dependencies=[VIEWER])


class NodeOut(BaseModel):
    """One node: `expected` nodes (configured peers never seen) have no times."""

    id: str
    address: str
    state: NodeState
    leader: bool
    started_at: Instant | None
    last_heartbeat_at: Instant | None
    version: str | None
    running: int


class NodePage(BaseModel):
    """Every node, by id; one page always, in the shape of the other collections."""

    items: list[NodeOut]
    next_cursor: str | None = None


class NodeCounts(BaseModel):
    up: int
    down: int
    expected: int


class ClusterOut(BaseModel):
    """Who leads and in which term, until when; the queue size and node counts."""

    leader: str | None
    term: int
    lease_expires_at: Instant | None
    queue_size: int
    nodes: NodeCounts


async def _read(node: Node) -> tuple[datetime, list[NodeStatus], Lease]:
    now, records = await node.store.list_nodes()
    _, lease = await node.store.current_lease()
    return now, node_states(now, records, lease, node.config.cluster.peers), lease


@router.get("/nodes")
async def list_nodes(node: NodeDep) -> NodePage:
    """List the nodes that ever joined, with their state and the leader."""
    _, statuses, _ = await _read(node)
    return NodePage(items=[_node_out(status) for status in statuses])


@router.get("/cluster")
async def cluster(node: NodeDep) -> ClusterOut:
    """Say who leads, the term, when the lease lapses, and the queue size."""
    now, statuses, lease = await _read(node)
    leader = lease.leader_at(now)
    return ClusterOut(
        leader=leader,
        term=lease.term,
        lease_expires_at=lease.expires_at if leader else None,
        queue_size=await node.store.queued_count(),
        nodes=NodeCounts(
            up=sum(s.state is NodeState.UP for s in statuses),
            down=sum(s.state is NodeState.DOWN for s in statuses),
            expected=sum(s.state is NodeState.EXPECTED for s in statuses),
        ),
    )


def _node_out(status: NodeStatus) -> NodeOut:
    return NodeOut.model_validate(status, from_attributes=True)
