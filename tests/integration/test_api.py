"""Drive the HTTP API around a real node on SQLite in a temp dir, with a fake clock."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from socmeth import __version__
from socmeth.api.app import create_app
from socmeth.auth.models import ANONYMOUS, Principal
from socmeth.clock import FakeClock
from socmeth.config import load_config
from socmeth.errors import StoreError
from socmeth.models import Job, JobDefinition
from socmeth.node import Node

# A Monday, so that weekday schedules have something to say.
START = datetime(2026, 1, 5, 8, 30, tzinfo=UTC)
BODY_LIMIT = 8192
OUTPUT_CAP = 1024
MASK = "********"
READ_ONLY_FIELDS = ("id", "created_at", "updated_at", "next_fire_at")

README_JOB = {
    "name": "backup-database",
    "schedule": "0 2 * * *",
    "command": "pg_dump -h db.example.com mydb > backup.sql",
    "timeout": 300,
    "retries": 3,
}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = load_config(
        environ={},
        overrides={
            "server.data_dir": str(tmp_path),
            "server.max_request_bytes": BODY_LIMIT,
            "workers.shutdown_grace": 0,
            "limits.output_bytes": OUTPUT_CAP,
        },
    )
    node = Node(config, clock=FakeClock(START), node_id="api-test")
    await node.start()
    yield node
    await node.stop()


@pytest.fixture
async def idle_node(node: Node) -> Node:
    """Return the node with its workers stopped, so that runs stay as they were made."""
    assert node.workers is not None
    await node.workers.stop(0)
    return node


@pytest.fixture
async def client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    """Create a command job (`true` unless told) and return it as the API shows it."""
    body = {"command": "true", **fields}
    response = await client.post("/api/jobs", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def field_names(response: httpx.Response) -> set[str]:
    return {problem["field"] for problem in response.json()["error"]["fields"]}


def assert_error_shape(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["fields"], list)


async def job_names(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/api/jobs")
    return [job["name"] for job in response.json()["items"]]


async def wait_for_end(client: httpx.AsyncClient, run_id: int) -> dict[str, Any]:
    """Poll a run until it ends; workers run in real time even with the fake clock."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        run = (await client.get(f"/api/runs/{run_id}")).json()
        if run["state"] not in ("waiting", "queued", "running"):
            return dict(run)
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end: {run}")


# Creating jobs


async def test_readme_example_answers_201_with_defaults_filled(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/jobs", json=README_JOB)

    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/api/jobs/{job['id']}"
    assert {k: job[k] for k in README_JOB} == README_JOB
    assert job["type"] == "command"
    assert job["timezone"] == "UTC"
    assert job["enabled"] is True
    assert job["description"] == ""
    assert job["tags"] == []
    assert job["env"] == {}
    assert job["retry_backoff"] == {
        "initial": 10,
        "factor": 2.0,
        "max": 3600,
        "jitter": False,
    }
    assert job["concurrency"] == "forbid"
    assert job["misfire"] == "run_once"
    assert job["misfire_grace"] is None
    assert job["depends_on"] == []
    assert job["created_at"] == "2026-01-05T08:30:00+00:00"
    assert job["updated_at"] == "2026-01-05T08:30:00+00:00"
    assert job["next_fire_at"] == "2026-01-06T02:00:00+00:00"


async def test_job_out_lists_every_field(client: httpx.AsyncClient) -> None:
    job = await create(client, name="all-fields")

    assert set(job) == {
        "id", "name", "type", "schedule", "timezone", "enabled", "description",
        "tags", "env", "command", "url", "method", "headers", "body",
        "expect_status", "secret", "timeout", "retries", "retry_backoff",
        "concurrency", "misfire", "misfire_grace", "depends_on",
        "dependency_timeout", "created_at", "updated_at", "next_fire_at",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"schedule": "0 25 * * *"}, "schedule"),
        ({"type": "ftp"}, "type"),
        ({"command": None}, "command"),
        ({"timezone": "Mars/Olympus_Mons", "schedule": "0 2 * * *"}, "timezone"),
        ({"timeout": 7200}, "timeout"),
        ({"name": "20260105"}, "name"),
        ({"retry_backoff": {"initial": -1}}, "retry_backoff.initial"),
        ({"colour": "blue"}, "colour"),
        ({"depends_on": ["backup-database"]}, "depends_on"),
    ],
    ids=[
        "invalid-cron",
        "unknown-type",
        "missing-command",
        "unknown-zone",
        "timeout-over-cap",
        "all-digit-name",
        "nested-field",
        "unknown-field",
        "unknown-dependency",
    ],
)
async def test_refused_job_names_its_field_and_stores_nothing(
    client: httpx.AsyncClient, fields: dict[str, Any], field: str
) -> None:
    body = {"name": "refused", "command": "true", **fields}

    response = await client.post("/api/jobs", json=body)

    assert_error_shape(response, 422)
    assert field in field_names(response)
    assert await job_names(client) == []


async def test_timeout_over_the_cap_names_the_cap(client: httpx.AsyncClient) -> None:
    body = {"name": "long", "command": "true", "timeout": 3601}

    response = await client.post("/api/jobs", json=body)

    assert "3600" in response.json()["error"]["fields"][0]["message"]
    assert "scheduler.max_job_timeout" in response.json()["error"]["message"]


async def test_malformed_json_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/jobs",
        content=b'{"name": "x",',
        headers={"content-type": "application/json"},
    )

    assert_error_shape(response, 400)
    assert "JSON" in response.json()["error"]["message"]


async def test_body_that_is_not_an_object_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/jobs", json=["backup-database"])

    assert_error_shape(response, 422)
    assert "JSON object" in response.json()["error"]["message"]


async def test_duplicate_name_is_a_409_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    first = await create(client, **README_JOB)

    response = await client.post(
        "/api/jobs", json={**README_JOB, "command": "rm -rf /tmp/x", "retries": 0}
    )

    assert_error_shape(response, 409)
    assert (await client.get("/api/jobs/backup-database")).json() == first
    assert await job_names(client) == ["backup-database"]


async def test_body_over_the_limit_is_a_413(client: httpx.AsyncClient) -> None:
    body = {"name": "big", "command": "true", "description": "x" * BODY_LIMIT}

    response = await client.post("/api/jobs", json=body)

    assert_error_shape(response, 413)
    assert "server.max_request_bytes" in response.json()["error"]["message"]
    assert await job_names(client) == []


async def test_chunked_body_over_the_limit_is_a_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "big", "command": "true", "description": "'
        for _ in range(4):
            yield b"x" * (BODY_LIMIT // 2)
        yield b'"}'

    response = await client.post(
        "/api/jobs", content=chunks(), headers={"content-type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert_error_shape(response, 413)
    assert await job_names(client) == []


# Reading, changing and deleting jobs


async def test_job_is_found_by_id_and_by_name(client: httpx.AsyncClient) -> None:
    job = await create(client, **README_JOB)

    by_id = await client.get(f"/api/jobs/{job['id']}")
    by_name = await client.get("/api/jobs/backup-database")

    assert by_id.status_code == by_name.status_code == 200
    assert by_id.json() == by_name.json() == job


@pytest.mark.parametrize(
    "path",
    [
        "/api/jobs/no-such-job",
        "/api/jobs/4242",
        "/api/jobs/no-such-job/history",
        "/api/runs/4242",
        "/api/runs?job=no-such-job",
        "/api/nothing-here",
    ],
    ids=["job-name", "job-id", "history", "run", "run-filter", "unknown-path"],
)
async def test_unknown_things_are_404s(client: httpx.AsyncClient, path: str) -> None:
    assert_error_shape(await client.get(path), 404)


async def test_unknown_method_is_a_405_in_the_same_shape(
    client: httpx.AsyncClient,
) -> None:
    response = await client.patch("/api/jobs/backup-database", json={})

    assert_error_shape(response, 405)


async def test_all_bad_fields_are_named_at_once(client: httpx.AsyncClient) -> None:
    body = {
        "name": "ping",
        "type": "http",
        "url": "https://example.com/",
        "method": "FETCH",
        "expect_status": 700,
        "timeout": 0,
    }

    response = await client.post("/api/jobs", json=body)

    assert_error_shape(response, 422)
    assert field_names(response) == {"method", "expect_status[0]", "timeout"}


async def test_write_to_unknown_job_is_a_404(client: httpx.AsyncClient) -> None:
    for response in (
        await client.put("/api/jobs/ghost", json={"retries": 1}),
        await client.delete("/api/jobs/ghost"),
        await client.post("/api/jobs/ghost/run"),
        await client.post("/api/jobs/ghost/pause"),
        await client.post("/api/runs/4242/cancel"),
    ):
        assert_error_shape(response, 404)


async def test_put_changes_only_the_fields_given(client: httpx.AsyncClient) -> None:
    job = await create(client, **README_JOB, description="nightly dump")

    response = await client.put("/api/jobs/backup-database", json={"retries": 5})

    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["retries"] == 5
    unchanged = {k: v for k, v in changed.items() if k not in ("retries",)}
    assert unchanged == {k: v for k, v in job.items() if k not in ("retries",)}


async def test_put_renames_and_the_old_name_is_gone(client: httpx.AsyncClient) -> None:
    job = await create(client, **README_JOB)

    response = await client.put(f"/api/jobs/{job['id']}", json={"name": "backup-db"})

    assert response.status_code == 200, response.text
    assert response.json()["id"] == job["id"]
    assert (await client.get("/api/jobs/backup-db")).json()["id"] == job["id"]
    assert_error_shape(await client.get("/api/jobs/backup-database"), 404)


async def test_put_to_a_taken_name_is_a_409(client: httpx.AsyncClient) -> None:
    await create(client, name="first")
    second = await create(client, name="second")

    response = await client.put("/api/jobs/second", json={"name": "first"})

    assert_error_shape(response, 409)
    assert (await client.get("/api/jobs/second")).json() == second


async def test_put_is_validated_like_a_post(client: httpx.AsyncClient) -> None:
    job = await create(client, **README_JOB)

    response = await client.put(
        "/api/jobs/backup-database", json={"schedule": "0 0 30 2 *", "retries": 1}
    )

    assert_error_shape(response, 422)
    assert field_names(response) == {"schedule"}
    assert (await client.get("/api/jobs/backup-database")).json() == job


async def test_put_with_a_new_schedule_moves_the_next_fire(
    client: httpx.AsyncClient,
) -> None:
    await create(client, **README_JOB)

    response = await client.put(
        "/api/jobs/backup-database",
        json={"schedule": "0 9 * * *", "timezone": "Europe/Berlin"},
    )

    # 09:00 in Berlin is 08:00 UTC in winter, already past at 08:30 UTC on the 5th.
    assert response.json()["next_fire_at"] == "2026-01-06T08:00:00+00:00"


async def test_delete_answers_204_then_the_job_is_gone(
    client: httpx.AsyncClient,
) -> None:
    job = await create(client, **README_JOB)

    response = await client.delete(f"/api/jobs/{job['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert_error_shape(await client.get(f"/api/jobs/{job['id']}"), 404)
    assert_error_shape(await client.delete(f"/api/jobs/{job['id']}"), 404)


async def test_pause_and_resume_toggle_the_next_fire(client: httpx.AsyncClient) -> None:
    await create(client, **README_JOB)

    paused = await client.post("/api/jobs/backup-database/pause")
    resumed = await client.post("/api/jobs/backup-database/resume")

    assert paused.status_code == 200
    assert paused.json()["enabled"] is False
    assert paused.json()["next_fire_at"] is None
    assert resumed.status_code == 200
    assert resumed.json()["enabled"] is True
    assert resumed.json()["next_fire_at"] == "2026-01-06T02:00:00+00:00"


async def test_unscheduled_job_has_no_next_fire(client: httpx.AsyncClient) -> None:
    job = await create(client, name="by-hand")

    assert job["schedule"] is None
    assert job["next_fire_at"] is None


async def test_job_list_filters_and_pages(client: httpx.AsyncClient) -> None:
    for index in range(5):
        await create(client, name=f"db-{index}", tags=["db"] if index % 2 else [])
    await create(client, name="web", tags=["db"])
    await client.post("/api/jobs/db-1/pause")

    async def names(query: str) -> list[str]:
        response = await client.get(f"/api/jobs?{query}")
        assert response.status_code == 200, response.text
        return [job["name"] for job in response.json()["items"]]

    assert await names("search=db-") == [f"db-{i}" for i in range(5)]
    assert await names("tag=db") == ["db-1", "db-3", "web"]
    assert await names("enabled=false") == ["db-1"]
    assert await names("enabled=true&tag=db") == ["db-3", "web"]
    seen, cursor = [], None
    while True:
        query = "limit=4" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(f"/api/jobs?{query}")).json()
        seen += [job["name"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"db-{i}" for i in range(5)] + ["web"]


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=501", "limit"), ("limit=0", "limit"), ("enabled=maybe", "enabled")],
    ids=["limit-too-big", "limit-zero", "enabled-not-bool"],
)
async def test_bad_list_query_names_the_parameter(
    client: httpx.AsyncClient, query: str, field: str
) -> None:
    response = await client.get(f"/api/jobs?{query}")

    assert_error_shape(response, 422)
    assert field_names(response) == {field}


async def test_job_list_sorts_and_pages_in_the_order_asked_for(
    client: httpx.AsyncClient, node: Node
) -> None:
    assert isinstance(node.clock, FakeClock)
    for name, schedule in [
        ("b-daily", "0 2 * * *"),
        ("d-manual", None),
        ("a-hourly", "0 * * * *"),
        ("c-minutely", "* * * * *"),
    ]:
        await create(client, name=name, schedule=schedule)
        node.clock.advance(1)
    await client.put("/api/jobs/b-daily", json={"description": "touched"})

    async def pages(sort: str) -> list[list[str]]:
        found, cursor = [], None
        while True:
            params = {"sort": sort, "limit": "3"} | (
                {"cursor": cursor} if cursor else {}
            )
            response = await client.get("/api/jobs", params=params)
            assert response.status_code == 200, response.text
            found.append([job["name"] for job in response.json()["items"]])
            if (cursor := response.json()["next_cursor"]) is None:
                return found

    assert await pages("name") == [["a-hourly", "b-daily", "c-minutely"], ["d-manual"]]
    assert await pages("-name") == [["d-manual", "c-minutely", "b-daily"], ["a-hourly"]]
    assert await pages("next_fire_at") == [
        ["c-minutely", "a-hourly", "b-daily"],
        ["d-manual"],
    ]
    assert await pages("-updated_at") == [
        ["b-daily", "c-minutely", "a-hourly"],
        ["d-manual"],
    ]
    assert await pages("-created_at") == [
        ["c-minutely", "a-hourly", "d-manual"],
        ["b-daily"],
    ]


async def test_job_list_refuses_a_bad_sort_and_a_cursor_of_another_sort(
    client: httpx.AsyncClient,
) -> None:
    for name in ("a", "b", "c"):
        await create(client, name=name)
    cursor = (await client.get("/api/jobs?sort=-name&limit=1")).json()["next_cursor"]

    bad_sort = await client.get("/api/jobs", params={"sort": "updated"})
    other_sort = await client.get("/api/jobs", params={"cursor": cursor})

    assert_error_shape(bad_sort, 422)
    assert field_names(bad_sort) == {"sort"}
    assert "'-updated_at'" in bad_sort.json()["error"]["message"]
    assert_error_shape(other_sort, 422)
    assert field_names(other_sort) == {"cursor"}
    assert "pass sort=-name" in other_sort.json()["error"]["message"]


# Secrets


async def test_secrets_are_masked_and_kept_by_a_put_of_the_mask(
    client: httpx.AsyncClient, node: Node
) -> None:
    job = await create(
        client,
        name="notify",
        type="webhook",
        command=None,
        url="https://hooks.example.com/socmeth",
        headers={"Authorization": "Bearer abc", "X-Team": "ops"},
        secret="hmac-key",
        env={"API_TOKEN": "t0k3n", "REGION": "eu"},
    )
    assert job["headers"] == {"Authorization": MASK, "X-Team": "ops"}
    assert job["secret"] == MASK
    assert job["env"] == {"API_TOKEN": MASK, "REGION": "eu"}

    edited = {k: v for k, v in job.items() if k not in READ_ONLY_FIELDS}
    edited["description"] = "tell the team"
    response = await client.put("/api/jobs/notify", json=edited)

    assert response.status_code == 200, response.text
    assert response.json()["headers"] == job["headers"]
    stored = (await node.store.get_job_by_name("notify")).definition
    assert stored.headers == {"Authorization": "Bearer abc", "X-Team": "ops"}
    assert stored.secret == "hmac-key"
    assert stored.env == {"API_TOKEN": "t0k3n", "REGION": "eu"}
    assert stored.description == "tell the team"


async def test_a_new_secret_replaces_the_stored_one(
    client: httpx.AsyncClient, node: Node
) -> None:
    await create(client, name="deploy", env={"DEPLOY_KEY": "old"})

    response = await client.put("/api/jobs/deploy", json={"env": {"DEPLOY_KEY": "new"}})

    assert response.json()["env"] == {"DEPLOY_KEY": MASK}
    stored = (await node.store.get_job_by_name("deploy")).definition
    assert stored.env == {"DEPLOY_KEY": "new"}


# Runs


async def test_run_now_answers_202_with_a_queued_manual_run(
    client: httpx.AsyncClient, idle_node: Node
) -> None:
    job = await create(client, **README_JOB)

    response = await client.post("/api/jobs/backup-database/run")

    assert response.status_code == 202, response.text
    run = response.json()
    assert run["job_id"] == job["id"]
    assert run["job_name"] == "backup-database"
    assert run["state"] == "queued"
    assert run["trigger"] == "manual"
    assert run["scheduled_at"] is None
    assert run["late"] is False
    assert run["created_at"] == "2026-01-05T08:30:00+00:00"
    assert [a["number"] for a in run["attempts"]] == [1]
    assert run["attempts"][0]["state"] == "queued"
    assert (await client.get(f"/api/runs/{run['id']}")).json() == run


async def test_run_now_while_forbid_and_active_is_a_409(
    client: httpx.AsyncClient, idle_node: Node
) -> None:
    await create(client, **README_JOB)
    first = await client.post("/api/jobs/backup-database/run")

    second = await client.post("/api/jobs/backup-database/run")

    assert first.status_code == 202
    assert_error_shape(second, 409)
    history = (await client.get("/api/jobs/backup-database/history")).json()
    assert [run["id"] for run in history["items"]] == [first.json()["id"]]


async def test_cancel_answers_202_with_the_cancelled_run(
    client: httpx.AsyncClient, idle_node: Node
) -> None:
    await create(client, **README_JOB)
    run = (await client.post("/api/jobs/backup-database/run")).json()

    response = await client.post(f"/api/runs/{run['id']}/cancel")

    assert response.status_code == 202, response.text
    assert response.json()["state"] == "cancelled"
    assert response.json()["reason"]


async def test_history_pages_without_dupes_or_gaps(
    client: httpx.AsyncClient, idle_node: Node
) -> None:
    await create(client, name="often", concurrency="allow")
    await create(client, name="other", concurrency="allow")
    created = []
    for _ in range(7):
        created.append((await client.post("/api/jobs/often/run")).json()["id"])
    await client.post("/api/jobs/other/run")

    seen: list[int] = []
    cursor = None
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/jobs/often/history", params=query)).json()
        assert len(page["items"]) <= 3
        seen += [run["id"] for run in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == sorted(created, reverse=True)


async def test_run_list_filters(client: httpx.AsyncClient, idle_node: Node) -> None:
    assert isinstance(idle_node.clock, FakeClock)
    await create(client, name="often", concurrency="allow")
    await create(client, name="other", concurrency="allow")
    early = [(await client.post("/api/jobs/often/run")).json() for _ in range(3)]
    idle_node.clock.advance(60)
    late = [(await client.post("/api/jobs/often/run")).json() for _ in range(2)]
    other = (await client.post("/api/jobs/other/run")).json()
    await client.post(f"/api/runs/{early[0]['id']}/cancel")
    await client.post(f"/api/runs/{late[0]['id']}/cancel")

    async def ids(**params: Any) -> set[int]:
        response = await client.get("/api/runs", params=params)
        assert response.status_code == 200, response.text
        return {run["id"] for run in response.json()["items"]}

    everything = {run["id"] for run in [*early, *late, other]}
    of_often = {run["id"] for run in [*early, *late]}
    cancelled = {early[0]["id"], late[0]["id"]}
    assert await ids() == everything
    assert await ids(job="often") == of_often
    assert await ids(job=str(other["job_id"])) == {other["id"]}
    assert await ids(state="cancelled") == cancelled
    assert await ids(state="queued,cancelled") == everything
    assert await ids(state=["queued", "cancelled"]) == everything
    assert await ids(job="often", state="queued") == of_often - cancelled
    assert await ids(trigger="manual") == everything
    assert await ids(trigger="schedule") == set()
    assert await ids(created_after="2026-01-05T08:30:30Z") == {
        late[0]["id"],
        late[1]["id"],
        other["id"],
    }
    assert await ids(created_before="2026-01-05T08:30:30Z") == {
        run["id"] for run in early
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "done"}, "state"),
        ({"trigger": "cron"}, "trigger"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_after": "2026-01-05T08:30:00"}, "created_after"),
        ({"limit": "1000"}, "limit"),
    ],
    ids=["state", "trigger", "instant", "naive-instant", "limit"],
)
async def test_bad_run_query_names_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get("/api/runs", params=params)

    assert_error_shape(response, 422)
    assert field_names(response) == {field}


async def test_finished_run_shows_its_attempt_and_output(
    client: httpx.AsyncClient,
) -> None:
    await create(client, name="hello", command="echo hello; echo oops >&2; exit 3")

    run = (await client.post("/api/jobs/hello/run")).json()
    ended = await wait_for_end(client, run["id"])

    assert ended["state"] == "failed"
    assert ended["finished_at"] is not None
    attempt = ended["attempts"][0]
    assert attempt["exit_code"] == 3
    assert attempt["node_id"] == "api-test"
    assert attempt["state"] == "failed"
    output = await client.get(f"/api/runs/{run['id']}/attempts/1/output")
    assert output.status_code == 200
    assert output.headers["content-type"].startswith("text/plain")
    assert output.headers["x-socmeth-output-truncated"] == "false"
    assert "hello\n" in output.text
    assert "oops\n" in output.text
    assert_error_shape(
        await client.get(f"/api/runs/{run['id']}/attempts/2/output"), 404
    )


async def test_output_over_the_cap_says_it_was_truncated(
    client: httpx.AsyncClient,
) -> None:
    await create(client, name="chatty", command="seq 1 2000")

    run = (await client.post("/api/jobs/chatty/run")).json()
    await wait_for_end(client, run["id"])
    output = await client.get(f"/api/runs/{run['id']}/attempts/1/output")

    assert output.headers["x-socmeth-output-truncated"] == "true"
    assert output.text.endswith("1999\n2000\n")
    assert len(output.content) <= OUTPUT_CAP


async def test_output_is_the_live_tail_while_the_attempt_runs(
    client: httpx.AsyncClient, node: Node
) -> None:
    assert isinstance(node.clock, FakeClock)
    await create(client, name="slow", command="echo started; sleep 60")
    run = (await client.post("/api/jobs/slow/run")).json()
    url = f"/api/runs/{run['id']}/attempts/1/output"

    # The worker saves output to the store once a second of the fake clock, which does
    # not move here: only the worker's live copy can show this line.
    deadline = time.monotonic() + 20
    while (await client.get(url)).text != "started\n":
        assert time.monotonic() < deadline, "the live output never showed"
        await asyncio.sleep(0.05)
    running = (await client.get(f"/api/runs/{run['id']}")).json()
    cancel = await client.post(f"/api/runs/{run['id']}/cancel")
    node.clock.advance(1)  # the worker checks for cancels once a second
    ended = await wait_for_end(client, run["id"])

    assert running["state"] == "running"
    assert running["attempts"][0]["started_at"] == "2026-01-05T08:30:00+00:00"
    assert cancel.status_code == 202
    assert ended["state"] == "cancelled"
    assert ended["attempts"][0]["state"] == "cancelled"


# Schedule preview


async def test_preview_lists_the_next_weekday_hours(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/schedules/preview",
        params={
            "schedule": "0 9-17 * * 1-5",
            "after": "2026-01-09T16:30:00Z",
            "count": 3,
        },
    )

    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["fires"] == [
        "2026-01-09T17:00:00+00:00",
        "2026-01-12T09:00:00+00:00",
        "2026-01-12T10:00:00+00:00",
    ]
    description = preview["description"].lower()
    assert "weekday" in description
    assert "09:00" in description
    assert "17:00" in description


async def test_preview_gives_fires_with_the_zones_offset(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/api/schedules/preview",
        params={
            "schedule": "0 9 * * *",
            "timezone": "America/New_York",
            "after": "2026-03-07T00:00:00Z",
            "count": 2,
        },
    )

    # New York leaves EST (-05:00) for EDT (-04:00) on 2026-03-08 at 02:00 local.
    assert response.json()["fires"] == [
        "2026-03-07T09:00:00-05:00",
        "2026-03-08T09:00:00-04:00",
    ]


async def test_preview_defaults_to_five_fires_after_now(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/api/schedules/preview", params={"schedule": "@hourly"}
    )

    assert response.json()["fires"] == [
        f"2026-01-05T{hour:02}:00:00+00:00" for hour in range(9, 14)
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"schedule": "0 9-17 * * 1-8"}, "schedule"),
        ({"schedule": "0 9 * * *", "timezone": "Europe/Paaris"}, "timezone"),
        ({"schedule": "0 9 * * *", "count": 101}, "count"),
        ({"schedule": "0 9 * * *", "after": "soon"}, "after"),
        ({}, "schedule"),
    ],
    ids=["schedule", "timezone", "count", "after", "missing-schedule"],
)
async def test_bad_preview_names_the_field(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await client.get("/api/schedules/preview", params=params)

    assert_error_shape(response, 422)
    assert field_names(response) == {field}


# System endpoints and the OpenAPI document


async def test_openapi_lists_the_readme_paths(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()

    assert document["info"]["title"] == "socmeth"
    assert document["info"]["version"] == __version__
    paths = document["paths"]
    assert set(paths["/api/jobs"]) == {"get", "post"}
    assert set(paths["/api/jobs/{ref}"]) == {"get", "put", "delete"}
    assert set(paths["/api/jobs/{ref}/run"]) == {"post"}
    assert set(paths["/api/jobs/{ref}/history"]) == {"get"}
    assert "/api/runs/{run_id}/attempts/{number}/output" in paths
    assert "/api/schedules/preview" in paths
    assert (await client.get("/docs")).status_code == 200


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_nodes_lists_this_node_up_and_leading(
    client: httpx.AsyncClient, node: Node
) -> None:
    response = await client.get("/api/nodes")

    assert response.status_code == 200
    (shown,) = response.json()["items"]
    assert shown == {
        "id": "api-test",
        "address": "127.0.0.1:8080",
        "state": "up",
        "leader": True,
        "started_at": "2026-01-05T08:30:00+00:00",
        "last_heartbeat_at": "2026-01-05T08:30:00+00:00",
        "version": __version__,
        "running": 0,
    }
    assert response.json()["next_cursor"] is None


async def test_cluster_names_the_leader_its_term_and_the_queue_size(
    client: httpx.AsyncClient, idle_node: Node
) -> None:
    await create(client, name="queued")
    await client.post("/api/jobs/queued/run")

    response = await client.get("/api/cluster")

    assert response.status_code == 200
    assert response.json() == {
        "leader": "api-test",
        "term": 1,
        "lease_expires_at": "2026-01-05T08:30:01.500000+00:00",
        "queue_size": 1,
        "nodes": {"up": 1, "down": 0, "expected": 0},
    }


async def test_readyz_answers_200_with_its_checks(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"store": "ok", "scheduler": "ok", "workers": "ok"},
    }


async def test_readyz_answers_503_when_the_workers_stopped(
    client: httpx.AsyncClient, idle_node: Node
) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["workers"] == "stopped"


async def test_a_put_racing_a_rename_is_applied_to_the_renamed_job(
    client: httpx.AsyncClient, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create(client, name="parent")
    await create(client, name="child", depends_on=["parent"])
    real_update = node.jobs.update
    raced = False

    async def update_after_a_rename(
        job: Job, definition: JobDefinition, actor: Principal = ANONYMOUS
    ) -> Job:
        # The first time, another request renames the parent between this PUT's
        # read of the child and its write.
        nonlocal raced
        if not raced:
            raced = True
            assert isinstance(node.clock, FakeClock)
            node.clock.advance(1)
            parent = await node.store.get_job_by_name("parent")
            await real_update(parent, replace(parent.definition, name="renamed"))
        return await real_update(job, definition, actor)

    monkeypatch.setattr(node.jobs, "update", update_after_a_rename)
    response = await client.put("/api/jobs/child", json={"retries": 2})

    assert response.status_code == 200, response.text
    assert response.json()["depends_on"] == ["renamed"]
    assert response.json()["retries"] == 2


async def test_readyz_answers_503_while_scheduler_turns_keep_failing(
    client: httpx.AsyncClient, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object, **__: object) -> None:
        raise StoreError("the store broke")

    monkeypatch.setattr(node.store, "resolve_dependencies", broken)
    assert isinstance(node.clock, FakeClock)
    checks: dict[str, str] = {}
    for _ in range(50):  # each failed turn backs off on the fake clock
        node.clock.advance(5)
        await asyncio.sleep(0.01)
        response = await client.get("/readyz")
        checks = response.json()["checks"]
        if response.status_code == 503:
            break

    assert checks["scheduler"].startswith("failing: ")
    assert checks["scheduler"].endswith("turns in a row failed: the store broke")


async def test_metrics_are_prometheus_text_with_socmeths_names(
    client: httpx.AsyncClient,
) -> None:
    await create(client, name="counted")
    await create(client, name="paused", enabled=False)
    run = (await client.post("/api/jobs/counted/run")).json()
    await wait_for_end(client, run["id"])

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == (
        "text/plain; version=0.0.4; charset=utf-8"
    )
    text = response.text
    for name in (
        "socmeth_runs_total",
        "socmeth_attempt_duration_seconds",
        "socmeth_schedule_lateness_seconds",
        "socmeth_queue_size",
        "socmeth_running_attempts",
        "socmeth_jobs",
    ):
        assert f"# TYPE {name} " in text, name
    assert 'socmeth_runs_total{job="counted",state="succeeded"} 1.0' in text
    assert 'socmeth_jobs{state="enabled"} 1.0' in text
    assert 'socmeth_jobs{state="paused"} 1.0' in text


# Input at the edges: refused with a 4xx naming the field, never a 500


HUGE_ID = "99999999999999999999"


@pytest.mark.parametrize("grace", [1e15, 1e20, 1e308], ids=["1e15", "1e20", "1e308"])
async def test_huge_misfire_grace_is_a_422_on_post_and_put(
    client: httpx.AsyncClient, grace: float
) -> None:
    job = await create(client, name="graceful")

    posted = await client.post(
        "/api/jobs", json={"name": "late", "command": "true", "misfire_grace": grace}
    )
    put = await client.put("/api/jobs/graceful", json={"misfire_grace": grace})

    assert_error_shape(posted, 422)
    assert field_names(posted) == {"misfire_grace"}
    assert_error_shape(put, 422)
    assert field_names(put) == {"misfire_grace"}
    assert await job_names(client) == ["graceful"]
    assert (await client.get("/api/jobs/graceful")).json() == job


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/api/jobs/{HUGE_ID}"),
        ("PUT", f"/api/jobs/{HUGE_ID}"),
        ("DELETE", f"/api/jobs/{HUGE_ID}"),
        ("POST", f"/api/jobs/{HUGE_ID}/run"),
        ("GET", f"/api/jobs/{HUGE_ID}/history"),
        ("GET", "/api/jobs/9223372036854775808"),
        ("GET", "/api/jobs/" + "9" * 5000),
        ("GET", "/api/jobs/%C2%B2"),
        ("GET", f"/api/runs/{HUGE_ID}"),
        ("POST", f"/api/runs/{HUGE_ID}/cancel"),
        ("GET", f"/api/runs/{HUGE_ID}/attempts/1/output"),
        ("GET", f"/api/runs/1/attempts/{HUGE_ID}/output"),
        ("GET", "/api/runs/1/attempts/2147483648/output"),
        ("GET", "/api/runs?job=%C2%B2"),
    ],
    ids=[
        "get-job",
        "put-job",
        "delete-job",
        "run-job",
        "history",
        "job-id-just-over",
        "job-id-of-5000-digits",
        "superscript-digit",
        "get-run",
        "cancel-run",
        "output-of-huge-run",
        "huge-attempt-number",
        "attempt-number-just-over-int32",
        "run-filter-superscript-digit",
    ],
)
async def test_ids_no_store_can_hold_are_404s(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={} if method == "PUT" else None)

    assert_error_shape(response, 404)
    assert "no " in response.json()["error"]["message"]


async def test_run_filter_by_a_huge_job_id_is_a_422_naming_job(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/runs", params={"job": HUGE_ID})

    assert_error_shape(response, 422)
    assert field_names(response) == {"job"}
    assert "9223372036854775807" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/runs", {"created_after": "0001-01-01T00:00:00+14:00"}, "created_after"),
        (
            "/api/runs",
            {"created_before": "9999-12-31T23:59:59-14:00"},
            "created_before",
        ),
        ("/api/runs", {"created_after": "1969-12-31T23:59:59Z"}, "created_after"),
        (
            "/api/jobs/often/history",
            {"created_before": "0001-01-01T00:00:00Z"},
            "created_before",
        ),
        (
            "/api/schedules/preview",
            {
                "schedule": "@hourly",
                "after": "0001-01-01T00:00:00Z",
                "timezone": "America/New_York",
            },
            "after",
        ),
        (
            "/api/schedules/preview",
            {"schedule": "@hourly", "after": "9999-12-31T23:59:00Z"},
            "after",
        ),
        ("/api/jobs", {"search": "db\x00"}, "search"),
        ("/api/jobs", {"tag": "\x1b"}, "tag"),
    ],
    ids=[
        "created-after-year-1",
        "created-before-year-10000-utc",
        "before-1970",
        "history",
        "preview-year-1",
        "preview-end-of-9999",
        "search-nul",
        "tag-escape",
    ],
)
async def test_query_values_out_of_range_name_the_parameter(
    client: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    await create(client, name="often")

    response = await client.get(path, params=params)

    assert_error_shape(response, 422)
    assert field_names(response) == {field}


async def test_preview_stops_at_the_last_fire_a_datetime_holds(
    client: httpx.AsyncClient,
) -> None:
    # Fires of @every ignore the zone; a zone 14 hours ahead of UTC puts the local
    # time of a fire late in 9999 (UTC) in year 10000.
    response = await client.get(
        "/api/schedules/preview",
        params={
            "schedule": "@every 8760h",
            "timezone": "Etc/GMT-14",
            "after": "9999-01-01T00:00:00+14:00",
            "count": 3,
        },
    )

    assert response.status_code == 200, response.text
    assert response.json()["fires"] == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"command": "echo a\x00b"}, "command"),
        ({"env": {"A": "x\x00"}}, "env.A"),
        ({"env": {"A=B": "x"}}, "env.A=B"),
        ({"timezone": ""}, "timezone"),
        ({"type": "http", "url": "http://127.0.0.1:99999/"}, "url"),
        ({"type": "http", "url": " http://127.0.0.1/"}, "url"),
        ({"type": "http", "url": "http://127.0.0.1/ "}, "url"),
        ({"type": "http", "url": "http://127.0.0.1/a\nb"}, "url"),
        ({"type": "http", "url": "http://127.0.0.1/a b"}, "url"),
        ({"type": "http", "url": "http:///path"}, "url"),
        ({"type": "http", "url": "file:///etc/passwd"}, "url"),
        (
            {"type": "http", "url": "http://h/", "headers": {"X-Name": "Jos\u00e9"}},
            "headers.X-Name",
        ),
        (
            {"type": "http", "url": "http://h/", "headers": {"X-A": "a\r\nX-B: b"}},
            "headers.X-A",
        ),
        (
            {"type": "http", "url": "http://h/", "headers": {"Content-Length": "0"}},
            "headers.Content-Length",
        ),
        (
            {"type": "webhook", "url": "http://h/", "headers": {"Host": "evil"}},
            "headers.Host",
        ),
        (
            {"type": "http", "url": "http://h/", "headers": {"Connection": "close"}},
            "headers.Connection",
        ),
        (
            {
                "type": "http",
                "url": "http://h/",
                "headers": {"Transfer-Encoding": "chunked"},
            },
            "headers.Transfer-Encoding",
        ),
        ({"type": "webhook", "url": "http://h/", "secret": ""}, "secret"),
    ],
    ids=[
        "command-nul",
        "env-value-nul",
        "env-name",
        "empty-timezone",
        "port-out-of-range",
        "url-leading-space",
        "url-trailing-space",
        "url-line-break",
        "url-inner-space",
        "url-without-host",
        "url-file-scheme",
        "header-not-ascii",
        "header-crlf",
        "content-length",
        "host",
        "connection",
        "transfer-encoding",
        "empty-secret",
    ],
)
async def test_what_would_fail_at_run_time_is_a_422(
    client: httpx.AsyncClient, fields: dict[str, Any], field: str
) -> None:
    body = {"name": "refused", **fields}
    if "type" not in fields:
        body.setdefault("command", "true")

    response = await client.post("/api/jobs", json=body)

    assert_error_shape(response, 422)
    assert field_names(response) == {field}
    assert await job_names(client) == []


async def test_framing_header_message_says_socmeth_sets_it(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "name": "refused",
        "type": "http",
        "url": "http://h/",
        "headers": {"content-length": "7"},
    }

    response = await client.post("/api/jobs", json=body)

    assert "socmeth sets itself" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timeout": "5"}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"retries": True}, "retries"),
        ({"retries": "3"}, "retries"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"retry_backoff": {"jitter": "yes"}}, "retry_backoff.jitter"),
        ({"misfire_grace": "10"}, "misfire_grace"),
    ],
    ids=[
        "timeout-string",
        "timeout-bool",
        "retries-bool",
        "retries-string",
        "enabled-string",
        "enabled-int",
        "jitter-string",
        "grace-string",
    ],
)
async def test_fields_take_json_types_not_look_alikes(
    client: httpx.AsyncClient, fields: dict[str, Any], field: str
) -> None:
    await create(client, name="typed")

    posted = await client.post(
        "/api/jobs", json={"name": "refused", "command": "true", **fields}
    )
    put = await client.put("/api/jobs/typed", json=fields)

    assert_error_shape(posted, 422)
    assert field_names(posted) == {field}
    assert_error_shape(put, 422)
    assert field_names(put) == {field}
    assert await job_names(client) == ["typed"]


async def test_query_parameters_stay_lax(client: httpx.AsyncClient) -> None:
    await create(client, name="paused", enabled=False)

    response = await client.get("/api/jobs", params={"enabled": "false", "limit": "5"})

    assert response.status_code == 200, response.text
    assert [job["name"] for job in response.json()["items"]] == ["paused"]


# Sending back what GET returned


async def test_a_job_read_can_be_put_back_unchanged(
    client: httpx.AsyncClient, node: Node
) -> None:
    job = await create(
        client,
        name="notify",
        type="webhook",
        command=None,
        url="https://ops:hunter2@hooks.example.com/socmeth",
        headers={"Authorization": "Bearer abc", "X-Team": "ops"},
        secret="hmac-key",
        env={"API_TOKEN": "t0k3n", "REGION": "eu"},
        schedule="0 2 * * *",
        misfire_grace=30,
        tags=["ops"],
    )
    before = (await node.store.get_job_by_name("notify")).definition
    shown = (await client.get("/api/jobs/notify")).json()

    response = await client.put("/api/jobs/notify", json=shown)

    assert response.status_code == 200, response.text
    assert response.json() == shown == job
    assert (await node.store.get_job_by_name("notify")).definition == before


async def test_post_refuses_the_read_only_fields(client: httpx.AsyncClient) -> None:
    body = {**README_JOB, "id": 7, "created_at": "2026-01-05T08:30:00+00:00"}

    response = await client.post("/api/jobs", json=body)

    assert_error_shape(response, 422)
    assert field_names(response) == {"id", "created_at"}
    assert "PUT" in response.json()["error"]["fields"][0]["message"]
    assert await job_names(client) == []


# Credentials in URLs


async def test_url_password_is_masked_and_kept_by_a_put_of_the_mask(
    client: httpx.AsyncClient, node: Node
) -> None:
    job = await create(
        client,
        name="ping",
        type="http",
        command=None,
        url="https://ops:hunter2@example.com/health",
    )
    assert job["url"] == f"https://ops:{MASK}@example.com/health"

    moved = await client.put(
        "/api/jobs/ping", json={"url": f"https://ops:{MASK}@example.com/ready"}
    )

    assert moved.status_code == 200, moved.text
    assert moved.json()["url"] == f"https://ops:{MASK}@example.com/ready"
    stored = (await node.store.get_job_by_name("ping")).definition
    assert stored.url == "https://ops:hunter2@example.com/ready"
    listed = (await client.get("/api/jobs")).json()["items"]
    assert "hunter2" not in str(listed)


async def test_a_new_url_password_replaces_the_stored_one(
    client: httpx.AsyncClient, node: Node
) -> None:
    await create(
        client, name="ping", type="http", command=None, url="https://a:old@h.example/"
    )

    response = await client.put(
        "/api/jobs/ping", json={"url": "https://a:new@h.example/"}
    )

    assert response.json()["url"] == f"https://a:{MASK}@h.example/"
    stored = (await node.store.get_job_by_name("ping")).definition
    assert stored.url == "https://a:new@h.example/"


# HEAD on the probes


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_head_answers_like_get_without_a_body(
    client: httpx.AsyncClient, path: str
) -> None:
    got = await client.get(path)

    head = await client.head(path)

    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == str(len(got.content))


async def test_head_readyz_answers_503_when_the_workers_stopped(
    client: httpx.AsyncClient, idle_node: Node
) -> None:
    response = await client.head("/readyz")

    assert response.status_code == 503
    assert response.content == b""


@pytest.mark.parametrize(
    "raw",
    [b"run:99999999999999999999", b"run:12\x00", b"job:\x00"],
    ids=["run-id-beyond-64-bits", "run-id-with-nul", "job-name-with-nul"],
)
async def test_hand_made_cursor_out_of_range_is_a_422(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    path = "/api/jobs" if raw.startswith(b"job") else "/api/runs"

    response = await client.get(path, params={"cursor": cursor})

    assert_error_shape(response, 422)
    assert field_names(response) == {"cursor"}


async def test_whole_seconds_come_back_as_json_integers(
    client: httpx.AsyncClient,
) -> None:
    body = {"name": "ints", "command": "true", "timeout": 300, "misfire_grace": 30}

    job = (await client.post("/api/jobs", json=body)).json()

    assert (job["timeout"], job["misfire_grace"]) == (300, 30)
    assert isinstance(job["timeout"], int)
    assert job["retry_backoff"] == {
        "initial": 10,
        "factor": 2,
        "max": 3600,
        "jitter": False,
    }


# The document's page, with its script and styles from the node (no CDN)

SCRIPT_TYPES = {"text/javascript", "application/javascript"}


def page_urls(html: str) -> list[str]:
    """Return the src and href values of a page."""
    return [
        part.split('"', 1)[0]
        for marker in ('src="', 'href="')
        for part in html.split(marker)[1:]
    ]


async def test_docs_load_only_files_the_node_serves(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    # No URL of another host; no scheme at all, in fact: every reference is a path.
    assert "http" not in response.text
    urls = page_urls(response.text)
    assert any(url.endswith(".js") for url in urls)
    for url in urls:
        assert url.startswith("/")
        assert not url.startswith("//")
        asset = await client.get(url)
        assert asset.status_code == 200, url
        kind = asset.headers["content-type"].split(";")[0]
        if url.endswith(".js"):
            assert kind in SCRIPT_TYPES, url
        elif url.endswith(".css"):
            assert kind == "text/css"
        else:
            assert kind.startswith("image/"), url


async def test_docs_run_a_swagger_ui_that_reads_the_documents_version(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    page = (await client.get("/docs")).text
    script = (await client.get("/docs/static/swagger-ui-bundle.js")).text
    redirect = await client.get("/docs/oauth2-redirect")

    assert "url: '/openapi.json'" in page
    assert "/docs/static/swagger-ui.css" in page
    # FastAPI writes OpenAPI 3.1, which Swagger UI reads from version 5 on (4 says
    # "Unable to render this definition").
    assert document["openapi"].startswith("3.1.")
    assert 'PACKAGE_VERSION:"5.' in script
    assert redirect.status_code == 200
    assert "http" not in redirect.text


async def test_redoc_is_not_served(client: httpx.AsyncClient) -> None:
    # ReDoc's sidebar loads its logo from cdn.redoc.ly whatever the page says.
    response = await client.get("/redoc")

    assert_error_shape(response, 404)
