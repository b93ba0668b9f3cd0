"""Hold every API route to its role with auth on, and the credentials to the rules.

A real node on SQLite with `auth.enabled`; users of each role are made through
`socmeth.auth.users`, as the CLI makes them. (The server still refuses to start
with auth on until the dashboard takes logins too; the app enforces it already.)
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi.routing import APIRoute

from socmeth.api import auth, cluster, jobs, runs, schedules, system
from socmeth.api.app import create_app
from socmeth.auth.access_tokens import issue_access_token
from socmeth.auth.models import Principal, PrincipalKind, Role
from socmeth.auth.passwords import Passwords
from socmeth.auth.users import add_user, change_password
from socmeth.clock import FakeClock
from socmeth.config import load_config
from socmeth.node import Node

START = datetime(2026, 1, 5, 8, 30, tzinfo=UTC)
SECRET = "a-test-secret-of-more-than-thirty-two-bytes"
PASSWORDS = {role: f"{role.value}-password-123" for role in Role}
SETUP = Principal(PrincipalKind.COMMAND_LINE, "test", Role.ADMIN)
# Every route of the API and the least role it takes; None: open to anyone.
ROUTES: dict[tuple[str, str], Role | None] = {
    ("GET", "/api/jobs"): Role.VIEWER,
    ("POST", "/api/jobs"): Role.ADMIN,
    ("GET", "/api/jobs/{ref}"): Role.VIEWER,
    ("PUT", "/api/jobs/{ref}"): Role.ADMIN,
    ("DELETE", "/api/jobs/{ref}"): Role.ADMIN,
    ("POST", "/api/jobs/{ref}/run"): Role.OPERATOR,
    ("POST", "/api/jobs/{ref}/pause"): Role.OPERATOR,
    ("POST", "/api/jobs/{ref}/resume"): Role.OPERATOR,
    ("GET", "/api/jobs/{ref}/history"): Role.VIEWER,
    ("GET", "/api/jobs/{ref}/dependencies"): Role.VIEWER,
    ("GET", "/api/runs"): Role.VIEWER,
    ("GET", "/api/runs/{run_id}"): Role.VIEWER,
    ("POST", "/api/runs/{run_id}/cancel"): Role.OPERATOR,
    ("GET", "/api/runs/{run_id}/attempts/{number}/output"): Role.VIEWER,
    ("GET", "/api/schedules/preview"): Role.VIEWER,
    ("GET", "/api/nodes"): Role.VIEWER,
    ("GET", "/api/cluster"): Role.VIEWER,
    ("POST", "/api/auth/login"): None,
    ("GET", "/api/auth/me"): Role.VIEWER,
    ("POST", "/api/tokens"): Role.ADMIN,
    ("GET", "/api/tokens"): Role.ADMIN,
    ("DELETE", "/api/tokens/{token_id}"): Role.ADMIN,
    ("GET", "/api/audit"): Role.ADMIN,
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,
}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/jobs"): {"name": "made", "command": "true"},
    ("PUT", "/api/jobs/{ref}"): {"description": "changed"},
    ("POST", "/api/tokens"): {"name": "ci", "role": "viewer"},
    ("POST", "/api/auth/login"): {
        "username": "viewer",
        "password": PASSWORDS[Role.VIEWER],
    },
}
PARAMS = {"/api/schedules/preview": {"schedule": "@daily"}}


def make_config(tmp_path: Path, **auth: object) -> Any:
    overrides = {
        "server.data_dir": str(tmp_path),
        "workers.shutdown_grace": 0,
        "auth.enabled": True,
        "auth.jwt_secret": SECRET,
        **{f"auth.{key}": value for key, value in auth.items()},
    }
    return load_config(environ={}, overrides=overrides)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(make_config(tmp_path), clock=FakeClock(START), node_id="auth-test")
    await node.start()
    assert node.workers is not None
    await node.workers.stop(0)
    passwords = Passwords()
    for role, password in PASSWORDS.items():
        await add_user(node.store, passwords, role.value, role, password, SETUP, START)
    yield node
    await node.stop()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def bearer(role: Role) -> dict[str, str]:
    token = issue_access_token(
        SECRET.encode(), role.value, role, START, timedelta(hours=1)
    ).token
    return {"authorization": f"Bearer {token}"}


def basic(name: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"authorization": f"Basic {pair}"}


async def call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    concrete = (
        path.replace("{ref}", "target")
        .replace("{run_id}", "1")
        .replace("{number}", "1")
        .replace("{token_id}", "1")
    )
    return await client.request(
        method,
        concrete,
        headers=headers,
        json=BODIES.get((method, path)),
        params=PARAMS.get(path),
    )


def test_the_table_names_every_route_of_the_api() -> None:
    served = {
        (method, route.path)
        for module in (jobs, runs, schedules, cluster, auth, system)
        for route in module.router.routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods
    }
    assert served == set(ROUTES)


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
async def test_each_route_refuses_anonymous_callers_and_roles_below_it(
    client: httpx.AsyncClient, node: Node, method: str, path: str
) -> None:
    await client.post(
        "/api/jobs",
        json={"name": "target", "command": "true"},
        headers=bearer(Role.ADMIN),
    )
    least = ROUTES[(method, path)]

    anonymous = await call(client, method, path, {})
    if least is None:
        assert anonymous.status_code not in (401, 403), anonymous.text
        return
    assert anonymous.status_code == 401, anonymous.text
    assert "Bearer" in anonymous.headers["www-authenticate"]
    assert "Basic" in anonymous.headers["www-authenticate"]

    for role in Role:
        response = await call(client, method, path, bearer(role))
        if role.includes(least):
            assert response.status_code not in (401, 403), (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert least.value in response.json()["error"]["message"]


async def test_an_admin_creates_a_job_with_basic_or_bearer(
    client: httpx.AsyncClient,
) -> None:
    by_basic = await client.post(
        "/api/jobs",
        json={"name": "by-basic", "command": "true"},
        headers=basic("admin", PASSWORDS[Role.ADMIN]),
    )
    assert by_basic.status_code == 201, by_basic.text
    login = await client.post(
        "/api/auth/login",
        json={"username": "admin", "password": PASSWORDS[Role.ADMIN]},
    )
    assert login.status_code == 200
    body = login.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    by_bearer = await client.post(
        "/api/jobs",
        json={"name": "by-bearer", "command": "true"},
        headers={"authorization": f"Bearer {body['access_token']}"},
    )
    assert by_bearer.status_code == 201, by_bearer.text


async def test_a_viewer_reads_but_may_not_run_or_delete(
    client: httpx.AsyncClient,
) -> None:
    await client.post(
        "/api/jobs",
        json={"name": "seen", "command": "true"},
        headers=bearer(Role.ADMIN),
    )
    viewer = basic("viewer", PASSWORDS[Role.VIEWER])
    assert (await client.get("/api/jobs/seen", headers=viewer)).status_code == 200
    assert (await client.post("/api/jobs/seen/run", headers=viewer)).status_code == 403
    assert (await client.delete("/api/jobs/seen", headers=viewer)).status_code == 403


def forged(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    base = {
        "sub": "admin",
        "role": "admin",
        "iss": "socmeth",
        "aud": "socmeth-api",
        "iat": int(START.timestamp()),
        "exp": int((START + timedelta(hours=1)).timestamp()),
        "jti": "x",
    }
    return jwt.encode({**base, **claims}, key, algorithm=algorithm)


def unsigned(claims: dict[str, Any]) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
    token = forged(claims).split(".")[1]
    return f"{header.decode()}.{token}."


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(
            forged({}, key="another-secret-of-more-than-32-bytes!!"), id="forged"
        ),
        pytest.param(
            forged({"exp": int((START - timedelta(seconds=1)).timestamp())}),
            id="expired",
        ),
        pytest.param(forged({"aud": "someone-else"}), id="audience"),
        pytest.param(forged({"iss": "evil"}), id="issuer"),
        pytest.param(unsigned({}), id="alg-none"),
        pytest.param(
            forged({"role": "admin", "sub": "viewer"})[:-2] + "xx", id="tampered"
        ),
        pytest.param("not.a.token", id="garbage"),
    ],
)
async def test_bad_access_tokens_are_refused(
    client: httpx.AsyncClient, token: str
) -> None:
    response = await client.get(
        "/api/jobs", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401, response.text


async def test_a_token_of_another_algorithm_is_refused(
    client: httpx.AsyncClient,
) -> None:
    # Only HS256 is taken, whatever the token's header says it is.
    token = forged({}, key=SECRET * 2, algorithm="HS512")
    response = await client.get(
        "/api/jobs", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert "HS256" in response.json()["error"]["message"]


async def test_api_tokens_are_shown_once_work_and_can_be_revoked(
    client: httpx.AsyncClient, node: Node
) -> None:
    created = await client.post(
        "/api/tokens",
        json={"name": "deploy", "role": "operator"},
        headers=bearer(Role.ADMIN),
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token.startswith("smt_")
    auth = {"authorization": f"Bearer {token}"}
    assert (await client.get("/api/jobs", headers=auth)).status_code == 200
    listed = (await client.get("/api/tokens", headers=bearer(Role.ADMIN))).json()
    assert token not in str(listed)
    (shown,) = listed["items"]
    assert shown["last_used_at"] is not None

    revoked = await client.delete(
        f"/api/tokens/{shown['id']}", headers=bearer(Role.ADMIN)
    )
    assert revoked.status_code == 200
    assert (await client.get("/api/jobs", headers=auth)).status_code == 401


async def test_changes_are_in_the_audit_records_with_who_made_them(
    client: httpx.AsyncClient,
) -> None:
    admin, operator = bearer(Role.ADMIN), bearer(Role.OPERATOR)
    await client.post(
        "/api/jobs", json={"name": "audited", "command": "true"}, headers=admin
    )
    await client.put("/api/jobs/audited", json={"retries": 2}, headers=admin)
    await client.post("/api/jobs/audited/pause", headers=operator)
    await client.post("/api/jobs/audited/resume", headers=operator)
    await client.post("/api/jobs/audited/run", headers=operator)
    await client.delete("/api/jobs/audited", headers=admin)

    page = (
        await client.get("/api/audit", params={"target": "audited"}, headers=admin)
    ).json()

    seen = [(r["action"], r["actor"]) for r in reversed(page["items"])]
    assert seen == [
        ("job.created", "admin"),
        ("job.updated", "admin"),
        ("job.paused", "operator"),
        ("job.resumed", "operator"),
        ("job.run", "operator"),
        ("job.deleted", "admin"),
    ]
    updated = next(r for r in page["items"] if r["action"] == "job.updated")
    assert updated["detail"]["fields"] == ["retries"]


async def test_logins_are_rate_limited_and_passwords_never_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="socmeth")
    wrong = {"username": "operator", "password": "not-the-password-1"}
    statuses = [
        (await client.post("/api/auth/login", json=wrong)).status_code for _ in range(6)
    ]
    assert statuses[:5] == [401] * 5
    assert statuses[5] == 429
    limited = await client.post(
        "/api/auth/login",
        json={"username": "operator", "password": PASSWORDS[Role.OPERATOR]},
    )
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0

    ok = await client.post(
        "/api/auth/login", json={"username": "admin", "password": PASSWORDS[Role.ADMIN]}
    )
    assert ok.status_code == 200
    for password in (*PASSWORDS.values(), "not-the-password-1"):
        assert password not in caplog.text
        assert password not in ok.text


async def test_metrics_can_be_closed_to_anonymous_callers(tmp_path: Path) -> None:
    node = Node(
        make_config(tmp_path, metrics_public=False), clock=FakeClock(START), node_id="m"
    )
    await node.start()
    try:
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/metrics")).status_code == 401
            assert (await c.get("/healthz")).status_code == 200
    finally:
        await node.stop()


async def test_logins_sent_all_at_once_cannot_pass_the_limit(
    client: httpx.AsyncClient,
) -> None:
    wrong = {"username": "viewer", "password": "not-the-password-9"}
    answers = await asyncio.gather(
        *(client.post("/api/auth/login", json=wrong) for _ in range(12))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(401) == 5  # auth.login_failures_per_user
    assert statuses.count(429) == 7


async def test_an_access_token_of_the_second_of_a_password_change_is_refused(
    client: httpx.AsyncClient, node: Node
) -> None:
    clock = node.clock
    assert isinstance(clock, FakeClock)
    clock.advance(10.2)
    token = issue_access_token(
        SECRET.encode(), "operator", Role.OPERATOR, clock.now(), timedelta(hours=1)
    ).token
    clock.advance(0.3)  # the change comes in the same second, after the token
    await change_password(
        node.store, Passwords(), "operator", "a-new-password-456", SETUP, clock.now()
    )
    me = await client.get("/api/auth/me", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 401


async def test_an_api_token_may_not_make_api_tokens(
    client: httpx.AsyncClient,
) -> None:
    made = await client.post(
        "/api/tokens",
        json={"name": "root", "role": "admin"},
        headers=bearer(Role.ADMIN),
    )
    token = made.json()["token"]
    again = await client.post(
        "/api/tokens",
        json={"name": "child", "role": "admin"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert again.status_code == 403
