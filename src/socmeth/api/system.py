"""Serve what operators and their tools poll: liveness, readiness and metrics.

`/healthz` and `/readyz` also answer HEAD, as load balancers often probe with it: the
status and headers of the GET, without its body.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from socmeth.api import NodeDep
from socmeth.api.access import check_role
from socmeth.auth.models import Role
from socmeth.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

router = APIRouter(tags=["system"])


class HeadersOnly(Response):
    """Answer a HEAD request with the status and headers of `response`, no body.

    The Content-Length stays that of the GET's body, as RFC 9110 (9.3.2) asks.
    """

    def __init__(self, response: Response) -> None:
        super().__init__(status_code=response.status_code)
        self.raw_headers = list(response.raw_headers)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Answer while the process serves HTTP, whatever the state of the store."""
    return {"status": "ok"}


@router.head("/healthz", include_in_schema=False)
async def healthz_head() -> Response:
    """Answer HEAD /healthz like GET, without the body."""
    return HeadersOnly(JSONResponse(await healthz()))


@router.get(
    "/readyz",
    responses={503: {"description": "A check failed; `checks` says which."}},
)
async def readyz(node: NodeDep) -> JSONResponse:
    """Say whether this node can do its work: the store answers and its loops run."""
    ready, checks = await node.ready()
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.head("/readyz", include_in_schema=False)
async def readyz_head(node: NodeDep) -> Response:
    """Answer HEAD /readyz like GET, without the body."""
    return HeadersOnly(await readyz(node))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics(node: NodeDep, request: Request) -> Response:
    """Export the node's metrics in the Prometheus text format.

    Open to anyone unless `auth.metrics_public` is false; then it takes the viewer
    role, as the API's reads do.
    """
    if not node.config.auth.metrics_public:
        await check_role(request, Role.VIEWER)
    try:
        await node.metrics.refresh(node.store)
    except Exception:  # a scrape still gets the counters when the store is down
        log.warning(
            "refreshing the stored-state gauges failed; serving the last values",
            exc_info=True,
            extra={"event": "metrics.refresh_failed"},
        )
    return Response(node.metrics.render(), media_type=CONTENT_TYPE)
