"""Serve socmeth's HTTP API: jobs, runs, schedule previews, health and metrics.

`socmeth.api.app.create_app` builds the app around a node. Routes reach the node
through `NodeDep`, defined here so that every route module shares it without
importing the app.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from socmeth.node import Node


def get_node(request: Request) -> Node:
    """Return the node the app was built around."""
    return cast(Node, request.app.state.node)


NodeDep = Annotated[Node, Depends(get_node)]
