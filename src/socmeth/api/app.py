"""Build the FastAPI app of one node.

The app does not start or stop the node: tests build it around a node they started,
and `socmeth.server` starts it before serving and stops it after.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from socmeth import __version__, ui
from socmeth.api import auth, cluster, jobs, runs, schedules, system
from socmeth.api.errors import ERROR_RESPONSES, error_response, install_error_handlers
from socmeth.auth.authenticator import Authenticator
from socmeth.node import Node

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Create, change, pause and run jobs; follow their runs and attempts; preview "
    "schedules. Every error has the shape "
    '`{"error": {"status", "message", "fields": [{"field", "message"}]}}`.'
)

# Swagger UI as the fastapi-offline package ships it, served by the node itself:
# /docs then works without internet and tells no CDN who reads it.
DOCS_STATIC_DIR = Path(str(files("fastapi_offline").joinpath("static")))
DOCS_STATIC_URL = "/docs/static"
DOCS_ICON_URL = "/ui/static/icon.svg"


def create_app(node: Node) -> FastAPI:
    """Build the HTTP API around `node`, which the caller starts and stops."""
    app = FastAPI(
        title="socmeth",
        version=__version__,
        description=DESCRIPTION,
        # FastAPI's own pages load their scripts from a CDN; install_docs serves
        # Swagger UI with local ones. ReDoc stays off: its sidebar always loads a
        # logo from cdn.redoc.ly, so no copy of it can be served without that.
        docs_url=None,
        redoc_url=None,
    )
    app.state.node = node
    # None while auth is off: every caller is then anonymous (socmeth.api.access).
    app.state.authenticator = (
        Authenticator.from_config(node.config, node.store, node.clock)
        if node.config.auth.enabled
        else None
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=node.config.server.max_request_bytes)
    app.add_middleware(SameSiteWrites)
    for module in (jobs, runs, schedules, cluster, auth):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.include_router(system.router)
    install_docs(app)
    ui.install(app)
    return app


def install_docs(app: FastAPI) -> None:
    """Serve the OpenAPI document's page, /docs (Swagger UI), with its script and
    styles from this node: FastAPI's documented self-hosting."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    app.mount(DOCS_STATIC_URL, StaticFiles(directory=DOCS_STATIC_DIR), name="docs")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + redirect_url,
            swagger_js_url=f"{root}{DOCS_STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=root + DOCS_ICON_URL,
            # No validator badge, which has validator.swagger.io fetch the document
            # (only the standalone layout shows it; this keeps it off in any).
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def _root_path(request: Request) -> str:
    """Return the prefix a proxy mounts the app under, as FastAPI's own pages do."""
    return str(request.scope.get("root_path", "")).rstrip("/")


class SameSiteWrites:
    """Refuse a write (any method but GET, HEAD, OPTIONS) that a browser says comes
    from another site, with a 403 before any route sees it.

    A page on any site can make a browser send a POST without a body or a form
    (no preflight), which would run or pause a job, or create one through the
    dashboard's forms. Browsers say where such a request comes from: by
    `Sec-Fetch-Site`, else by `Origin`, which must then name this request's host.
    Clients that send neither (curl, scripts) are not browsers, and no page can
    make them send anything.
    """

    SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
    SAME_SITE = frozenset({"same-origin", "none"})

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in self.SAFE_METHODS:
            await self._app(scope, receive, send)
            return
        request = Request(scope, receive)
        why = self._cross_site(request)
        if why is None:
            await self._app(scope, receive, send)
            return

        log.warning(
            "refused a %s of %s from another site: %s",
            request.method,
            request.url.path,
            why,
            extra={"event": "api.cross_site_refused"},
        )
        message = (
            f"this request was refused because {why}: socmeth takes writes from "
            "browsers on its own pages only"
        )
        if ui.wants_page(request):
            await ui.pages.error_page(request, 403, message)(scope, receive, send)
            return
        await error_response(403, message)(scope, receive, send)

    def _cross_site(self, request: Request) -> str | None:
        """Say why the request comes from another site; None when it does not."""
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            return None if site in self.SAME_SITE else f"Sec-Fetch-Site says {site!r}"
        origin = request.headers.get("origin")
        if origin is None:
            return None
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc.lower() == host.lower() and host:
            return None
        return f"it comes from {origin!r}"


class BodyLimit:
    """Refuse a request body over `limit` bytes with a 413 before any route sees it.

    The declared Content-Length is checked first; the body is then read whole (it is
    small by definition) and counted, because a chunked body declares no length. A
    refused request reaches no route, so nothing of it is stored.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        declared = _content_length(scope)
        if declared is not None and declared > self._limit:
            await self._refuse(scope, receive, send, declared)
            return

        body, complete = await self._read_body(receive)
        if not complete:
            return
        if len(body) > self._limit:
            await self._refuse(scope, receive, send, len(body))
            return

        await self._app(scope, _replaying(body, receive), send)

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        """Read the body up to just past the limit; False when the client left."""
        chunks: list[bytes] = []
        size = 0
        while size <= self._limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", False
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), True

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, size: int
    ) -> None:
        log.debug(
            "refused a request body of %s bytes to %s",
            size,
            scope.get("path"),
            extra={"event": "api.body_too_large"},
        )
        message = (
            f"the request body is over {self._limit} bytes, the limit set by "
            "server.max_request_bytes"
        )
        request = Request(scope, receive)
        if ui.wants_page(request):
            page = ui.pages.error_page(
                request, 413, f"The form is too large: {message}"
            )
            await page(scope, receive, send)
            return
        await error_response(413, message)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replaying(body: bytes, receive: Receive) -> Receive:
    """Return a receive that hands out the body read already, then the client's own."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
