"""Take Redis or PostgreSQL away from three real nodes under load, then bring it back.

SPEC "Cluster and failover": PostgreSQL or Redis restarting, nodes reconnect with
backoff and carry on; nothing crashes and no run is lost (the store is the truth;
queued attempts are published again).

Each test runs its own throwaway Redis and PostgreSQL (tests/e2e/services.py), never
the machine's shared ones, and three `socmeth serve` nodes logging JSON lines. The
load is three `@every` jobs of `true` (concurrency `allow`, so that a fire whose run
waits behind the outage still gets its own run) and manual runs of short sleeps,
some running across the outage. After the outage the `@every` jobs are paused, every
run must end, and the runs table is checked fire by fire. A last test holds one node
with a single worker slot to what it promises while Redis is away.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import missing_service
from tests.e2e.cluster import Cluster, ClusterNode
from tests.e2e.conftest import parse
from tests.e2e.services import ThrowawayPostgres, ThrowawayRedis

pytestmark = pytest.mark.slow

TICKS = {"tick-a": 2, "tick-b": 2, "tick-c": 5}  # @every jobs: name -> interval (s)
ACTIVE_STATES = ("waiting", "queued", "running")
REDIS_OUTAGE_S = 10.0
POSTGRES_OUTAGE_S = 5.0
# After the service is back: the reaper republishes every 5 s, a worker's receive
# backs off up to 5 s. This much load after recovery shows the cluster carries on.
AFTER_RECOVERY_S = 8.0
SETTLE_TIMEOUT_S = 30.0
# A leader renews every 0.5 s once the store answers; a few seconds is generous.
LEADER_BACK_WITHIN_S = 5.0
# Lines with a traceback one node may log over an outage and its recovery: each loop
# backs off, so an outage costs a handful, not one per attempt or per poll.
MAX_TRACEBACKS_PER_NODE = 30


# Services and the cluster


@pytest.fixture
def redis_service(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[ThrowawayRedis]:
    """A started redis-server of this test's own; `persistent` by indirect param."""
    server = ThrowawayRedis(
        tmp_path / "redis", persistent=bool(getattr(request, "param", False))
    )
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_service() -> Iterator[ThrowawayPostgres]:
    """A started PostgreSQL cluster of this test's own."""
    if shutil.which("psql") is None:
        missing_service("psql is not installed")
    server = ThrowawayPostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def cluster(
    tmp_path: Path,
    redis_service: ThrowawayRedis,
    postgres_service: ThrowawayPostgres,
) -> Iterator[Cluster]:
    """Three nodes on the throwaway services, logging JSON lines; killed after."""
    made = Cluster(
        tmp_path / "cluster",
        3,
        postgres_url=postgres_service.url,
        redis_url=redis_service.url,
        env={"SOCMETH_LOGGING_FORMAT": "json"},
    )
    try:
        yield made
    finally:
        for node in made.nodes:
            if node.process is not None:
                node.process.kill()
                node.process.wait()
        if postgres_service.running:
            made.close()  # drops the database and the keys; the nodes are gone
        else:
            for node in made.nodes:
                node.client.close()


# Reading the nodes' logs


@dataclass(frozen=True)
class LogLine:
    at: datetime | None
    event: str | None
    level: str
    message: str
    traceback: bool
    raw: str


def read_log(node: ClusterNode) -> list[LogLine]:
    """Parse a node's JSON log lines; other lines (a crash's output) are kept raw."""
    lines = []
    for raw in node.log().splitlines():
        try:
            doc = json.loads(raw)
        except ValueError:
            lines.append(LogLine(None, None, "raw", raw, False, raw))
            continue
        if not isinstance(doc, dict):
            lines.append(LogLine(None, None, "raw", raw, False, raw))
            continue
        lines.append(
            LogLine(
                at=datetime.fromisoformat(doc["at"]),
                event=doc.get("event"),
                level=str(doc.get("level")),
                message=str(doc.get("message")),
                traceback="exception" in doc,
                raw=raw,
            )
        )
    return lines


def events_between(
    lines: list[LogLine], start: datetime, end: datetime | None = None
) -> Counter[str]:
    """Count the events logged at or after `start` (and before `end`)."""
    return Counter(
        line.event
        for line in lines
        if line.event
        and line.at is not None
        and line.at >= start
        and (end is None or line.at < end)
    )


def tracebacks_since(lines: list[LogLine], start: datetime) -> list[LogLine]:
    return [
        line
        for line in lines
        if line.traceback and line.at is not None and line.at >= start
    ]


def log_tail(node: ClusterNode, count: int = 30) -> str:
    return "\n".join(node.log().splitlines()[-count:])


# The cluster's state, from the API and from the store


def now_utc() -> datetime:
    return datetime.now(UTC)


def assert_all_alive(cluster: Cluster, when: str) -> None:
    dead = [n for n in cluster.nodes if not n.alive]
    details = "\n\n".join(
        f"{n.node_id} exited with "
        f"{n.process.returncode if n.process else 'no process'}:\n{log_tail(n)}"
        for n in dead
    )
    assert not dead, f"{when}: socmeth processes exited:\n{details}"


def create_load_jobs(cluster: Cluster) -> dict[str, datetime]:
    """Create the @every jobs and the manual sleeps; return each tick's first fire."""
    first_fires = {}
    for name, interval in TICKS.items():
        job = api_json(
            cluster,
            "POST",
            "/api/jobs",
            201,
            json={
                "name": name,
                "schedule": f"@every {interval}s",
                "command": "true",
                "concurrency": "allow",
            },
        )
        first_fires[name] = parse(job["next_fire_at"])
    for name, command in (("nap", "sleep 1"), ("nap-long", "sleep 4")):
        api_json(
            cluster,
            "POST",
            "/api/jobs",
            201,
            json={"name": name, "command": command, "concurrency": "allow"},
        )
    return first_fires


def api_json(
    cluster: Cluster, method: str, path: str, expect: int, **kwargs: Any
) -> Any:
    response = cluster.api(method, path, **kwargs)
    assert response.status_code == expect, (
        f"{method} {path} answered {response.status_code}: {response.text}"
    )
    return response.json()


def run_manual(cluster: Cluster, name: str, count: int) -> list[int]:
    return [
        api_json(cluster, "POST", f"/api/jobs/{name}/run", 202)["id"]
        for _ in range(count)
    ]


def wait_until_running(cluster: Cluster, run_ids: list[int], timeout: float) -> None:
    """Wait until every run has a running attempt (so that it spans what follows)."""
    deadline = time.monotonic() + timeout
    while True:
        states = {
            rid: api_json(cluster, "GET", f"/api/runs/{rid}", 200)["state"]
            for rid in run_ids
        }
        if all(state == "running" for state in states.values()):
            return
        assert time.monotonic() < deadline, f"runs not all running: {states}"
        time.sleep(0.1)


def current_leader(cluster: Cluster) -> str | None:
    """Ask each live node who leads; None while none answers with a leader."""
    for node in cluster.alive():
        try:
            response = node.api("GET", "/api/cluster", timeout=2)
        except httpx.HTTPError:
            continue
        if response.status_code == 200 and response.json()["leader"]:
            return str(response.json()["leader"])
    return None


def wait_for_leader(cluster: Cluster, timeout: float) -> tuple[str, float]:
    started = time.monotonic()
    while (leader := current_leader(cluster)) is None:
        elapsed = time.monotonic() - started
        assert elapsed < timeout, f"no leader within {timeout}s"
        time.sleep(0.05)
    return leader, time.monotonic() - started


def wait_for_nodes_up(cluster: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            response = cluster.api("GET", "/api/nodes", timeout=2)
        except (AssertionError, httpx.HTTPError):
            response = None
        if response is not None and response.status_code == 200:
            states = {i["id"]: i["state"] for i in response.json()["items"]}
            if states == {"n1": "up", "n2": "up", "n3": "up"}:
                return
        time.sleep(0.1)
    raise AssertionError(f"the nodes are not all up within {timeout}s: {states}")


def sleep_watching(cluster: Cluster, seconds: float, when: str) -> None:
    """Sleep, checking every 0.2 s that no node process exited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert_all_alive(cluster, when)
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def pause_ticks(cluster: Cluster) -> None:
    for name in TICKS:
        api_json(cluster, "POST", f"/api/jobs/{name}/pause", 200)


@dataclass(frozen=True)
class RunRow:
    id: int
    job: str
    trigger: str
    scheduled_at: float | None  # epoch seconds
    state: str
    late: bool
    reason: str


@dataclass(frozen=True)
class AttemptRow:
    run_id: int
    number: int
    state: str
    node_id: str
    error: str


def stored_runs(cluster: Cluster) -> list[RunRow]:
    rows = cluster.sql(
        "SELECT r.id, j.name, r.trigger, extract(epoch FROM r.scheduled_at), r.state, "
        "r.late, coalesce(r.reason, '') FROM runs r JOIN jobs j ON j.id = r.job_id "
        "ORDER BY r.id"
    )
    return [
        RunRow(
            int(r[0]),
            r[1],
            r[2],
            float(r[3]) if r[3] else None,
            r[4],
            r[5] == "t",
            r[6],
        )
        for r in rows
    ]


def stored_attempts(cluster: Cluster) -> list[AttemptRow]:
    rows = cluster.sql(
        "SELECT run_id, number, state, coalesce(node_id, ''), "
        "replace(coalesce(error, ''), E'\\n', ' ') FROM attempts "
        "ORDER BY run_id, number"
    )
    return [AttemptRow(int(r[0]), int(r[1]), r[2], r[3], r[4]) for r in rows]


def wait_until_settled(cluster: Cluster, timeout: float) -> None:
    """Wait until no run is active; fail naming the runs still active."""
    deadline = time.monotonic() + timeout
    while True:
        active = [r for r in stored_runs(cluster) if r.state in ACTIVE_STATES]
        if not active:
            return
        if time.monotonic() > deadline:
            attempts = {a.run_id: a for a in stored_attempts(cluster)}
            shown = "\n".join(
                f"  {r} last attempt {attempts.get(r.id)}" for r in active
            )
            raise AssertionError(
                f"{len(active)} runs still active {timeout}s after the load "
                f"stopped (stuck: lost by the queue, or a worker stopped):\n{shown}"
            )
        time.sleep(0.25)


def wait_until_idle(cluster: Cluster, timeout: float) -> None:
    """Wait until every node's heartbeat reports no running attempt."""
    deadline = time.monotonic() + timeout
    running: dict[str, int] = {}
    while time.monotonic() < deadline:
        items = api_json(cluster, "GET", "/api/nodes", 200)["items"]
        running = {i["id"]: i["running"] for i in items}
        if not any(running.values()):
            return
        time.sleep(0.25)
    raise AssertionError(
        "every run ended, yet nodes still count attempts as running (worker "
        f"slots that never came back): {running}"
    )


def fire_index(scheduled_at: float, first: datetime, interval: int) -> int:
    """Return k for a fire at first + k * interval; fail if it is off the grid."""
    offset = (scheduled_at - first.timestamp()) / interval
    index = round(offset)
    assert math.isclose(offset, index, abs_tol=1e-3), (
        f"a run scheduled at {scheduled_at} is off the grid of {first} + n*{interval}s"
    )
    return index


def tick_runs(runs: list[RunRow], name: str) -> list[RunRow]:
    return [r for r in runs if r.job == name and r.trigger == "schedule"]


def assert_one_run_per_fire(
    runs: list[RunRow], name: str, first: datetime, interval: int
) -> dict[int, RunRow]:
    """Check that no fire of a job has two runs; return its runs by fire index."""
    mine = tick_runs(runs, name)
    assert mine, f"{name} never fired"
    by_index: dict[int, list[RunRow]] = {}
    for run in mine:
        assert run.scheduled_at is not None, run
        by_index.setdefault(fire_index(run.scheduled_at, first, interval), []).append(
            run
        )
    doubled = {k: v for k, v in by_index.items() if len(v) > 1}
    assert not doubled, f"{name}: fires with more than one run: {doubled}"
    return {k: v[0] for k, v in by_index.items()}


def fires_without_run(fires: dict[int, RunRow]) -> list[int]:
    """Return the fires, from the job's first (0) to its last run's, with no run."""
    return sorted(set(range(max(fires) + 1)) - set(fires))


def fires_expected_after(interval: int) -> int:
    """Fires sure to fall in the load after recovery (it lasts over 8 s)."""
    return max(1, int(AFTER_RECOVERY_S // interval) - 1)


def assert_fired_after(
    fires: dict[int, RunRow], name: str, instant: datetime, count: int
) -> None:
    after = [r for r in fires.values() if (r.scheduled_at or 0) >= instant.timestamp()]
    assert len(after) >= count, (
        f"{name}: only {len(after)} fires after {instant} got runs; the scheduler "
        "did not carry on"
    )


def assert_every_run_succeeded(cluster: Cluster) -> None:
    runs = stored_runs(cluster)
    attempts = stored_attempts(cluster)
    by_run: dict[int, list[AttemptRow]] = {}
    for attempt in attempts:
        by_run.setdefault(attempt.run_id, []).append(attempt)
    bad = [r for r in runs if r.state != "succeeded"]
    shown = "\n".join(f"  {r}: {by_run.get(r.id)}" for r in bad)
    assert not bad, f"{len(bad)} of {len(runs)} runs did not succeed:\n{shown}"
    repeated = {rid: a for rid, a in by_run.items() if len(a) != 1}
    assert not repeated, f"runs that needed more than one attempt: {repeated}"


# Redis


@pytest.mark.parametrize(
    "redis_service",
    [pytest.param(False, id="empty-restart"), pytest.param(True, id="aof-restart")],
    indirect=True,
)
def test_redis_stopped_for_10s_under_load_loses_and_doubles_no_run(
    cluster: Cluster, redis_service: ThrowawayRedis
) -> None:
    cluster.start()
    wait_for_leader(cluster, 10)
    first_fires = create_load_jobs(cluster)
    run_manual(cluster, "nap", 3)
    time.sleep(3)
    # Runs that are executing when Redis goes, and end while it is away.
    spanning = run_manual(cluster, "nap-long", 3)
    wait_until_running(cluster, spanning, 10)

    down_at = now_utc()
    redis_service.stop()
    sleep_watching(cluster, REDIS_OUTAGE_S, "while Redis was down")
    up_at = now_utc()  # nodes may reconnect before start() sees Redis answer
    redis_service.start()
    if not redis_service.persistent:
        assert redis_service.stream_length(f"{cluster.prefix}:attempts") == 0, (
            "the throwaway Redis kept its data across the restart"
        )

    after = run_manual(cluster, "nap", 6)
    sleep_watching(cluster, AFTER_RECOVERY_S, "after Redis came back")
    pause_ticks(cluster)
    wait_until_settled(cluster, SETTLE_TIMEOUT_S)
    assert_all_alive(cluster, "after the load settled")

    # No run lost: every run, manual or scheduled, before, during or after, ran once.
    assert_every_run_succeeded(cluster)
    runs = stored_runs(cluster)
    assert {r.id for r in runs} >= set(after) | set(spanning)
    # No fire lost or doubled: the scheduler kept running on PostgreSQL all along,
    # so every fire from the first to the last got its own run, none late.
    for name, interval in TICKS.items():
        fires = assert_one_run_per_fire(runs, name, first_fires[name], interval)
        missing = fires_without_run(fires)
        assert not missing, f"{name}: fires without a run: {missing}"
        late = [r for r in fires.values() if r.late]
        assert not late, f"{name}: runs marked late though a scheduler was up: {late}"
        in_outage = [
            r
            for r in fires.values()
            if down_at.timestamp() <= (r.scheduled_at or 0) < up_at.timestamp()
        ]
        expected_in_outage = int(REDIS_OUTAGE_S // interval)
        assert len(in_outage) >= expected_in_outage, (
            f"{name}: {len(in_outage)} fires got runs during the outage, expected "
            f"at least {expected_in_outage}"
        )
        assert_fired_after(fires, name, up_at, fires_expected_after(interval))

    # Every node noticed the outage and the recovery, in its log, without a storm.
    for node in cluster.nodes:
        lines = read_log(node)
        during = events_between(lines, down_at, up_at)
        recovered = events_between(lines, up_at)
        for event in ("queue.unreachable", "worker.receive_failed"):
            assert during[event] >= 1, (
                f"{node.node_id} logged no {event} while Redis was down: {during}"
            )
        for event in ("queue.reconnected", "worker.receive_recovered"):
            assert recovered[event] >= 1, (
                f"{node.node_id} logged no {event} after Redis came back: {recovered}"
            )
        assert during["queue.unreachable"] == 1, (
            f"{node.node_id} logged queue.unreachable {during['queue.unreachable']} "
            "times for one outage"
        )
        storm = tracebacks_since(lines, down_at)
        assert len(storm) <= MAX_TRACEBACKS_PER_NODE, (
            f"{node.node_id} logged {len(storm)} tracebacks over the outage: "
            f"{Counter(line.event for line in storm)}"
        )
    republished = sum(
        events_between(read_log(node), up_at)["queue.republished"]
        for node in cluster.nodes
    )
    assert republished >= 1, (
        "no node logged queue.republished after Redis came back, yet the fires of "
        "the outage were never published"
    )
    # Attempts that ended while Redis was away gave their worker slots back.
    wait_until_idle(cluster, 5)


# PostgreSQL


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restarted_under_load_keeps_running_attempts_and_every_fire(
    cluster: Cluster, postgres_service: ThrowawayPostgres, mode: str
) -> None:
    cluster.start()
    wait_for_leader(cluster, 10)
    first_fires = create_load_jobs(cluster)
    run_manual(cluster, "nap", 3)
    time.sleep(3)
    # Attempts that run across the restart: the nodes stay alive, so none may be
    # settled lost when the store is back and the heartbeats look old.
    spanning = run_manual(cluster, "nap-long", 3) + run_manual(cluster, "nap", 3)
    wait_until_running(cluster, spanning, 10)

    down_at = now_utc()
    postgres_service.stop(mode)  # immediate: as a crash, recovering at start
    sleep_watching(cluster, POSTGRES_OUTAGE_S, "while PostgreSQL was down")
    up_at = now_utc()  # nodes may reconnect before pg_ctl sees the server ready
    postgres_service.start()
    leader, waited = wait_for_leader(cluster, LEADER_BACK_WITHIN_S)
    leader_at = now_utc()
    wait_for_nodes_up(cluster, 5)

    after = run_manual(cluster, "nap", 6)
    sleep_watching(cluster, AFTER_RECOVERY_S, "after PostgreSQL came back")
    pause_ticks(cluster)
    wait_until_settled(cluster, SETTLE_TIMEOUT_S)
    assert_all_alive(cluster, "after the load settled")

    lost = [a for a in stored_attempts(cluster) if a.state == "lost"]
    assert not lost, f"attempts of live nodes settled lost after the restart: {lost}"
    assert_every_run_succeeded(cluster)
    runs = stored_runs(cluster)
    assert {r.id for r in runs} >= set(after) | set(spanning)
    # No scheduler runs while the store is away. The outage is shorter than
    # HANDOVER_AT_MOST, so whichever node leads afterwards (the old leader taking
    # its own lease back, or another) makes the fires of the gap as a handover's:
    # every fire has exactly one run, none missing.
    for name, interval in TICKS.items():
        fires = assert_one_run_per_fire(runs, name, first_fires[name], interval)
        missing = fires_without_run(fires)
        assert not missing, f"{name}: fires without a run: {missing}"
        assert interval <= POSTGRES_OUTAGE_S  # the gap held a fire of each job
        assert_fired_after(fires, name, up_at, fires_expected_after(interval))

    assert waited <= LEADER_BACK_WITHIN_S, f"the leader came back after {waited}s"
    for node in cluster.nodes:
        lines = read_log(node)
        during = events_between(lines, down_at, up_at)
        assert during["node.heartbeat_failed"] >= 1, (
            f"{node.node_id} logged no failed heartbeat while PostgreSQL was down: "
            f"{during}"
        )
        settled_from = leader_at + timedelta(seconds=2)
        still_failing = events_between(lines, settled_from)["node.heartbeat_failed"]
        assert still_failing == 0, (
            f"{node.node_id} still failed {still_failing} heartbeats 2 s after "
            "PostgreSQL was back"
        )
        assert not events_between(lines, down_at)["attempt.lost"], (
            f"{node.node_id} logged attempt.lost after the restart"
        )
        storm = tracebacks_since(lines, down_at)
        assert len(storm) <= MAX_TRACEBACKS_PER_NODE, (
            f"{node.node_id} logged {len(storm)} tracebacks over the restart: "
            f"{Counter(line.event for line in storm)}"
        )
    leading = events_between(read_log(cluster.node(leader)), up_at)["node.leading"]
    assert leading >= 1, f"{leader} leads but logged no node.leading after the restart"
    wait_until_idle(cluster, 5)


def test_one_slot_node_runs_what_was_asked_around_a_redis_outage(
    tmp_path: Path,
    redis_service: ThrowawayRedis,
    postgres_service: ThrowawayPostgres,
) -> None:
    """An attempt that ends while Redis is away gives its slot back, and a run
    asked for meanwhile is accepted and runs once Redis is back."""
    cluster = Cluster(
        tmp_path / "single",
        1,
        postgres_url=postgres_service.url,
        redis_url=redis_service.url,
        env={"SOCMETH_LOGGING_FORMAT": "json", "SOCMETH_WORKERS_COUNT": "1"},
    )
    try:
        cluster.start()
        wait_for_leader(cluster, 10)
        for name, command in (("nap", "sleep 2"), ("quick", "true")):
            api_json(
                cluster,
                "POST",
                "/api/jobs",
                201,
                json={"name": name, "command": command, "concurrency": "allow"},
            )
        (ending,) = run_manual(cluster, "nap", 1)
        wait_until_running(cluster, [ending], 10)

        redis_service.stop()
        # Accepted while Redis is away: the run is stored, its message waits.
        (asked,) = run_manual(cluster, "quick", 1)
        sleep_watching(cluster, 4, "while Redis was down")  # `ending` ends
        redis_service.start()
        (after,) = run_manual(cluster, "quick", 1)

        node = cluster.nodes[0]
        for run_id in (ending, asked, after):
            run = node.wait_for_run(run_id, timeout=20)
            assert run["state"] == "succeeded", run
        assert_all_alive(cluster, "after the outage")
        wait_until_idle(cluster, 5)
    finally:
        cluster.close()  # kills the node, drops the database and the keys
