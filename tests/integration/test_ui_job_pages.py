"""Drive the job form, a job's page and a run's page around a real node on SQLite."""

from __future__ import annotations

import html as html_text
import re
from datetime import timedelta

import httpx
import pytest

from socmeth.models import Concurrency, JobType, Misfire, RunState
from socmeth.node import Node
from socmeth.store.base import JobFilter
from socmeth.ui.forms import INPUTS, line_feeds
from tests.integration.ui_support import (
    add_job,
    client,
    node,
    run_to,
    section,
)

__all__ = ["client", "node"]  # fixtures, used by name

COMMAND_FORM = {
    "name": "nightly-report",
    "type": "command",
    "description": "Builds the report",
    "enabled": "on",
    "schedule": "0 9-17 * * 1-5",
    "timezone": "Europe/Berlin",
    "command": "echo one\r\necho two",
    "env": "REGION=eu\r\nAPI_TOKEN=s3cret\r\n",
    "timeout": "90",
    "retries": "3",
    "retry_backoff.initial": "5",
    "retry_backoff.factor": "1.5",
    "retry_backoff.max": "60",
    "retry_backoff.jitter": "on",
    "concurrency": "allow",
    "misfire": "skip",
    "misfire_grace": "300",
    "depends_on": "",
    "dependency_timeout": "",
    "tags": "reports, daily ops",
    "version": "",
}


def errors_beside(page: str, name: str) -> list[str]:
    """Return the errors shown beside one input of the job form."""
    found = re.search(
        rf'<ul class="field-errors" id="e-{name.replace(".", "-")}">(.*?)</ul>',
        page,
        re.S,
    )
    if found is None:
        return []
    return [html_text.unescape(m) for m in re.findall(r"<li>(.*?)</li>", found[1])]


def input_value(page: str, name: str) -> str:
    found = re.search(rf'<input [^>]*name="{re.escape(name)}"[^>]*>', page)
    assert found, f"no input {name}"
    value = re.search(r'value="([^"]*)"', found[0])
    return html_text.unescape(value[1]) if value else ""


async def test_the_new_job_form_has_every_job_field(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs/new")
    assert response.status_code == 200
    for spec in INPUTS:
        assert f'name="{spec.name}"' in response.text, spec.name
        if spec.name != "type":
            assert f'for="f-{spec.name.replace(".", "-")}"' in response.text
    assert 'value="command" checked' in response.text
    assert 'id="f-enabled" name="enabled" type="checkbox" value="on" checked' in (
        response.text
    )
    http = await client.get("/jobs/new?type=http")
    assert 'value="http" checked' in http.text


async def test_the_jobs_list_offers_a_new_job_button(client: httpx.AsyncClient) -> None:
    page = (await client.get("/jobs")).text
    assert '<a class="button" href="/jobs/new">New job</a>' in page


async def test_a_command_job_made_by_the_form_stores_every_field(
    client: httpx.AsyncClient, node: Node
) -> None:
    response = await client.post("/jobs/new", data=COMMAND_FORM)

    assert response.status_code == 303
    assert response.headers["location"] == "/jobs/nightly-report?done=created"
    d = (await node.jobs.resolve("nightly-report")).definition
    assert (d.type, d.schedule, d.timezone) == (
        JobType.COMMAND,
        "0 9-17 * * 1-5",
        "Europe/Berlin",
    )
    assert d.command == "echo one\necho two"
    assert d.description == "Builds the report"
    assert d.enabled is True
    assert dict(d.env) == {"REGION": "eu", "API_TOKEN": "s3cret"}
    assert d.timeout == timedelta(seconds=90)
    assert d.retries == 3
    backoff = d.retry_backoff
    assert (backoff.initial, backoff.factor, backoff.max, backoff.jitter) == (
        timedelta(seconds=5),
        1.5,
        timedelta(seconds=60),
        True,
    )
    assert (d.concurrency, d.misfire) == (Concurrency.ALLOW, Misfire.SKIP)
    assert d.misfire_grace == timedelta(seconds=300)
    assert d.tags == ("reports", "daily", "ops")
    page = (await client.get(response.headers["location"])).text
    assert "Job created." in page


async def test_empty_inputs_take_the_defaults_and_unchecked_enabled_pauses(
    client: httpx.AsyncClient, node: Node
) -> None:
    form = {"name": "bare", "type": "command", "command": "true"}
    assert (await client.post("/jobs/new", data=form)).status_code == 303
    d = (await node.jobs.resolve("bare")).definition
    assert d.enabled is False
    assert d.schedule is None
    assert d.timezone == node.config.scheduler.timezone
    assert d.timeout == timedelta(seconds=node.config.scheduler.job_timeout)
    assert (d.retries, d.concurrency, d.misfire) == (0, Concurrency.FORBID, "run_once")
    assert d.tags == ()
    assert d.depends_on == ()


async def test_http_and_webhook_jobs_take_their_own_fields_and_drop_the_others(
    client: httpx.AsyncClient, node: Node
) -> None:
    http = {
        "name": "ping",
        "type": "http",
        "enabled": "on",
        "url": "https://example.test/health",
        "method": "post",
        "headers": "Content-Type: application/json\nX-Trace:  abc ",
        "body": '{"ok": true}',
        "expect_status": "200, 204",
        "command": "left over from the command type",
        "secret": "left over from the webhook type",
    }
    assert (await client.post("/jobs/new", data=http)).status_code == 303
    d = (await node.jobs.resolve("ping")).definition
    assert (d.type, d.url, d.method, d.body) == (
        JobType.HTTP,
        "https://example.test/health",
        "POST",
        '{"ok": true}',
    )
    assert dict(d.headers) == {"Content-Type": "application/json", "X-Trace": "abc"}
    assert d.expect_status == (200, 204)
    assert (d.command, d.secret) == (None, None)

    hook = {
        "name": "notify",
        "type": "webhook",
        "url": "https://hooks.example.test/in",
        "secret": "hmac-key",
        "method": "PUT",
        "body": "not for webhooks",
    }
    assert (await client.post("/jobs/new", data=hook)).status_code == 303
    w = (await node.jobs.resolve("notify")).definition
    assert (w.type, w.secret, w.method, w.body) == (
        JobType.WEBHOOK,
        "hmac-key",
        None,
        None,
    )


async def test_a_bad_cron_is_shown_beside_the_schedule_and_nothing_is_stored(
    client: httpx.AsyncClient, node: Node
) -> None:
    form = {**COMMAND_FORM, "schedule": "0 99 * * *"}
    response = await client.post("/jobs/new", data=form)

    assert response.status_code == 200
    page = response.text
    (error,) = errors_beside(page, "schedule")
    assert "99" in error
    assert "hour" in error
    assert 'id="error-summary"' in page
    assert 'href="#f-schedule"' in page
    assert 'aria-invalid="true"' in page
    assert input_value(page, "schedule") == "0 99 * * *"
    assert input_value(page, "name") == "nightly-report"
    assert (await node.store.count_jobs()).enabled == 0


async def test_every_bad_input_is_named_beside_its_own_input_at_once(
    client: httpx.AsyncClient, node: Node
) -> None:
    form = {
        "name": "Bad Name",
        "type": "http",
        "url": "ftp://example.test",
        "headers": "no colon here",
        "expect_status": "200, abc",
        "timeout": "soon",
        "retries": "-1",
        "retry_backoff.factor": "x",
        "env": "1BAD=value",
        "tags": "ok bad!tag",
        "timezone": "Mars/Olympus",
    }
    page = (await client.post("/jobs/new", data=form)).text

    assert errors_beside(page, "name"), "name"
    assert errors_beside(page, "url"), "url"
    assert errors_beside(page, "headers") == ["line 1 has no ':': write Name: value"]
    assert errors_beside(page, "expect_status") == ["'abc' is not a whole number"]
    assert errors_beside(page, "timeout") == ["'soon' is not a number of seconds"]
    assert errors_beside(page, "retries"), "retries"
    assert errors_beside(page, "retry_backoff.factor") == ["'x' is not a number"]
    (env_error,) = errors_beside(page, "env")
    assert "1BAD" in env_error
    assert any("bad!tag" in e for e in errors_beside(page, "tags"))
    assert any("Mars/Olympus" in e for e in errors_beside(page, "timezone"))
    assert (await node.store.count_jobs()).enabled == 0


async def test_a_taken_name_is_refused_beside_the_name(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "nightly-report")
    page = (await client.post("/jobs/new", data=COMMAND_FORM)).text
    (error,) = errors_beside(page, "name")
    assert "already exists" in error


async def test_the_edit_form_masks_secrets_and_saving_keeps_them(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(
        node,
        "hook",
        type=JobType.WEBHOOK,
        command=None,
        url="https://user:pw@hooks.example.test/in",
        headers={"Authorization": "Bearer abc", "X-Env": "prod"},
        secret="hmac-key",
        env={"DB_PASSWORD": "hunter2"},
    )
    edit = await client.get("/jobs/hook/edit")
    assert edit.status_code == 200
    page = edit.text
    for secret in ("hmac-key", "hunter2", "Bearer abc", ":pw@"):
        assert secret not in page
    assert input_value(page, "secret") == "********"

    form = {
        "name": "hook",
        "type": "webhook",
        "enabled": "on",
        "url": input_value(page, "url"),
        "headers": "Authorization: ********\nX-Env: staging",
        "secret": "********",
        "env": "DB_PASSWORD=********",
        "version": input_value(page, "version"),
        "description": "now described",
    }
    response = await client.post("/jobs/hook/edit", data=form)

    assert response.status_code == 303, errors_beside(response.text, "url")
    assert response.headers["location"] == "/jobs/hook?done=updated"
    d = (await node.jobs.resolve("hook")).definition
    assert d.secret == "hmac-key"
    assert d.url == "https://user:pw@hooks.example.test/in"
    assert dict(d.headers) == {"Authorization": "Bearer abc", "X-Env": "staging"}
    assert dict(d.env) == {"DB_PASSWORD": "hunter2"}
    assert d.description == "now described"


async def test_saving_over_a_change_made_meanwhile_is_refused(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "shared", description="first")
    page = (await client.get("/jobs/shared/edit")).text
    version = input_value(page, "version")
    job = await node.jobs.resolve("shared")
    node.clock.advance(1)  # type: ignore[attr-defined]
    await node.jobs.set_enabled(job, False)  # someone else changes it

    form = {"name": "shared", "type": "command", "command": "true", "version": version}
    response = await client.post("/jobs/shared/edit", data=form)

    assert response.status_code == 200
    assert "changed by someone else" in response.text
    stored = (await node.jobs.resolve("shared")).definition
    assert stored.description == "first"
    # The form now carries the new version: saving again replaces the change.
    again = {**form, "version": input_value(response.text, "version")}
    assert (await client.post("/jobs/shared/edit", data=again)).status_code == 303
    assert (await node.jobs.resolve("shared")).definition.description == ""


async def test_the_job_page_shows_settings_next_fires_and_runs(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(
        node,
        "weekday",
        schedule="0 9-17 * * 1-5",
        timezone="Europe/Berlin",
        env={"API_KEY": "abc123"},
    )
    run = await run_to(node, "weekday", RunState.FAILED)

    page = (await client.get("/jobs/weekday")).text

    settings = section(page, "job")
    assert "<code>0 9-17 * * 1-5</code>" in settings
    assert "on weekdays (Monday through Friday)" in settings
    assert "abc123" not in settings
    assert "API_KEY=********" in settings
    fires = re.findall(r'<time datetime="([^"]+)" data-zone="Europe/Berlin">', settings)
    # Monday 2026-01-05 08:30 UTC is 09:30 in Berlin: next 10:00 local, 09:00 UTC.
    assert fires == [
        "2026-01-05T09:00:00Z",
        "2026-01-05T10:00:00Z",
        "2026-01-05T11:00:00Z",
        "2026-01-05T12:00:00Z",
        "2026-01-05T13:00:00Z",
    ]
    job = await node.jobs.resolve("weekday")
    assert f'action="/jobs/{job.id}/run"' in settings
    assert f'action="/jobs/{job.id}/pause"' in settings
    assert f'href="/runs/{run.id}"' in section(page, "runs")
    assert "no dependencies" in section(page, "graph")


async def test_each_job_page_partial_renders_alone(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "solo")
    for name in ("job", "graph", "runs"):
        response = await client.get(f"/jobs/solo?partial={name}")
        assert response.status_code == 200, name
        assert "<html" not in response.text


async def test_run_now_pause_and_resume_through_the_page(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "manual", schedule="@hourly")

    ran = await client.post("/jobs/manual/run")
    assert ran.status_code == 303
    location = ran.headers["location"]
    assert location.endswith("?done=started")
    run_id = int(location.removeprefix("/runs/").removesuffix("?done=started"))
    assert "Run started." in (await client.get(location)).text
    assert (await node.store.get_run(run_id)).job_name == "manual"

    paused = await client.post("/jobs/manual/pause")
    assert paused.headers["location"] == "/jobs/manual?done=paused"
    assert (await node.jobs.resolve("manual")).definition.enabled is False
    page = (await client.get("/jobs/manual?done=paused")).text
    assert "Job paused" in page
    job = await node.jobs.resolve("manual")
    assert f'action="/jobs/{job.id}/resume"' in page
    assert "none while paused" in page

    await client.post(f"/jobs/{job.id}/resume")
    assert (await node.jobs.resolve("manual")).definition.enabled is True


async def test_a_refused_run_now_says_why(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "busy")  # concurrency forbid
    await run_to(node, "busy", None)
    response = await client.post("/jobs/busy/run")
    assert response.status_code == 409
    assert 'href="/jobs/busy"' in response.text


async def test_delete_asks_first_and_refuses_while_jobs_depend_on_it(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "upstream")
    await add_job(node, "downstream", depends_on=("upstream",))

    confirm = (await client.get("/jobs/upstream/delete")).text
    assert "cannot be deleted while other jobs depend on it" in confirm
    assert 'href="/jobs/downstream"' in confirm
    refused = await client.post("/jobs/upstream/delete")
    assert refused.status_code == 409
    assert await node.jobs.resolve("upstream")

    confirm = (await client.get("/jobs/downstream/delete")).text
    downstream = await node.jobs.resolve("downstream")
    assert f'action="/jobs/{downstream.id}/delete"' in confirm
    deleted = await client.post("/jobs/downstream/delete")
    assert deleted.headers["location"] == "/jobs?deleted=downstream"
    assert (
        "<strong>downstream</strong> deleted"
        in (await client.get(deleted.headers["location"])).text
    )
    remaining = await node.store.list_jobs(JobFilter(), 10, None)
    assert [j.name for j in remaining.items] == ["upstream"]


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "http://evil.example"},
        {"origin": "null"},
    ],
)
async def test_posts_from_another_site_are_refused_and_change_nothing(
    client: httpx.AsyncClient, node: Node, headers: dict[str, str]
) -> None:
    await add_job(node, "target")
    for path in ("/jobs/target/delete", "/jobs/target/pause", "/jobs/target/run"):
        response = await client.post(path, headers=headers)
        assert response.status_code == 403, path
    created = await client.post("/jobs/new", data=COMMAND_FORM, headers=headers)
    assert created.status_code == 403
    job = await node.jobs.resolve("target")
    assert job.definition.enabled is True
    assert (await node.store.active_runs([job.id]))[job.id] == []
    assert (await node.store.count_jobs()).enabled == 1


async def test_a_same_origin_post_is_taken(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "mine")
    headers = {"origin": "http://test", "sec-fetch-site": "same-origin"}
    response = await client.post("/jobs/mine/pause", headers=headers)
    assert response.status_code == 303


async def test_a_post_that_is_not_a_form_is_refused(
    client: httpx.AsyncClient, node: Node
) -> None:
    response = await client.post("/jobs/new", json={"name": "x", "command": "true"})
    assert response.status_code == 415
    assert (await node.store.count_jobs()).enabled == 0


async def test_the_schedule_preview_reads_weekday_hours(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/ui/schedule-preview",
        params={"schedule": "0 9-17 * * 1-5", "timezone": "UTC"},
    )
    assert response.status_code == 200
    assert "Every hour from 09:00 through 17:00, on weekdays" in response.text
    fires = re.findall(r'<time datetime="([^"]+)" data-zone="UTC">', response.text)
    # From Monday 08:30: the rest of Monday's hours, all on a weekday, on the hour.
    assert fires == [f"2026-01-05T{h:02}:00:00Z" for h in range(9, 14)]


async def test_the_schedule_preview_shows_an_error_as_a_preview(
    client: httpx.AsyncClient,
) -> None:
    bad = await client.get("/ui/schedule-preview", params={"schedule": "0 99 * * *"})
    assert bad.status_code == 200
    assert 'class="preview-error"' in bad.text
    assert "99" in bad.text
    zone = await client.get(
        "/ui/schedule-preview", params={"schedule": "@daily", "timezone": "Nowhere"}
    )
    assert "Nowhere" in zone.text
    assert 'class="preview-error"' in zone.text
    empty = await client.get("/ui/schedule-preview", params={"schedule": ""})
    assert "No schedule" in empty.text


async def test_the_edit_preview_counts_every_from_the_jobs_creation(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "interval", schedule="@every 7m")
    job = await node.jobs.resolve("interval")
    node.clock.advance(600)  # type: ignore[attr-defined]
    response = await client.get(
        "/ui/schedule-preview", params={"schedule": "@every 7m", "job": str(job.id)}
    )
    fires = re.findall(r'<time datetime="([^"]+)"', response.text)
    assert fires[0] == "2026-01-05T08:44:00Z"  # created 08:30, now 08:40


async def test_the_run_page_shows_attempts_and_output(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "printer")
    run = await run_to(node, "printer", RunState.FAILED, output="hello <b>\n")

    page = (await client.get(f"/runs/{run.id}")).text

    details = section(page, "run")
    assert 'data-state="failed"' in details
    assert "exit 1" in details
    assert "ui-test" in details
    output = section(page, "output")
    assert "hello &lt;b&gt;" in output
    assert "data-live-done" in details
    assert "data-live-done" in output
    assert f'href="/api/runs/{run.id}/attempts/1/output"' in output


async def test_a_running_runs_output_stays_live(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "long")
    run = await run_to(node, "long", None)
    page = (await client.get(f"/runs/{run.id}")).text
    assert "data-live-done" not in page
    assert f'action="/runs/{run.id}/cancel"' in page
    assert ">live<" in section(page, "output")

    cancelled = await client.post(f"/runs/{run.id}/cancel")
    assert cancelled.headers["location"] == f"/runs/{run.id}?done=cancelled"
    assert "Cancel requested" in (await client.get(cancelled.headers["location"])).text
    stored = await node.store.get_run(run.id)
    assert stored.state is RunState.RUNNING  # its worker stops it; asked to
    assert stored.reason == "cancelled by request"


async def test_missing_jobs_and_runs_answer_a_404_page(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/jobs/nothing", "/jobs/nothing/edit", "/runs/999", "/runs/abc"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "text/html" in response.headers["content-type"]
    bad = await client.get("/runs/1?attempt=x")
    assert bad.status_code in (404, 422)


async def test_a_job_named_new_is_reached_by_its_id(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "new")
    job = await node.jobs.resolve("new")
    listing = (await client.get("/jobs")).text
    assert f'href="/jobs/{job.id}">new</a>' in listing
    page = await client.get(f"/jobs/{job.id}")
    assert page.status_code == 200
    assert f'action="/jobs/{job.id}/run"' in page.text
    assert (await client.get("/jobs/new")).text.count('name="command"') == 1


async def test_a_save_that_changes_nothing_leaves_the_job_as_stored(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(
        node,
        "texts",
        description="line one\nline two",
        command="\n\necho x\r\n",
        env={"MULTI": "a\nb", "QUOTED": '"as is"', "PLAIN": " spaced "},
    )
    before = (await node.jobs.resolve("texts")).definition
    page = (await client.get("/jobs/texts/edit")).text
    # A browser reads line breaks as LF and sends each input's text with CRLF.
    form = {
        name: line_feeds(textarea_value(page, name)).replace("\n", "\r\n")
        for name in ("description", "command", "env")
    }
    form.update(
        name="texts",
        type="command",
        enabled="on",
        version=input_value(page, "version"),
        timeout=input_value(page, "timeout"),
    )

    response = await client.post(
        f"/jobs/{(await node.jobs.resolve('texts')).id}/edit", data=form
    )

    assert response.status_code == 303, response.text
    after = (await node.jobs.resolve("texts")).definition
    assert after.description == before.description
    assert after.command == before.command
    assert dict(after.env) == dict(before.env)


def textarea_value(page: str, name: str) -> str:
    """Return a textarea's text as a browser reads it: one leading LF dropped."""
    found = re.search(
        rf'<textarea [^>]*name="{re.escape(name)}"[^>]*>(.*?)</textarea>', page, re.S
    )
    assert found, f"no textarea {name}"
    return html_text.unescape(found[1]).removeprefix("\n")


async def test_a_multi_line_environment_value_is_written_as_a_json_string(
    client: httpx.AsyncClient, node: Node
) -> None:
    form = {
        "name": "envs",
        "type": "command",
        "command": "true",
        "env": 'MULTI="a\\nb"\nPLAIN=x"y',
    }
    assert (await client.post("/jobs/new", data=form)).status_code == 303
    assert dict((await node.jobs.resolve("envs")).definition.env) == {
        "MULTI": "a\nb",
        "PLAIN": 'x"y',
    }
    bad = {**form, "name": "envs2", "env": 'OPEN="never closed'}
    (error,) = errors_beside((await client.post("/jobs/new", data=bad)).text, "env")
    assert "JSON string" in error


async def test_ids_no_store_can_hold_answer_a_404_page(
    client: httpx.AsyncClient,
) -> None:
    huge = "99999999999999999999"
    for path in (
        f"/jobs/{huge}",
        f"/jobs/{huge}/edit",
        f"/jobs/{huge}/delete",
        f"/jobs/{huge}?partial=runs",
        f"/runs/{huge}",
        "/runs/9999999999999999999",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "text/html" in response.headers["content-type"], path
    for path in (
        f"/jobs/{huge}/run",
        f"/jobs/{huge}/delete",
        "/runs/9999999999999999999/cancel",
    ):
        assert (await client.post(path)).status_code == 404, path
    preview = await client.get(
        "/ui/schedule-preview", params={"schedule": "@daily", "job": huge}
    )
    assert preview.status_code == 200


async def test_every_error_shows_at_once_even_after_a_model_error(
    client: httpx.AsyncClient,
) -> None:
    form = {
        "name": "",
        "type": "command",
        "command": "",
        "timeout": "-5",
        "timezone": "Nowhere",
        "schedule": "0 99 * * *",
    }
    page = (await client.post("/jobs/new", data=form)).text
    assert errors_beside(page, "name") == ["is required: give the job a name"]
    assert errors_beside(page, "command") == ["is required for command jobs"]
    assert errors_beside(page, "timeout")
    assert errors_beside(page, "timezone")
    unicode_digits = {**form, "name": "ok", "timeout": "\u0663", "retries": "1_0"}
    page = (await client.post("/jobs/new", data=unicode_digits)).text
    assert errors_beside(page, "timeout") == ["'\u0663' is not a number of seconds"]
    assert errors_beside(page, "retries") == ["'1_0' is not a whole number"]


async def test_a_dependency_named_new_is_linked_by_its_id(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "new")
    await add_job(node, "after-new", depends_on=("new",))
    new = await node.jobs.resolve("new")
    settings = section((await client.get("/jobs/after-new")).text, "job")
    assert f'<a href="/jobs/{new.id}">new</a>' in settings
    confirm = (await client.get(f"/jobs/{new.id}/delete")).text
    assert 'href="/jobs/after-new">after-new</a>' in confirm


async def test_the_output_is_shown_as_a_terminal_leaves_it(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "colours")
    output = "\x1b[31mred\x1b[0m\n10%\r55%\r100%\nbell\x07\n<script>x</script>\n"
    run = await run_to(node, "colours", RunState.SUCCEEDED, output=output)
    shown = section((await client.get(f"/runs/{run.id}")).text, "output")
    assert ">red\n100%\nbell\ufffd\n&lt;script&gt;x&lt;/script&gt;\n</pre>" in shown


async def test_an_ended_run_without_attempts_says_it_ended(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "dep")
    await add_job(node, "waiter", depends_on=("dep",))
    run = await node.jobs.run_now(await node.jobs.resolve("waiter"))
    await node.jobs.cancel(run.id)
    page = (await client.get(f"/runs/{run.id}")).text
    assert "the run ended before one was made" in page


async def test_only_a_job_name_is_echoed_as_deleted(client: httpx.AsyncClient) -> None:
    shown = (await client.get("/jobs?deleted=nightly")).text
    assert "<strong>nightly</strong> deleted" in shown
    for text in ("Your account is locked", "<b>x</b>", ""):
        page = (await client.get("/jobs", params={"deleted": text})).text
        assert 'class="notice"' not in page


async def test_a_form_over_the_body_limit_answers_a_page(
    client: httpx.AsyncClient, node: Node
) -> None:
    limit = node.config.server.max_request_bytes
    form = {**COMMAND_FORM, "command": "x" * (limit + 1)}
    response = await client.post(
        "/jobs/new", data=form, headers={"accept": "text/html"}
    )
    assert response.status_code == 413
    assert "text/html" in response.headers["content-type"]
    assert "server.max_request_bytes" in response.text


@pytest.mark.parametrize(
    "headers",
    [{"sec-fetch-site": "cross-site"}, {"origin": "http://evil.example"}],
)
async def test_api_writes_from_another_site_are_refused_too(
    client: httpx.AsyncClient, node: Node, headers: dict[str, str]
) -> None:
    await add_job(node, "target")
    job = await node.jobs.resolve("target")
    for path in (f"/api/jobs/{job.id}/run", f"/api/jobs/{job.id}/pause"):
        response = await client.post(path, headers=headers)
        assert response.status_code == 403, path
        assert "from browsers on its own pages only" in response.text
    deleted = await client.delete(f"/api/jobs/{job.id}", headers=headers)
    assert deleted.status_code == 403
    stored = await node.jobs.resolve("target")
    assert stored.definition.enabled is True
    assert (await node.store.active_runs([job.id]))[job.id] == []
    # Reads stay open, and clients that are not browsers write as before.
    assert (await client.get("/api/jobs", headers=headers)).status_code == 200
    assert (await client.post(f"/api/jobs/{job.id}/pause")).status_code == 200


async def test_a_browser_gets_a_page_for_a_path_that_does_not_exist(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/nowhere", headers={"accept": "text/html"})
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]
    api = await client.get("/api/nowhere", headers={"accept": "text/html"})
    assert api.headers["content-type"].startswith("application/json")


async def test_a_bad_zone_and_a_bad_cron_are_both_named(
    client: httpx.AsyncClient,
) -> None:
    form = {
        "name": "both",
        "type": "command",
        "command": "true",
        "schedule": "61 * * * *",
        "timezone": "Mars/Olympus",
    }
    page = (await client.post("/jobs/new", data=form)).text
    assert errors_beside(page, "timezone")
    assert errors_beside(page, "schedule")


async def test_an_attempt_a_run_does_not_have_is_a_404(
    client: httpx.AsyncClient, node: Node
) -> None:
    await add_job(node, "once")
    run = await run_to(node, "once", RunState.SUCCEEDED)
    assert (await client.get(f"/runs/{run.id}?attempt=2")).status_code == 404
    assert (await client.get(f"/runs/{run.id}?attempt=1")).status_code == 200
