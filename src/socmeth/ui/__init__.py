"""Serve the web dashboard: server-rendered pages and the partials they refresh.

`install(app)` adds the pages at `/` and our own CSS and JavaScript at
`/ui/static/`. Pages read the node's store directly, through the same `Node` the API
uses, never through the HTTP API. Each live section is a partial template: the page
includes it, and the page's script fetches the same partial (`?partial=NAME`) to
refresh it, so every piece of markup has one source.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.staticfiles import StaticFiles

from socmeth.ui import job_pages, pages, run_pages, session

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add the dashboard's pages and static files to `app`."""
    # Every page takes a session (with auth on); the login form is open.
    for module in (pages, job_pages, run_pages):
        app.include_router(
            module.router, dependencies=[Depends(session.require_viewer)]
        )
    app.include_router(session.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")


def wants_page(request: Request) -> bool:
    """Tell whether an answer to `request` should be a dashboard page, not JSON:
    a browser asking for HTML anywhere but under /api."""
    accepted = request.headers.get("accept", "")
    return "text/html" in accepted and not request.url.path.startswith("/api")
