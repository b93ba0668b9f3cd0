"""Render the dashboard's pages and partials around a real node on SQLite."""

from __future__ import annotations

import re

import httpx
import pytest

from socmeth.models import JobDefinition, JobType, RunState
from socmeth.node import Node
from tests.integration.ui_support import (
    PEER,
    START,
    add_job,
    client,
    node,
    run_to,
    section,
)

__all__ = ["client", "node"]  # fixtures, used by name

XSS = "<script>alert(1)</script>"


async def test_the_dashboard_shows_active_failed_and_recent_runs(
    node: Node, client: httpx.AsyncClient
) -> None:
    await add_job(node, "nightly-report")
    await add_job(node, "cleanup")
    failed = await run_to(node, "nightly-report", RunState.FAILED)
    succeeded = await run_to(node, "cleanup", RunState.SUCCEEDED)
    running = await run_to(node, "cleanup", None)
    queued = await node.jobs.run_now(await node.jobs.resolve("nightly-report"))

    response = await client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    active = section(html, "active")
    assert f'id="run-{running.id}" data-state="running"' in active
    assert f'id="run-{queued.id}" data-state="queued"' in active
    assert f"run-{failed.id}" not in active
    failures = section(html, "failures")
    assert f'id="run-{failed.id}" data-state="failed"' in failures
    assert f"run-{succeeded.id}" not in failures
    assert "exit 1" in failures
    history = section(html, "history")
    assert f"run-{succeeded.id}" in history
    assert f"run-{failed.id}" in history
    assert f"run-{running.id}" not in history
    assert f'href="/runs/{failed.id}"' in html
    assert 'href="/jobs/nightly-report"' in html


async def test_the_summary_counts_runs_and_jobs_and_names_the_leader(
    node: Node, client: httpx.AsyncClient
) -> None:
    await add_job(node, "a")
    await add_job(node, "b", enabled=False)
    await run_to(node, "a", RunState.FAILED)
    await node.jobs.run_now(await node.jobs.resolve("a"))

    summary = (await client.get("/", params={"partial": "summary"})).text

    assert "<html" not in summary
    assert "ui-test" in summary  # the leader
    assert re.search(r'data-stat="queue_size">1<', summary)
    assert re.search(r'data-stat="enabled">1<', summary)
    assert re.search(r'data-stat="paused">1<', summary)
    assert re.search(r'data-state="failed">.*?class="count">1<', summary)
    assert re.search(r'data-state="queued">.*?class="count">1<', summary)


async def test_the_chart_counts_ended_and_failed_runs_of_the_last_day(
    node: Node, client: httpx.AsyncClient
) -> None:
    await add_job(node, "a")
    await run_to(node, "a", RunState.FAILED)
    await run_to(node, "a", RunState.SUCCEEDED)

    chart = (await client.get("/", params={"partial": "chart"})).text

    assert "Ended runs in the last 24 hours: 2, failed: 1" in chart
    assert chart.count('<g class="bar">') == 24
    # The current hour is the last bar: 08:00 UTC, when both runs ended.
    assert "2026-01-05 08:00:00 UTC: 2 ended, 1 failed" in chart


@pytest.mark.parametrize(
    "name", ["summary", "active", "failures", "chart", "health", "history"]
)
async def test_each_dashboard_partial_renders_alone(
    client: httpx.AsyncClient, name: str
) -> None:
    page = (await client.get("/")).text

    response = await client.get("/", params={"partial": name})

    assert response.status_code == 200
    assert "<html" not in response.text
    assert f'data-live-src="/?partial={name}"' in page
    assert response.text.strip() == section(page, name).strip()


async def test_node_health_lists_this_node_as_leader_and_the_expected_peer(
    client: httpx.AsyncClient,
) -> None:
    for path, params in (("/", {"partial": "health"}), ("/nodes", {})):
        html = (await client.get(path, params=params)).text

        assert "ui-test" in html
        assert "leader" in html
        assert 'state-up">up' in html
        assert PEER in html
        assert 'state-expected">expected' in html


async def test_the_nodes_page_shows_address_version_and_heartbeat(
    client: httpx.AsyncClient, node: Node
) -> None:
    response = await client.get("/nodes")

    assert response.status_code == 200
    row = re.search(r'<tr id="node-ui-test".*?</tr>', response.text, re.S)
    assert row is not None
    assert node.address in row.group(0)
    assert node.info.version in row.group(0)
    assert '<time datetime="' in row.group(0)
    assert "partial=nodes" in response.text


async def test_the_jobs_list_searches_and_filters_by_state_and_tag(
    node: Node, client: httpx.AsyncClient
) -> None:
    await add_job(node, "backup-db", tags=("db",))
    await add_job(node, "backup-files", enabled=False)
    await add_job(node, "report", tags=("db",))

    def names(html: str) -> list[str]:
        return re.findall(r'data-job="([^"]+)"', html)

    assert names((await client.get("/jobs")).text) == [
        "backup-db",
        "backup-files",
        "report",
    ]
    searched = await client.get("/jobs", params={"search": "backup"})
    assert names(searched.text) == ["backup-db", "backup-files"]
    assert 'value="backup"' in searched.text
    paused = await client.get("/jobs", params={"state": "paused"})
    assert names(paused.text) == ["backup-files"]
    tagged = await client.get("/jobs", params={"tag": "db", "partial": "jobs"})
    assert names(tagged.text) == ["backup-db", "report"]
    none = await client.get("/jobs", params={"search": "nothing"})
    assert "No job matches these filters." in none.text


async def test_the_jobs_list_pages_with_a_cursor_under_the_same_filters(
    node: Node, client: httpx.AsyncClient
) -> None:
    for name in ("a1", "a2", "a3", "b1"):
        await add_job(node, name)

    first = (await client.get("/jobs", params={"search": "a", "limit": 2})).text
    link = re.search(r'<a rel="next" href="([^"]+)"', first)
    assert link is not None
    second = (await client.get(link.group(1).replace("&amp;", "&"))).text

    assert re.findall(r'data-job="([^"]+)"', first) == ["a1", "a2"]
    assert re.findall(r'data-job="([^"]+)"', second) == ["a3"]
    assert 'rel="next"' not in second
    assert 'href="/jobs?search=a&amp;limit=2">First page' in second


async def test_the_jobs_list_shows_active_runs_and_links_each_job(
    node: Node, client: httpx.AsyncClient
) -> None:
    await add_job(node, "busy")
    await run_to(node, "busy", None)

    html = (await client.get("/jobs")).text

    row = re.search(r'<tr id="job-\d+" data-job="busy">.*?</tr>', html, re.S)
    assert row is not None
    assert 'href="/jobs/busy"' in row.group(0)
    assert 'state-running">running</span> 1' in row.group(0)


async def test_the_jobs_list_sorts_as_chosen_and_keeps_the_sort_in_its_links(
    node: Node, client: httpx.AsyncClient
) -> None:
    for name, schedule in [
        ("b-daily", "0 2 * * *"),
        ("d-manual", None),
        ("a-hourly", "0 * * * *"),
        ("c-minutely", "* * * * *"),
    ]:
        await add_job(node, name, schedule=schedule)

    def names(html: str) -> list[str]:
        return re.findall(r'data-job="([^"]+)"', html)

    first = (
        await client.get("/jobs", params={"sort": "next_fire_at", "limit": 2})
    ).text
    link = re.search(r'<a rel="next" href="([^"]+)"', first)
    assert link is not None
    second = (await client.get(link.group(1).replace("&amp;", "&"))).text
    by_name = (await client.get("/jobs")).text
    partial = await client.get("/jobs", params={"sort": "-name", "partial": "jobs"})
    updated = (await client.get("/jobs", params={"sort": "-updated_at"})).text

    assert names(first) == ["c-minutely", "a-hourly"]
    assert '<option value="next_fire_at" selected>' in first
    assert "sort=next_fire_at&amp;limit=2&amp;cursor=" in link.group(1)
    assert 'data-live-src="/jobs?sort=next_fire_at&amp;limit=2&amp;partial=jobs"' in (
        first
    )
    assert names(second) == ["b-daily", "d-manual"]  # no next fire: last
    assert 'href="/jobs?sort=next_fire_at&amp;limit=2">First page' in second
    assert names(by_name) == ["a-hourly", "b-daily", "c-minutely", "d-manual"]
    assert '<option value="name" selected>' in by_name
    assert '<th scope="col">Updated</th>' not in by_name
    assert "<html" not in partial.text
    assert names(partial.text) == ["d-manual", "c-minutely", "b-daily", "a-hourly"]
    assert "Jobs by name, Z to A" in partial.text
    assert '<th scope="col">Updated</th>' in updated


async def test_a_bad_sort_or_a_cursor_of_another_sort_answers_a_422_page(
    node: Node, client: httpx.AsyncClient
) -> None:
    for name in ("a", "b"):
        await add_job(node, name)
    page = (await client.get("/jobs", params={"sort": "-name", "limit": 1})).text
    cursor = re.search(r"cursor=([^\"&]+)", page)
    assert cursor is not None

    bad_sort = await client.get("/jobs", params={"sort": "newest"})
    other_sort = await client.get("/jobs", params={"cursor": cursor.group(1)})

    for response, field in ((bad_sort, "sort"), (other_sort, "cursor")):
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("text/html")
        assert f"<code>{field}</code>:" in response.text
    assert "-created_at, -name, -updated_at, name, next_fire_at" in bad_sort.text
    assert "pass sort=-name with it" in other_sort.text


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/jobs", {"limit": "0"}, "limit"),
        ("/jobs", {"limit": "abc"}, "limit"),
        ("/jobs", {"state": "asleep"}, "state"),
        ("/jobs", {"cursor": "not-a-cursor"}, "cursor"),
        ("/jobs", {"search": "x" * 201}, "search"),
        ("/jobs", {"tag": "a\x01b"}, "tag"),
        ("/", {"partial": "everything"}, "partial"),
        ("/nodes", {"partial": "jobs"}, "partial"),
    ],
    ids=[
        "limit-zero",
        "limit-text",
        "state",
        "cursor",
        "search-long",
        "tag-control",
        "dashboard-partial",
        "nodes-partial",
    ],
)
async def test_a_bad_query_parameter_answers_a_422_page_naming_it(
    client: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(path, params=params)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    assert f"<code>{field}</code>:" in response.text


async def test_pages_escape_job_names_descriptions_and_echoed_search(
    node: Node, client: httpx.AsyncClient
) -> None:
    # The API refuses such a name; the store does not, so a page must escape it.
    await node.store.create_job(
        JobDefinition(name=XSS, type=JobType.COMMAND, command="true"), None, START
    )
    await add_job(node, "plain", description='<img src=x onerror="alert(2)">')
    run = await run_to(node, XSS, RunState.FAILED)

    pages = [
        (await client.get("/jobs")).text,
        (await client.get("/")).text,
        (await client.get("/jobs", params={"search": '"><script>x()</script>'})).text,
    ]

    for html in pages:
        assert "<script>alert" not in html
        assert "<script>x()" not in html
        assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert 'href="/jobs/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"' in pages[0]
    assert f"run-{run.id}" in section(pages[1], "failures")


async def test_the_static_files_are_served(client: httpx.AsyncClient) -> None:
    css = await client.get("/ui/static/ui.css")
    script = await client.get("/ui/static/ui.js")

    assert css.status_code == 200
    assert "prefers-color-scheme: dark" in css.text
    assert script.status_code == 200
    assert "visibilityState" in script.text
    assert "javascript" in script.headers["content-type"]
