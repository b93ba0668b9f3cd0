"""Drive job dependencies through a real `socmeth serve`: demands, pushes, failures.

Every assertion reads the runs the API shows; instants compared with each other all
come from the one server clock.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, create, parse, run_now

pytestmark = pytest.mark.slow

# A scheduler turn takes place at least once a second (scheduler.MAX_SLEEP_S); a
# stray run would show within two.
SETTLE_S = 1.5

Run = dict[str, Any]


def runs_of(server: Server, name: str) -> list[Run]:
    """Return the runs of a job, newest first, through GET /api/runs?job=NAME."""
    response = server.api("GET", "/api/runs", params={"job": name, "limit": 500})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def wait_until(
    check: Callable[[], bool], what: str, server: Server, timeout: float = 20
) -> None:
    """Poll `check` every 0.1 s until it holds; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s; log:\n{server.log()}")
        time.sleep(0.1)


def finish(server: Server, run_id: int, timeout: float = 20) -> Run:
    """Wait for a run to end; fail with the server log if it does not."""
    try:
        return server.wait_for_run(run_id, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlog:\n{server.log()}") from None


def wait_for_runs(
    server: Server, name: str, count: int, timeout: float = 20
) -> list[Run]:
    """Wait until a job has `count` runs, all ended; return them oldest first."""
    found: list[Run] = []

    def ended() -> bool:
        nonlocal found
        found = runs_of(server, name)
        return len(found) >= count and all(r["finished_at"] for r in found)

    wait_until(ended, f"{count} ended runs of {name}", server, timeout)
    return found[::-1]


def assert_no_more_runs(server: Server, counts: dict[str, int]) -> None:
    """Let the scheduler take a few turns, then check no job got another run."""
    time.sleep(SETTLE_S)
    found = {name: len(runs_of(server, name)) for name in counts}
    assert found == counts, f"log:\n{server.log()}"


def exact_runs(server: Server, name: str, count: int) -> list[Run]:
    """Return a job's runs, newest first, failing with the log if not `count`."""
    runs = runs_of(server, name)
    assert len(runs) == count, f"{name}: {runs}\nlog:\n{server.log()}"
    return runs


def only_run(server: Server, name: str) -> Run:
    (run,) = exact_runs(server, name, 1)
    return run


def started_at(run: Run) -> datetime:
    """Return when the run's first attempt started."""
    return parse(run["attempts"][0]["started_at"])


def finished_at(run: Run) -> datetime:
    return parse(run["finished_at"])


def upstream(run: Run) -> dict[str, int]:
    """Map each dependency a run waited for, or was fed by, to that run's id."""
    return {link["job"]: link["run_id"] for link in run["upstream_runs"]}


def create_diamond(server: Server) -> None:
    """Create a; b and c after a; d after b and c. None has a schedule."""
    create(server, name="a", command="sleep 0.5")
    create(server, name="b", command="sleep 0.5", depends_on=["a"])
    create(server, name="c", command="sleep 0.5", depends_on=["a"])
    create(server, name="d", command="true", depends_on=["b", "c"])


def create_readme_example(server: Server, build: str = "sleep 1") -> None:
    create(server, name="run-tests", command="sleep 1")
    create(server, name="build-docker", command=build)
    job = create(
        server,
        name="deploy-app",
        command="true",
        schedule="0 3 * * *",
        depends_on=["run-tests", "build-docker"],
    )
    assert job["depends_on"] == ["run-tests", "build-docker"]
    assert job["next_fire_at"] is not None


def test_readme_example_runs_both_dependencies_in_parallel_then_deploys(
    server: Server,
) -> None:
    create_readme_example(server)

    waiting = run_now(server, "deploy-app")
    assert waiting["state"] == "waiting"
    assert waiting["attempts"] == []
    deploy = finish(server, waiting["id"])

    assert deploy["state"] == "succeeded", deploy
    assert deploy["trigger"] == "manual"
    tests = only_run(server, "run-tests")
    build = only_run(server, "build-docker")
    for dependency in (tests, build):
        assert dependency["state"] == "succeeded"
        assert dependency["trigger"] == "dependency"
        assert dependency["needed_by_run_id"] == deploy["id"]
    assert upstream(deploy) == {"run-tests": tests["id"], "build-docker": build["id"]}
    assert {link["state"] for link in deploy["upstream_runs"]} == {"succeeded"}
    # Parallel: each began before the other ended.
    assert started_at(tests) < finished_at(build)
    assert started_at(build) < finished_at(tests)
    (attempt,) = deploy["attempts"]
    assert parse(attempt["started_at"]) > max(finished_at(tests), finished_at(build))


def test_a_second_trigger_runs_each_dependency_once_more(server: Server) -> None:
    create_readme_example(server, build="sleep 0.5")
    first = finish(server, run_now(server, "deploy-app")["id"])
    assert first["state"] == "succeeded", first

    second = finish(server, run_now(server, "deploy-app")["id"])

    assert second["state"] == "succeeded", second
    for name in ("run-tests", "build-docker"):
        new, old = exact_runs(server, name, 2)
        assert old["needed_by_run_id"] == first["id"]
        assert new["needed_by_run_id"] == second["id"]
        assert new["trigger"] == "dependency"
        assert new["state"] == "succeeded"
        assert upstream(second)[name] == new["id"]
        assert parse(second["attempts"][0]["started_at"]) > finished_at(new)
    assert_no_more_runs(server, {"run-tests": 2, "build-docker": 2, "deploy-app": 2})


def test_a_success_since_the_last_run_is_used_instead_of_a_new_run(
    server: Server,
) -> None:
    create_readme_example(server, build="sleep 0.5")
    tests = finish(server, run_now(server, "run-tests")["id"])
    assert tests["state"] == "succeeded", tests

    deploy = finish(server, run_now(server, "deploy-app")["id"])

    assert deploy["state"] == "succeeded", deploy
    build = only_run(server, "build-docker")
    assert build["needed_by_run_id"] == deploy["id"]
    assert upstream(deploy) == {"run-tests": tests["id"], "build-docker": build["id"]}
    assert_no_more_runs(server, {"run-tests": 1, "build-docker": 1, "deploy-app": 1})


def test_a_failed_dependency_ends_the_dependent_upstream_failed(
    server: Server,
) -> None:
    create_readme_example(server, build="exit 3")

    deploy = finish(server, run_now(server, "deploy-app")["id"])

    build = only_run(server, "build-docker")
    assert build["state"] == "failed"
    assert build["needed_by_run_id"] == deploy["id"]
    assert deploy["state"] == "upstream_failed", deploy
    assert deploy["attempts"] == []
    assert "build-docker" in deploy["reason"]
    assert f"run {build['id']}" in deploy["reason"]
    metrics = server.api("GET", "/metrics").text
    assert 'socmeth_runs_total{job="deploy-app",state="upstream_failed"} 1.0' in (
        metrics
    )


def test_upstream_failure_passes_down_to_runs_waiting_on_the_dependent(
    server: Server,
) -> None:
    create(server, name="fetch", command="exit 1")
    create(server, name="transform", command="true", depends_on=["fetch"])
    create(server, name="publish", command="true", depends_on=["transform"])

    publish = finish(server, run_now(server, "publish")["id"])

    fetch = only_run(server, "fetch")
    transform = only_run(server, "transform")
    assert fetch["state"] == "failed"
    assert transform["state"] == "upstream_failed"
    assert transform["attempts"] == []
    assert f"fetch failed: its run {fetch['id']}" in transform["reason"]
    assert publish["state"] == "upstream_failed", publish
    assert publish["attempts"] == []
    assert f"transform failed: its run {transform['id']}" in publish["reason"]


def test_diamond_runs_each_job_once_in_order(server: Server) -> None:
    create_diamond(server)

    d = finish(server, run_now(server, "d")["id"])

    assert d["state"] == "succeeded", d
    a = only_run(server, "a")
    b = only_run(server, "b")
    c = only_run(server, "c")
    assert [r["state"] for r in (a, b, c)] == ["succeeded"] * 3
    assert b["needed_by_run_id"] == c["needed_by_run_id"] == d["id"]
    assert a["needed_by_run_id"] in (b["id"], c["id"])
    assert upstream(b) == upstream(c) == {"a": a["id"]}
    assert finished_at(a) < min(started_at(b), started_at(c))
    assert started_at(d) > max(finished_at(b), finished_at(c))
    assert_no_more_runs(server, {"a": 1, "b": 1, "c": 1, "d": 1})


def test_a_success_of_the_root_pushes_the_diamond_once(server: Server) -> None:
    create_diamond(server)

    run_now(server, "a")
    (d,) = wait_for_runs(server, "d", 1)

    a = only_run(server, "a")
    b = only_run(server, "b")
    c = only_run(server, "c")
    assert a["trigger"] == "manual"
    for pushed in (b, c, d):
        assert pushed["state"] == "succeeded", pushed
        assert pushed["trigger"] == "dependency"
        assert pushed["needed_by_run_id"] is None
    assert upstream(b) == upstream(c) == {"a": a["id"]}
    assert upstream(d) == {"b": b["id"], "c": c["id"]}
    assert finished_at(a) < min(started_at(b), started_at(c))
    assert started_at(d) > max(finished_at(b), finished_at(c))
    assert_no_more_runs(server, {"a": 1, "b": 1, "c": 1, "d": 1})


def test_no_push_while_the_dependent_has_a_run_waiting(
    server: Server, tmp_path: Path
) -> None:
    flag = tmp_path / "first-run-started"
    # The first run of source sleeps; any later one succeeds at once.
    create(
        server,
        name="source",
        command=f"[ -e {flag} ] || {{ touch {flag}; sleep 2; }}",
        concurrency="allow",
    )
    create(server, name="sink", command="true", depends_on=["source"])
    waiting = run_now(server, "sink")
    wait_until(flag.exists, "the demanded run of source started", server)

    by_hand = finish(server, run_now(server, "source")["id"])
    sink = finish(server, waiting["id"])

    assert by_hand["state"] == "succeeded", by_hand
    demanded = exact_runs(server, "source", 2)[1]
    assert demanded["needed_by_run_id"] == waiting["id"]
    assert finished_at(by_hand) < finished_at(demanded)
    # The success by hand found sink with a run waiting, so it pushed nothing;
    # that run went on waiting for the run it was linked to.
    assert sink["state"] == "succeeded", sink
    assert upstream(sink) == {"source": demanded["id"]}
    assert_no_more_runs(server, {"source": 2, "sink": 1})


def test_a_chain_of_five_runs_each_link_once_in_order(server: Server) -> None:
    names = [f"j{depth}" for depth in range(1, 6)]
    create(server, name="j1", command="true")
    for dependency, name in itertools.pairwise(names):
        create(server, name=name, command="true", depends_on=[dependency])

    last = finish(server, run_now(server, "j5")["id"], timeout=30)

    assert last["state"] == "succeeded", last
    runs = []
    for name in names:
        run = only_run(server, name)
        assert run["state"] == "succeeded", run
        runs.append(run)
    for earlier, later in itertools.pairwise(runs):
        assert earlier["needed_by_run_id"] == later["id"]
        assert upstream(later) == {earlier["job_name"]: earlier["id"]}
        assert started_at(later) > finished_at(earlier)
    assert_no_more_runs(server, dict.fromkeys(names, 1))


def field_error(response: Any, status: int) -> str:
    """Return the message of the single `depends_on` error of a refusal."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    (field,) = error["fields"]
    assert field["field"] == "depends_on"
    return str(field["message"])


def test_cycles_self_references_unknown_names_and_repeats_are_refused(
    server: Server,
) -> None:
    create_readme_example(server)

    cycle = server.api(
        "PUT", "/api/jobs/run-tests", json={"depends_on": ["deploy-app"]}
    )
    itself = server.api(
        "POST",
        "/api/jobs",
        json={"name": "loop", "command": "true", "depends_on": ["loop"]},
    )
    unknown = server.api(
        "POST",
        "/api/jobs",
        json={"name": "late", "command": "true", "depends_on": ["smoke-tests"]},
    )
    twice = server.api(
        "POST",
        "/api/jobs",
        json={"name": "again", "command": "true", "depends_on": ["run-tests"] * 2},
    )

    assert "run-tests -> deploy-app -> run-tests" in field_error(cycle, 422)
    assert "loop -> loop" in field_error(itself, 422)
    assert "smoke-tests" in field_error(unknown, 422)
    assert "run-tests more than once" in field_error(twice, 422)
    assert server.api("GET", "/api/jobs/run-tests").json()["depends_on"] == []
    for refused in ("loop", "late", "again"):
        assert server.api("GET", f"/api/jobs/{refused}").status_code == 404


def test_deleting_a_dependency_is_refused_and_renaming_it_updates_dependents(
    server: Server,
) -> None:
    create_readme_example(server)

    refused = server.api("DELETE", "/api/jobs/build-docker")

    assert "deploy-app" in field_error(refused, 409)
    assert server.api("GET", "/api/jobs/build-docker").status_code == 200
    renamed = server.api("PUT", "/api/jobs/run-tests", json={"name": "unit-tests"})
    assert renamed.status_code == 200, renamed.text
    deploy = server.api("GET", "/api/jobs/deploy-app").json()
    assert deploy["depends_on"] == ["unit-tests", "build-docker"]
    run = finish(server, run_now(server, "deploy-app")["id"])
    assert run["state"] == "succeeded", run
    assert set(upstream(run)) == {"unit-tests", "build-docker"}
    response = server.api("DELETE", "/api/jobs/deploy-app")
    assert response.status_code == 204, response.text
    assert server.api("DELETE", "/api/jobs/build-docker").status_code == 204


def test_a_paused_dependency_is_not_run_and_its_dependents_are_skipped(
    server: Server,
) -> None:
    create(server, name="extract", command="true")
    create(server, name="report", command="true", depends_on=["extract"])
    create(server, name="email", command="true", depends_on=["report"])
    paused = server.api("POST", "/api/jobs/extract/pause")
    assert paused.status_code == 200, paused.text

    report = finish(server, run_now(server, "report")["id"])
    email = finish(server, run_now(server, "email")["id"])

    assert report["state"] == "skipped", report
    assert report["attempts"] == []
    assert "extract is paused" in report["reason"]
    # Through a demanded run of report, which is skipped the same way.
    demanded, first = exact_runs(server, "report", 2)
    assert first["id"] == report["id"]
    assert demanded["needed_by_run_id"] == email["id"]
    assert demanded["state"] == "skipped", demanded
    assert "extract is paused" in demanded["reason"]
    assert email["state"] == "skipped", email
    assert email["attempts"] == []
    assert f"report was skipped: its run {demanded['id']}" in email["reason"]
    assert_no_more_runs(server, {"extract": 0, "report": 2, "email": 1})


def test_a_run_gives_up_waiting_after_its_dependency_timeout(server: Server) -> None:
    create(server, name="warehouse", command="sleep 8")
    create(
        server,
        name="dashboard",
        command="true",
        depends_on=["warehouse"],
        dependency_timeout=1,
    )

    started = time.monotonic()
    dashboard = finish(server, run_now(server, "dashboard")["id"])
    waited = time.monotonic() - started

    assert dashboard["state"] == "skipped", dashboard
    assert dashboard["attempts"] == []
    assert "dependency_timeout" in dashboard["reason"]
    assert "warehouse" in dashboard["reason"]
    assert 0.9 <= waited < 5, waited
    warehouse = only_run(server, "warehouse")
    assert warehouse["state"] == "running"
    cancelled = server.api("POST", f"/api/runs/{warehouse['id']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert finish(server, warehouse["id"])["state"] == "cancelled"


@pytest.mark.parametrize(
    ("sig", "command", "attempts"),
    [
        (signal.SIGTERM, "sleep 3", ["succeeded"]),
        (
            signal.SIGKILL,
            '[ "$SOCMETH_ATTEMPT" = 2 ] || sleep 3',
            ["lost", "succeeded"],
        ),
    ],
    ids=["sigterm-ends-within-grace", "sigkill-retried-after-restart"],
)
def test_a_restart_while_a_run_waits_completes_it_once(
    server_factory: Any, sig: signal.Signals, command: str, attempts: list[str]
) -> None:
    first: Server = server_factory()
    first.start()
    create(
        first, name="compile", command=command, retries=1, retry_backoff={"initial": 1}
    )
    create(first, name="release", command="true", depends_on=["compile"])
    waiting = run_now(first, "release")

    def compile_running() -> bool:
        runs = runs_of(first, "compile")
        return bool(runs) and runs[0]["state"] == "running"

    wait_until(compile_running, "compile running", first)
    # The scheduler stops before the workers, so even a success within the grace
    # is resolved only by the next life of the node.
    assert first.stop(sig) == (0 if sig is signal.SIGTERM else -signal.SIGKILL)
    second: Server = server_factory(data_dir=first.data_dir)
    second.start()
    release = finish(second, waiting["id"], timeout=30)

    assert release["state"] == "succeeded", f"{release}\n{first.log()}"
    compile_run = only_run(second, "compile")
    assert compile_run["state"] == "succeeded"
    assert compile_run["needed_by_run_id"] == waiting["id"]
    assert [a["state"] for a in compile_run["attempts"]] == attempts
    assert upstream(release) == {"compile": compile_run["id"]}
    (attempt,) = release["attempts"]
    assert parse(attempt["started_at"]) > finished_at(compile_run)
    assert_no_more_runs(second, {"compile": 1, "release": 1})


def graph_of(server: Server, name: str) -> dict[str, Any]:
    response = server.api("GET", f"/api/jobs/{name}/dependencies")
    assert response.status_code == 200, response.text
    return dict(response.json())


def edges_of(graph: dict[str, Any]) -> set[tuple[str, str]]:
    edges = {(edge["from"], edge["to"]) for edge in graph["edges"]}
    assert len(edges) == len(graph["edges"]), graph["edges"]
    return edges


def test_the_dependency_graph_of_the_diamond_shows_jobs_edges_and_runs(
    server: Server,
) -> None:
    create_diamond(server)
    # From a middle job: its upstream and downstream, not its sibling.
    middle = graph_of(server, "b")
    assert middle["job"] == "b"
    assert middle["jobs"][0]["name"] == "b"
    assert sorted(job["name"] for job in middle["jobs"]) == ["a", "b", "d"]
    assert edges_of(middle) == {("a", "b"), ("b", "d")}
    assert all(job["latest_run"] is None for job in middle["jobs"])

    d = finish(server, run_now(server, "d")["id"])

    # From the sink the whole diamond is upstream; from the root, downstream.
    for name in ("d", "a"):
        assert_whole_diamond(server, name, d)


def assert_whole_diamond(server: Server, name: str, d: Run) -> None:
    """Check the graph seen from `name`: all four jobs and edges, each latest run."""
    graph = graph_of(server, name)
    assert graph["job"] == name
    assert graph["truncated"] is False
    assert graph["jobs"][0]["name"] == name
    jobs = {job["name"]: job for job in graph["jobs"]}
    assert sorted(jobs) == ["a", "b", "c", "d"]
    assert len(graph["jobs"]) == 4
    assert edges_of(graph) == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    assert jobs["d"]["latest_run"]["id"] == d["id"]
    for job in jobs.values():
        run = only_run(server, job["name"])
        assert job["enabled"] is True
        assert job["schedule"] is None
        assert job["latest_run"]["id"] == run["id"]
        assert job["latest_run"]["state"] == "succeeded"
        assert job["latest_run"]["finished_at"] == run["finished_at"]
