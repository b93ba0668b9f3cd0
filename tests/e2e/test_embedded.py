"""Drive a real `socmeth serve` in embedded mode through its API, like an operator."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from socmeth.executors.procs import group_alive
from tests.conftest import POSTGRES_HOST, POSTGRES_USER, require_postgres
from tests.e2e.conftest import Server, create, free_port, parse, run_now

pytestmark = pytest.mark.slow


def history(server: Server, name: str) -> list[dict[str, Any]]:
    response = server.api("GET", f"/api/jobs/{name}/history", params={"limit": 500})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


@pytest.fixture
def scratch_database() -> Iterator[str]:
    require_postgres()
    name = f"socmeth_e2e_{uuid.uuid4().hex[:10]}"
    psql = ["psql", "-h", POSTGRES_HOST, "-U", POSTGRES_USER, "-v", "ON_ERROR_STOP=1"]
    subprocess.run([*psql, "-c", f"CREATE DATABASE {name}"], check=True)
    subprocess.run(
        [
            *psql,
            "-d",
            name,
            "-c",
            "CREATE TABLE invoices (id int PRIMARY KEY, total numeric);"
            "INSERT INTO invoices VALUES (1, 9.5), (2, 12);",
        ],
        check=True,
    )
    yield name
    subprocess.run([*psql, "-c", f"DROP DATABASE IF EXISTS {name}"], check=True)


def test_readme_backup_job_dumps_a_real_database(
    server: Server, scratch_database: str, tmp_path: Path
) -> None:
    dump = tmp_path / "backup.sql"
    created = create(
        server,
        name="backup-database",
        schedule="0 2 * * *",
        command=f"pg_dump -h {POSTGRES_HOST} -U {POSTGRES_USER} {scratch_database}"
        f" > {dump}",
        timeout=300,
        retries=3,
    )
    assert created["next_fire_at"] is not None

    run = run_now(server, "backup-database")
    assert run["trigger"] == "manual"
    finished = server.wait_for_run(run["id"])

    assert finished["state"] == "succeeded", finished
    assert "CREATE TABLE public.invoices" in dump.read_text()
    (entry,) = history(server, "backup-database")
    assert entry["id"] == run["id"]
    (attempt,) = entry["attempts"]
    assert attempt["state"] == "succeeded"
    assert attempt["exit_code"] == 0
    output = server.api("GET", f"/api/runs/{run['id']}/attempts/1/output")
    assert output.status_code == 200


def test_output_of_a_command_is_kept_with_its_attempt(server: Server) -> None:
    create(server, name="greet", command="echo hello from $SOCMETH_JOB; echo oops >&2")
    run = server.wait_for_run(run_now(server, "greet")["id"])

    output = server.api("GET", f"/api/runs/{run['id']}/attempts/1/output").text
    assert "hello from greet" in output
    assert "oops" in output


def test_every_two_seconds_fires_on_its_own_and_a_paused_job_not_at_all(
    server: Server,
) -> None:
    create(server, name="ticker", schedule="@every 2s", command="true")
    create(server, name="idle", schedule="@every 1s", command="true", enabled=False)
    time.sleep(7.2)

    runs = [r for r in history(server, "ticker") if r["trigger"] == "schedule"]
    assert 3 <= len(runs) <= 4, runs
    fires = sorted(parse(r["scheduled_at"]) for r in runs)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(fires)}
    assert gaps == {2.0}
    assert history(server, "idle") == []


def test_every_minute_job_fires_once_in_a_minute(server: Server) -> None:
    job = create(server, name="minutely", schedule="* * * * *", command="true")
    first_fire = parse(job["next_fire_at"])
    assert first_fire.second == 0

    wait = (first_fire - datetime.now(first_fire.tzinfo)).total_seconds() + 3
    time.sleep(max(0.0, wait))

    runs = history(server, "minutely")
    assert [parse(r["scheduled_at"]) for r in runs] == [first_fire]
    server.wait_for_run(runs[0]["id"])


def test_failing_job_retries_with_backoff_then_fails(server: Server) -> None:
    create(
        server,
        name="flaky",
        command="exit 3",
        retries=2,
        retry_backoff={"initial": 1, "factor": 2, "max": 60},
    )
    run = server.wait_for_run(run_now(server, "flaky")["id"], timeout=30)

    assert run["state"] == "failed"
    attempts = run["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert all(a["exit_code"] == 3 for a in attempts)
    gaps = [
        (parse(b["started_at"]) - parse(a["finished_at"])).total_seconds()
        for a, b in itertools.pairwise(attempts)
    ]
    assert 0.9 <= gaps[0] <= 1.8, gaps
    assert 1.9 <= gaps[1] <= 2.8, gaps


def test_a_pending_retry_is_visible_on_the_run(server: Server) -> None:
    create(
        server,
        name="slow-retry",
        command="exit 1",
        retries=1,
        retry_backoff={"initial": 30},
    )
    run_id = run_now(server, "slow-retry")["id"]
    deadline = time.monotonic() + 10
    while True:
        run = server.api("GET", f"/api/runs/{run_id}").json()
        if run["next_attempt_at"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert run["state"] == "queued"
    assert len(run["attempts"]) == 1
    due = parse(run["next_attempt_at"]) - parse(run["attempts"][0]["finished_at"])
    assert due.total_seconds() == pytest.approx(30, abs=0.01)


def test_a_job_over_its_timeout_ends_timed_out(server: Server) -> None:
    create(server, name="sleepy", command="sleep 30", timeout=1)
    started = time.monotonic()
    run = server.wait_for_run(run_now(server, "sleepy")["id"], timeout=15)

    assert run["state"] == "timed_out"
    assert run["attempts"][0]["state"] == "timed_out"
    assert time.monotonic() - started < 8


def test_cancel_stops_a_running_attempt(server: Server) -> None:
    create(server, name="long", command="sleep 30")
    run = run_now(server, "long")
    server.wait_for_run(run["id"], until=("running",))

    response = server.api("POST", f"/api/runs/{run['id']}/cancel")
    assert response.status_code == 202
    finished = server.wait_for_run(run["id"], timeout=10)
    assert finished["state"] == "cancelled"


class _Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]]

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        self.received.append(
            {"path": self.path, "headers": dict(self.headers), "body": body}
        )
        self._answer()

    def _answer(self) -> None:
        status = 500 if self.path.startswith("/fail") else 200
        payload = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Handler", (_Recorder,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    httpd.shutdown()
    httpd.server_close()


def test_http_job_records_the_status_and_a_500_fails_it(
    server: Server, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    base, _ = receiver
    create(server, name="ping", type="http", url=f"{base}/ok", method="GET")
    create(server, name="broken", type="http", url=f"{base}/fail", method="POST")

    ok = server.wait_for_run(run_now(server, "ping")["id"])
    bad = server.wait_for_run(run_now(server, "broken")["id"])

    assert ok["state"] == "succeeded"
    assert ok["attempts"][0]["http_status"] == 200
    assert bad["state"] == "failed"
    assert bad["attempts"][0]["http_status"] == 500


def test_webhook_job_posts_json_naming_the_job_and_the_run(
    server: Server, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    base, received = receiver
    create(server, name="notify", type="webhook", url=f"{base}/hook")

    run = server.wait_for_run(run_now(server, "notify")["id"])

    assert run["state"] == "succeeded"
    (request,) = received
    document = json.loads(request["body"])
    assert document["job"]["name"] == "notify"
    assert document["run"]["id"] == run["id"]
    assert request["headers"]["Content-Type"].startswith("application/json")


def test_a_restart_keeps_every_job_and_every_run(server_factory: Any) -> None:
    first: Server = server_factory()
    first.start()
    create(first, name="kept", schedule="0 3 * * *", command="echo kept")
    run_ids = [first.wait_for_run(run_now(first, "kept")["id"])["id"] for _ in range(2)]
    assert first.stop() == 0

    second: Server = server_factory(data_dir=first.data_dir)
    second.start()
    job = second.api("GET", "/api/jobs/kept").json()
    assert job["command"] == "echo kept"
    assert [r["id"] for r in history(second, "kept")] == sorted(run_ids, reverse=True)


def test_sigterm_mid_attempt_records_it_lost_and_the_retry_runs_after_restart(
    server_factory: Any,
) -> None:
    env = {"SOCMETH_WORKERS_SHUTDOWN_GRACE": "0.5"}
    first: Server = server_factory(env=env)
    first.start()
    create(
        first,
        name="interrupted",
        command='[ "$SOCMETH_ATTEMPT" = 2 ] || sleep 30',
        retries=1,
        retry_backoff={"initial": 1},
    )
    run = run_now(first, "interrupted")
    first.wait_for_run(run["id"], until=("running",))
    assert first.stop(signal.SIGTERM) == 0

    second: Server = server_factory(env=env, data_dir=first.data_dir)
    second.start()
    finished = second.wait_for_run(run["id"], timeout=20)
    assert finished["state"] == "succeeded"
    assert [a["state"] for a in finished["attempts"]] == ["lost", "succeeded"]


def test_a_crash_mid_attempt_is_settled_at_the_next_start(
    server_factory: Any, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    first: Server = server_factory()
    first.start()
    create(first, name="crashed", command=f"echo $$ > {pid_file}; exec sleep 30")
    run = run_now(first, "crashed")
    first.wait_for_run(run["id"], until=("running",))
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    first.stop(signal.SIGKILL)
    left_behind = int(pid_file.read_text())
    assert group_alive(left_behind), "the command outlives its crashed server"

    second: Server = server_factory(data_dir=first.data_dir)
    second.start()
    finished = second.wait_for_run(run["id"], timeout=10)

    assert finished["state"] == "failed"
    assert finished["attempts"][0]["state"] == "lost"
    assert not group_alive(left_behind), "the restart kills what the crash left"


def serve_refused(port: int, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Start `socmeth serve` expecting it to refuse, and return how it ended."""
    argv = ["serve", "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.run(
        [sys.executable, "-m", "socmeth", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_second_server_on_the_same_data_dir_is_refused_and_harms_nothing(
    server: Server,
) -> None:
    create(server, name="busy", command="sleep 3")
    run = run_now(server, "busy")
    server.wait_for_run(run["id"], until=("running",))

    second = serve_refused(free_port(), server.data_dir)

    assert second.returncode == 2
    assert "in use by socmeth serve" in second.stderr
    assert server.wait_for_run(run["id"])["state"] == "succeeded"


def test_a_taken_port_is_refused_in_one_line(server: Server, tmp_path: Path) -> None:
    second = serve_refused(server.port, tmp_path / "other")

    assert second.returncode == 2
    last_line = second.stderr.strip().splitlines()[-1]
    assert last_line.startswith("socmeth: config server.port")
    assert not (tmp_path / "other" / "socmeth.db").exists()
