"""Decide who is calling, and whether their role may use the route.

With `auth.enabled` false every caller is `ANONYMOUS`, who may do everything (the
server then binds to loopback unless told otherwise, and warns). With it on, a
caller proves who they are with one of:

- `Authorization: Bearer <token>`: an access token from `POST /api/auth/login`, or
  an API token (`smt_...`);
- `Authorization: Basic <base64 name:password>`: checked as a login is, rate
  limits included;
- the dashboard's session cookie, which holds an access token: for the dashboard,
  whose form posts also need the session's CSRF token (`socmeth.ui.session`), and
  for reads of the API; a write to the API with only the cookie is refused.

No credentials is a 401 naming both schemes; a role below the route's is a 403.
Routes declare the role they need with `Viewer`, `Operator` or `Admin`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import Depends, Request

from socmeth.auth.authenticator import Authenticator
from socmeth.auth.errors import AuthError, CredentialsError, ForbiddenError
from socmeth.auth.models import ANONYMOUS, Principal, Role

SESSION_COOKIE = "socmeth_session"
MAX_CREDENTIALS = 8192


class MissingCredentialsError(AuthError):
    """Refuse a call that brings no credentials to a route that needs them."""


def authenticator_of(request: Request) -> Authenticator | None:
    """Return the app's authenticator; None when auth is off."""
    found: Authenticator | None = getattr(request.app.state, "authenticator", None)
    return found


def client_address(request: Request) -> str:
    """Return the address a login attempt is counted against: the peer's.

    Forwarded headers are not read: any client could set them to dodge the limit.
    """
    return request.client.host if request.client else "unknown"


async def principal_of(request: Request) -> Principal:
    """Return who makes the request, checked once and kept for the request."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    authenticator = authenticator_of(request)
    principal = ANONYMOUS if authenticator is None else await _check(request)
    request.state.principal = principal
    return principal


async def _check(request: Request) -> Principal:
    authenticator = authenticator_of(request)
    assert authenticator is not None
    header = request.headers.get("authorization")
    if header is not None:
        return await _from_header(authenticator, header, client_address(request))
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.url.path.startswith("/api/") and not _safe(request):
        # The dashboard's own writes are its forms, which carry the CSRF token; a
        # write to the API must bring its credentials in the header.
        raise MissingCredentialsError(
            "the dashboard's session cookie is taken for reads of the API only; "
            "send writes with Authorization: Bearer or Basic"
        )
    if cookie:
        return await authenticator.authenticate_bearer(cookie)
    raise MissingCredentialsError(
        "this needs credentials: send Authorization: Bearer <token> (from POST "
        "/api/auth/login, or an API token) or Authorization: Basic"
    )


async def _from_header(
    authenticator: Authenticator, header: str, address: str
) -> Principal:
    if len(header) > MAX_CREDENTIALS:
        raise MissingCredentialsError("the Authorization header is too long")
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return await authenticator.authenticate_bearer(credentials)
    if scheme.lower() == "basic" and credentials:
        name, password = _basic(credentials)
        return await authenticator.authenticate_password(name, password, address)
    raise MissingCredentialsError(
        f"the Authorization scheme {scheme!r} is not taken: use Bearer or Basic"
    )


def _safe(request: Request) -> bool:
    return request.method in ("GET", "HEAD", "OPTIONS")


def _basic(credentials: str) -> tuple[str, str]:
    """Read `name:password` from Basic credentials (RFC 7617, UTF-8)."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise MissingCredentialsError(
            "the Basic credentials are not base64 of name:password in UTF-8"
        ) from None
    name, found, password = decoded.partition(":")
    if not found:
        raise CredentialsError()
    return name, password


async def check_role(request: Request, role: Role) -> Principal:
    """Return the caller when their role includes `role`; ForbiddenError else."""
    principal = await principal_of(request)
    if not principal.may(role):
        raise ForbiddenError(
            f"{principal.actor} has the role {principal.role}; this needs {role} "
            "or above"
        )
    return principal


def require(role: Role) -> Any:
    """Return a dependency that lets callers of `role` or above through."""

    async def allowed(request: Request) -> Principal:
        return await check_role(request, role)

    return Depends(allowed)


VIEWER = require(Role.VIEWER)
Viewer = Annotated[Principal, VIEWER]
Operator = Annotated[Principal, require(Role.OPERATOR)]
Admin = Annotated[Principal, require(Role.ADMIN)]
