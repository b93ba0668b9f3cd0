"""Log into the dashboard with auth on: the session cookie, CSRF, roles on pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from socmeth.api.app import create_app
from socmeth.auth.models import Role
from socmeth.auth.passwords import Passwords
from socmeth.auth.users import add_user
from socmeth.clock import FakeClock
from socmeth.models import JobDefinition, JobType
from socmeth.node import Node
from socmeth.store.base import AuditFilter
from tests.integration.test_api_auth import PASSWORDS, SETUP, START, make_config


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(make_config(tmp_path), clock=FakeClock(START), node_id="ui-auth")
    await node.start()
    assert node.workers is not None
    await node.workers.stop(0)
    passwords = Passwords()
    for role, password in PASSWORDS.items():
        await add_user(node.store, passwords, role.value, role, password, SETUP, START)
    await node.jobs.create(
        JobDefinition(name="nightly", type=JobType.COMMAND, command="true")
    )
    yield node
    await node.stop()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"accept": "text/html"}
    ) as client:
        yield client


async def log_in(client: httpx.AsyncClient, role: Role) -> None:
    response = await client.post(
        "/login",
        data={"username": role.value, "password": PASSWORDS[role], "next": "/jobs"},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/jobs"


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "no CSRF token in the page"
    return found[1]


async def test_pages_ask_for_a_login_and_partials_answer_401(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/jobs/nightly")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fjobs%2Fnightly"
    partial = await client.get("/?partial=summary")
    assert partial.status_code == 401
    form = await client.get("/login")
    assert form.status_code == 200
    assert 'name="password" type="password"' in form.text
    # The API keeps its JSON 401.
    api = await client.get("/api/jobs")
    assert api.status_code == 401
    assert api.headers["content-type"].startswith("application/json")


async def test_a_login_sets_an_http_only_same_site_session(
    client: httpx.AsyncClient,
) -> None:
    wrong = await client.post(
        "/login", data={"username": "admin", "password": "not-the-password"}
    )
    assert wrong.status_code == 401
    assert "wrong" in wrong.text
    assert "socmeth_session" not in client.cookies

    response = await client.post(
        "/login", data={"username": "admin", "password": PASSWORDS[Role.ADMIN]}
    )

    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    page = await client.get("/")
    assert page.status_code == 200
    assert "admin" in page.text
    assert "Log out" in page.text
    for password in PASSWORDS.values():
        assert password not in page.text


async def test_a_login_never_sends_anyone_to_another_site(
    client: httpx.AsyncClient,
) -> None:
    for target in (
        "//evil.example/",
        "///evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\tevil",
    ):
        response = await client.post(
            "/login",
            data={
                "username": "viewer",
                "password": PASSWORDS[Role.VIEWER],
                "next": target,
            },
        )
        assert response.headers["location"] == "/", target


async def test_a_viewer_sees_no_controls_and_may_not_use_them(
    client: httpx.AsyncClient, node: Node
) -> None:
    await log_in(client, Role.VIEWER)
    job = await node.jobs.resolve("nightly")

    page = (await client.get("/jobs/nightly")).text
    assert "Run now" not in page
    assert "/edit" not in page
    assert "New job" not in (await client.get("/jobs")).text
    csrf = csrf_of(page)  # the logout form carries it

    ran = await client.post(f"/jobs/{job.id}/run", data={"csrf": csrf})
    assert ran.status_code == 403
    assert (await client.get("/jobs/new")).status_code == 403
    assert (await node.store.active_runs([job.id]))[job.id] == []


async def test_an_operator_runs_with_the_csrf_token_only(
    client: httpx.AsyncClient, node: Node
) -> None:
    await log_in(client, Role.OPERATOR)
    job = await node.jobs.resolve("nightly")
    page = (await client.get("/jobs/nightly")).text
    assert "Run now" in page
    assert "/edit" not in page

    without = await client.post(f"/jobs/{job.id}/run")
    assert without.status_code == 403
    assert "CSRF" in without.text
    forged = await client.post(f"/jobs/{job.id}/run", data={"csrf": "0" * 64})
    assert forged.status_code == 403
    assert (await node.store.active_runs([job.id]))[job.id] == []

    ran = await client.post(f"/jobs/{job.id}/run", data={"csrf": csrf_of(page)})
    assert ran.status_code == 303
    (run,) = (await node.store.active_runs([job.id]))[job.id]
    assert ran.headers["location"] == f"/runs/{run.id}?done=started"


async def test_an_admin_creates_a_job_through_the_form_as_themselves(
    client: httpx.AsyncClient, node: Node
) -> None:
    await log_in(client, Role.ADMIN)
    form_page = (await client.get("/jobs/new")).text
    form = {
        "name": "by-form",
        "type": "command",
        "command": "true",
        "csrf": csrf_of(form_page),
    }
    created = await client.post("/jobs/new", data=form)
    assert created.status_code == 303, created.text
    records = await node.store.list_audit(AuditFilter(target="by-form"), 10, None)
    assert [(r.action, r.actor) for r in records.items] == [("job.created", "admin")]


async def test_logging_out_ends_the_session(client: httpx.AsyncClient) -> None:
    await log_in(client, Role.VIEWER)
    page = (await client.get("/")).text
    out = await client.post("/logout", data={"csrf": csrf_of(page)})
    assert out.status_code == 303
    assert out.headers["location"] == "/login"
    assert (await client.get("/")).status_code == 303


async def test_the_session_cookie_reads_the_api_but_does_not_write_it(
    client: httpx.AsyncClient,
) -> None:
    await log_in(client, Role.ADMIN)
    assert (await client.get("/api/jobs")).status_code == 200
    write = await client.post("/api/jobs/nightly/pause")
    assert write.status_code == 401
    assert "reads of the API only" in write.text
