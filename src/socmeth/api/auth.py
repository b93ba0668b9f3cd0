"""Serve logins, the caller's own identity, API tokens and the audit records.

`POST /api/auth/login` is the one route open to anonymous callers while auth is
on; the token routes and the audit records take the admin role.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from socmeth.api import NodeDep
from socmeth.api.access import Admin, Viewer, authenticator_of, client_address
from socmeth.api.params import QueryText
from socmeth.api.schemas import DEFAULT_PAGE, MAX_PAGE, Instant
from socmeth.auth import api_tokens
from socmeth.auth.errors import ForbiddenError
from socmeth.auth.models import ApiToken, AuditRecord, PrincipalKind, Role
from socmeth.errors import ConflictError
from socmeth.store.base import AuditFilter

router = APIRouter(prefix="/api", tags=["auth"])

MAX_TOKEN_LIFE_S = 10 * 366 * 24 * 3600


class LoginIn(BaseModel):
    """The body of POST /api/auth/login."""

    model_config = ConfigDict(extra="forbid")

    username: StrictStr = Field(min_length=1, max_length=64)
    password: StrictStr = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid.")


class MeOut(BaseModel):
    """Who the caller is: a user, an API token, or anonymous while auth is off."""

    name: str
    kind: str
    role: Role
    auth_enabled: bool


class TokenIn(BaseModel):
    """The body of POST /api/tokens."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=64)
    role: Role
    expires_in: int | None = Field(
        None, ge=60, le=MAX_TOKEN_LIFE_S, description="Seconds; null: never expires."
    )


class TokenOut(BaseModel):
    """An API token as stored: never the token itself."""

    id: int
    name: str
    role: Role
    created_by: str
    created_at: Instant
    last_used_at: Instant | None
    expires_at: Instant | None
    revoked_at: Instant | None


class CreatedTokenOut(TokenOut):
    token: str = Field(description="The token itself: shown this once, never again.")


class TokenPage(BaseModel):
    items: list[TokenOut]


class AuditOut(BaseModel):
    id: int
    at: Instant
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


@router.post("/auth/login")
async def login(request: Request, body: LoginIn, response: Response) -> LoginOut:
    """Trade a user's name and password for an access token (a JWT, HS256).

    401 for a wrong name or password (one message for both), 429 with Retry-After
    after too many failures for the name or from the address.
    """
    authenticator = authenticator_of(request)
    if authenticator is None:
        raise ConflictError(
            "authentication is off (auth.enabled: false): every request is taken "
            "without credentials, and there is nothing to log in to"
        )
    _, issued = await authenticator.login(
        body.username, body.password, client_address(request)
    )
    response.headers["Cache-Control"] = "no-store"
    return LoginOut(access_token=issued.token, expires_in=issued.expires_in)


@router.get("/auth/me")
async def me(request: Request, principal: Viewer) -> MeOut:
    """Say who the credentials of this request belong to, and their role."""
    return MeOut(
        name=principal.actor,
        kind=principal.kind.value,
        role=principal.role,
        auth_enabled=authenticator_of(request) is not None,
    )


@router.post("/tokens", status_code=201)
async def create_token(
    node: NodeDep, body: TokenIn, principal: Admin, response: Response
) -> CreatedTokenOut:
    """Create an API token for automation; the token is in this answer only.

    Role: admin. 409 when the name was ever used, by a revoked token too.
    """
    if principal.kind is PrincipalKind.API_TOKEN:
        raise ForbiddenError(
            "an API token may not create API tokens: an admin creates them while "
            "logged in, so that revoking a token ends what it can do"
        )
    now = node.clock.now()
    expires_at = None
    if body.expires_in is not None:
        expires_at = now + timedelta(seconds=body.expires_in)
    created = await api_tokens.create_api_token(
        node.store, body.name, body.role, principal, now, expires_at=expires_at
    )
    response.headers["Cache-Control"] = "no-store"
    return CreatedTokenOut(token=created.secret, **_token_fields(created.token))


@router.get("/tokens")
async def list_tokens(node: NodeDep, _: Admin) -> TokenPage:
    """List the API tokens with their last use, revoked ones included. Role: admin."""
    tokens = await node.store.list_api_tokens()
    return TokenPage(items=[TokenOut(**_token_fields(t)) for t in tokens])


@router.delete("/tokens/{token_id}")
async def revoke_token(node: NodeDep, token_id: int, principal: Admin) -> TokenOut:
    """Revoke an API token: it is refused from now on. Role: admin."""
    revoked = await api_tokens.revoke_api_token(
        node.store, token_id, principal, node.clock.now()
    )
    return TokenOut(**_token_fields(revoked))


@router.get("/audit")
async def list_audit(
    node: NodeDep,
    _: Admin,
    action: Annotated[QueryText | None, Query(max_length=64)] = None,
    actor: Annotated[QueryText | None, Query(max_length=200)] = None,
    target: Annotated[QueryText | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> AuditPage:
    """List audit records newest first: who created, changed, deleted, ran, paused
    or resumed which job, cancelled which run, and changes of users and tokens.
    Role: admin."""
    audit_filter = AuditFilter(action=action, actor=actor, target=target)
    page = await node.store.list_audit(audit_filter, limit, cursor)
    return AuditPage(
        items=[_audit_out(record) for record in page.items],
        next_cursor=page.next_cursor,
    )


def _token_fields(token: ApiToken) -> dict[str, Any]:
    fields: dict[str, datetime | int | str | Role | None] = {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "created_by": token.created_by,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
    }
    return fields


def _audit_out(record: AuditRecord) -> AuditOut:
    return AuditOut(
        id=record.id,
        at=record.at,
        actor=record.actor,
        action=record.action,
        target=record.target,
        detail=dict(record.detail),
    )
