"""Log people into the dashboard: a cookie session with a CSRF token per session.

The session cookie holds an access token from `Authenticator.login`, HttpOnly (no
script reads it) and SameSite=Strict (no other site's request carries it), for the
token's lifetime. Every form of a page carries the session's CSRF token, an HMAC of
the session made with the session itself as the key: only a page that was served
to the session knows it, and `posting.read` refuses a post without the right one.

With auth off there is no session: every visitor is the anonymous admin, and forms
carry no token.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape

from socmeth.api.access import (
    SESSION_COOKIE,
    authenticator_of,
    check_role,
    client_address,
)
from socmeth.auth.errors import AuthError, ForbiddenError, RateLimitedError
from socmeth.auth.models import Principal, Role
from socmeth.ui import posting
from socmeth.ui.pages import Page, error_page, templates

router = APIRouter(include_in_schema=False)

CSRF_FIELD = "csrf"
LOGIN_PAGE = Page("login", "Log in", "login.html", {})


def csrf_token(session: str) -> str:
    """Return the CSRF token of a session."""
    return hmac.new(session.encode(), b"socmeth-csrf", hashlib.sha256).hexdigest()


def csrf_input(request: Request) -> Markup:
    """Write the hidden input that carries the session's CSRF token; nothing
    without a session (auth off)."""
    session = request.cookies.get(SESSION_COOKIE)
    if authenticator_of(request) is None or not session:
        return Markup("")
    token = escape(csrf_token(session))
    return Markup(f'<input type="hidden" name="{CSRF_FIELD}" value="{token}">')


def csrf_valid(request: Request, pairs: list[tuple[str, str]]) -> bool:
    """Tell whether a post carries its session's CSRF token (always with auth off)."""
    if authenticator_of(request) is None:
        return True
    session = request.cookies.get(SESSION_COOKIE)
    given = dict(pairs).get(CSRF_FIELD, "")
    return bool(session) and hmac.compare_digest(given, csrf_token(session or ""))


def viewer_of(request: Request) -> Principal | None:
    """Return who the page is served to, once a route checked it; None before."""
    found: Principal | None = getattr(request.state, "principal", None)
    return found


def may(request: Request, role: str) -> bool:
    """Tell whether the page's viewer may use controls that take `role`."""
    principal = viewer_of(request)
    return principal is not None and principal.may(Role(role))


async def require_viewer(request: Request) -> Principal:
    """Let anyone with a session (or anyone, with auth off) see the dashboard."""
    return await check_role(request, Role.VIEWER)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    """Show the login form; with auth off, there is nothing to log in to."""
    if authenticator_of(request) is None:
        return RedirectResponse("/", status_code=303)
    return _login_form(request, None, request.query_params.get("next", "/"))


@router.post("/login", response_class=HTMLResponse)
async def log_in(request: Request) -> Response:
    """Check the name and password, set the session cookie, go where asked."""
    pairs = await posting.read(request, csrf=False)
    if isinstance(pairs, Response):
        return pairs
    authenticator = authenticator_of(request)
    if authenticator is None:
        return RedirectResponse("/", status_code=303)
    given = dict(pairs)
    try:
        _, issued = await authenticator.login(
            given.get("username", ""),
            given.get("password", ""),
            client_address(request),
        )
    except RateLimitedError as exc:
        return _login_form(request, str(exc), given.get("next", "/"), status=429)
    except AuthError as exc:
        return _login_form(request, str(exc), given.get("next", "/"), status=401)
    response = RedirectResponse(_safe_next(given.get("next", "/")), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        max_age=issued.expires_in,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", response_class=HTMLResponse)
async def log_out(request: Request) -> Response:
    """End the session: drop its cookie. No CSRF token is asked for: a session
    that expired must still be able to log out, and other sites cannot post here
    (SameSiteWrites)."""
    pairs = await posting.read(request, csrf=False)
    if isinstance(pairs, Response):
        return pairs
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def login_redirect(request: Request) -> Response:
    """Send a visitor without a session to the login form, and back after it."""
    target = request.url.path
    if request.url.query:
        target += f"?{request.url.query}"
    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)


def _login_form(
    request: Request, error: str | None, target: str, status: int = 200
) -> Response:
    context = {"page": LOGIN_PAGE, "error": error, "next": _safe_next(target)}
    return templates.TemplateResponse(
        request, "login.html", context, status_code=status
    )


def auth_refusal(request: Request, exc: AuthError) -> Response:
    """Answer a dashboard request that auth refused: the login form for a page,
    401 for a live partial (its script then reloads the page), 403 or 429 pages."""
    if isinstance(exc, ForbiddenError):
        return error_page(request, 403, str(exc), back=("/", "Dashboard"))
    if isinstance(exc, RateLimitedError):
        return error_page(request, 429, str(exc))
    if "partial" in request.query_params or request.method != "GET":
        message = f"Log in again: {exc}"
        return error_page(request, 401, message, back=("/login", "Log in"))
    return login_redirect(request)


def _safe_next(target: str) -> str:
    """Keep a post-login destination on this site: a path, never another host."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/"
    # One leading slash only: browsers read `//host` and `///host` as a host.
    if not target.startswith("/") or target.startswith("//"):
        return "/"
    if not target.isprintable() or any(c.isspace() for c in target):
        return "/"
    return target


templates.env.globals.update(csrf_input=csrf_input, may=may, viewer_of=viewer_of)
