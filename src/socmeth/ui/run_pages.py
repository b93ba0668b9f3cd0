"""Route a run's page: its attempts, timings and reason, and live output."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from socmeth.api.access import check_role
from socmeth.auth.models import Role
from socmeth.errors import NotFoundError
from socmeth.node import Node
from socmeth.ui import params, posting
from socmeth.ui.details import load_output, load_run
from socmeth.ui.pages import error_page, make_page, render
from socmeth.ui.sections import Section

router = APIRouter(include_in_schema=False)
NOTICES = {
    "started": "Run started.",
    "cancelled": "Cancel requested: a running attempt is stopped within a second.",
}

RUN = make_page(
    "run",
    "Run",
    Section("run", "Run", load_run),
    Section("output", "Output", load_output),
)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, run_id: str) -> Response:
    """Show a run: state, attempts, timings, reason and the chosen attempt's output."""
    notice = NOTICES.get(request.query_params.get("done", ""))
    return await render(request, RUN, {"notice": notice})


@router.post("/runs/{run_id}/cancel", response_class=HTMLResponse)
async def cancel_run(request: Request, run_id: str) -> Response:
    """Cancel a run; a running attempt is stopped by its worker shortly after."""
    posted = await posting.read(request)
    if isinstance(posted, Response):
        return posted
    principal = await check_role(request, Role.OPERATOR)
    node = cast(Node, request.app.state.node)
    try:
        await node.jobs.cancel(params.run_id(run_id), principal)
    except NotFoundError as exc:
        return error_page(request, 404, str(exc), back=("/", "Dashboard"))
    return RedirectResponse(f"/runs/{run_id}?done=cancelled", status_code=303)
