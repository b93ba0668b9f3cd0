"""Route the dashboard's pages: the dashboard, the jobs list and the nodes.

Each page is a list of sections (`sections.Section`); `?partial=NAME` answers one
section's partial alone. A bad query parameter answers an HTML page that names it,
with the API's status for it (422).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from socmeth.errors import FieldError, NotFoundError, StoreError, ValidationError
from socmeth.node import Node
from socmeth.ui import params
from socmeth.ui.sections import (
    Context,
    Section,
    load_active,
    load_chart,
    load_failures,
    load_history,
    load_jobs,
    load_nodes,
    load_summary,
)
from socmeth.ui.templating import build_templates

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
JOB_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,199}")
templates = build_templates()


@dataclass(frozen=True)
class Page:
    """Name a page: its template, title and live sections."""

    name: str
    title: str
    template: str
    sections: Mapping[str, Section]


def make_page(name: str, title: str, *sections: Section) -> Page:
    return Page(name, title, f"{name}.html", {s.name: s for s in sections})


DASHBOARD = make_page(
    "dashboard",
    "Dashboard",
    Section("summary", "Summary", load_summary),
    Section("active", "Active runs", load_active),
    Section("failures", "Failures", load_failures),
    Section("chart", "Runs in the last 24 hours", load_chart),
    Section("health", "Nodes", load_nodes),
    Section("history", "Recent runs", load_history),
)
JOBS = make_page("jobs", "Jobs", Section("jobs", "Jobs", load_jobs))
NODES = make_page("nodes", "Nodes", Section("nodes", "Nodes", load_nodes))


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request) -> Response:
    """Show active runs, failures, recent runs, node health and counts."""
    return await render(request, DASHBOARD)


@router.get("/jobs", response_class=HTMLResponse)
async def jobs(request: Request) -> Response:
    """List jobs by name, searched and filtered by state and tag, a page at a time.

    `?deleted=NAME` says that job was deleted: the delete form lands here.
    """
    deleted = request.query_params.get("deleted", "")
    # Only a job's name is echoed back, never any text a link could carry.
    shown = deleted if JOB_NAME.fullmatch(deleted) else None
    return await render(request, JOBS, {"deleted": shown})


@router.get("/nodes", response_class=HTMLResponse)
async def nodes(request: Request) -> Response:
    """List the nodes with their state, the leader and their heartbeats."""
    return await render(request, NODES)


async def render(
    request: Request, page: Page, extra: Mapping[str, object] | None = None
) -> Response:
    """Render a page, or the one section `?partial=` names.

    Loaders read the path's parameters (a job's name) and the query's, the path's
    first; `extra` adds to what the page's own template is given.
    """
    node = cast(Node, request.app.state.node)
    query = request.query_params
    given: Mapping[str, str] = {**query, **request.path_params}
    try:
        partial = params.optional_choice(query, "partial", page.sections)
        chosen = [page.sections[partial]] if partial else list(page.sections.values())
        context: Context = {}
        for section in chosen:
            context.update(await section.load(node, given))
    except ValidationError as exc:
        return error_page(request, 422, "A query parameter is invalid", exc.errors)
    except NotFoundError as exc:
        return error_page(request, 404, str(exc), back=("/jobs", "All jobs"))
    except StoreError as exc:
        log.warning(
            "the store failed while rendering %s: %s",
            request.url.path,
            exc,
            extra={"event": "ui.store_failed"},
        )
        return error_page(request, 503, f"The store is unavailable: {exc}; retry")

    if partial is not None:
        return templates.TemplateResponse(request, chosen[0].template, context)
    context.update(extra or {})
    context.update(page=page, live_src=_live_sources(request, page))
    return templates.TemplateResponse(request, page.template, context)


def _live_sources(request: Request, page: Page) -> dict[str, str]:
    """Return the URL each section refreshes from: this page's query plus partial."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "partial"]
    return {
        name: f"{request.url.path}?{urlencode([*kept, ('partial', name)])}"
        for name in page.sections
    }


def error_page(
    request: Request,
    status: int,
    message: str,
    fields: Sequence[FieldError] = (),
    back: tuple[str, str] | None = None,
) -> Response:
    """Render the error page: the status, what failed, each bad parameter, and a
    way back (by default this path without its query)."""
    path = request.url.path
    href, label = back or (path, f"Back to {path} without the parameters")
    context = {
        "status": status,
        "message": message,
        "fields": list(fields),
        "back_href": href,
        "back_label": label,
    }
    return templates.TemplateResponse(
        request, "error.html", context, status_code=status
    )
