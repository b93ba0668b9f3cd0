"""Test the executors against real processes and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from socmeth.clock import FakeClock
from socmeth.executors import (
    CommandExecutor,
    ExecutionContext,
    ExecutionResult,
    Executors,
    HttpExecutor,
    OutputTail,
    WebhookExecutor,
)
from socmeth.models import AttemptState, Job, JobDefinition, JobType, RunState, Trigger

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads process states from /proc"
)

SCHEDULED_AT = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
SENT_AT = datetime(2026, 1, 1, 2, 0, 3, 250000, tzinfo=UTC)
# Room for a loaded CI machine on top of the timeout and grace under test.
SLACK_S = 0.5


def make_ctx(
    definition: JobDefinition,
    *,
    timeout: float = 1.0,
    grace: float = 0.2,
    trigger: Trigger = Trigger.SCHEDULE,
    scheduled_at: datetime | None = SCHEDULED_AT,
    previous_run_id: int | None = None,
    previous_state: RunState | None = None,
) -> ExecutionContext:
    created_at = datetime(2025, 12, 1, tzinfo=UTC)
    return ExecutionContext(
        job=Job(7, definition, created_at, created_at, None),
        run_id=42,
        attempt=2,
        trigger=trigger,
        scheduled_at=scheduled_at,
        previous_state=previous_state,
        previous_run_id=previous_run_id,
        timeout=timedelta(seconds=timeout),
        kill_grace=timedelta(seconds=grace),
    )


def command_job(command: str | None, **fields: Any) -> JobDefinition:
    return JobDefinition(
        name="nightly", type=JobType.COMMAND, command=command, **fields
    )


def _proc_stat(pid: int) -> list[str] | None:
    """Return the fields of /proc/<pid>/stat after the command name, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()


def is_running(pid: int) -> bool:
    """Tell whether `pid` is alive; a zombie has ended, so it does not count."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def zombie_children() -> list[int]:
    me = str(os.getpid())
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is not None and fields[0] == "Z" and fields[1] == me:
            zombies.append(int(entry.name))
    return zombies


async def eventually(check: Callable[[], bool], within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.01)


@pytest.fixture
def command_executor() -> Iterator[CommandExecutor]:
    executor = CommandExecutor(
        store_id="store-a",
        environ={"PATH": os.environ["PATH"], "NODE_VAR": "from-node"},
    )
    yield executor
    executor.close()
    assert zombie_children() == []


async def run_command(
    executor: CommandExecutor, ctx: ExecutionContext, output: OutputTail | None = None
) -> tuple[ExecutionResult, OutputTail, float]:
    output = output or OutputTail()
    started = time.monotonic()
    result = await executor.execute(ctx, output, asyncio.Event())
    return result, output, time.monotonic() - started


def pids_in(output: OutputTail) -> list[int]:
    return [int(word) for word in output.text().split() if word.isdigit()]


# --- command ---------------------------------------------------------------------


async def test_command_that_exits_zero_succeeds_with_its_output(
    command_executor: CommandExecutor,
) -> None:
    ctx = make_ctx(command_job("echo out; echo err >&2"))

    result, output, _ = await run_command(command_executor, ctx)

    assert result == ExecutionResult(AttemptState.SUCCEEDED, exit_code=0)
    assert output.text() == "out\nerr\n"


async def test_command_with_nonzero_exit_fails_with_the_code(
    command_executor: CommandExecutor,
) -> None:
    result, _, _ = await run_command(command_executor, make_ctx(command_job("exit 3")))

    assert result == ExecutionResult(
        AttemptState.FAILED, exit_code=3, error="exit code 3"
    )


async def test_command_killed_by_a_signal_reports_128_plus_the_signal(
    command_executor: CommandExecutor,
) -> None:
    ctx = make_ctx(command_job("kill -KILL $$"))

    result, _, _ = await run_command(command_executor, ctx)

    assert result.state is AttemptState.FAILED
    assert result.exit_code == 128 + signal.SIGKILL
    assert result.error == "killed by signal SIGKILL"


async def test_command_output_can_be_read_while_it_runs(
    command_executor: CommandExecutor, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    script = 'echo started; while [ ! -e "$GO" ]; do sleep 0.01; done; echo finished'
    ctx = make_ctx(command_job(script, env={"GO": str(go)}))
    output = OutputTail()

    attempt = asyncio.ensure_future(
        command_executor.execute(ctx, output, asyncio.Event())
    )
    await eventually(lambda: output.text() == "started\n")
    version_while_running = output.version
    assert not attempt.done()
    go.touch()
    result = await attempt

    assert result.state is AttemptState.SUCCEEDED
    assert output.text() == "started\nfinished\n"
    assert output.version > version_while_running


@pytest.mark.parametrize(
    ("trigger", "scheduled_at", "expected_scheduled_at"),
    [
        (Trigger.SCHEDULE, SCHEDULED_AT, "2026-01-01T02:00:00+00:00"),
        (Trigger.MANUAL, None, ""),
    ],
    ids=["scheduled", "manual"],
)
async def test_command_sees_node_job_and_socmeth_variables(
    command_executor: CommandExecutor,
    trigger: Trigger,
    scheduled_at: datetime | None,
    expected_scheduled_at: str,
) -> None:
    script = (
        'printf "%s|" "$SOCMETH_JOB" "$SOCMETH_RUN_ID" "$SOCMETH_ATTEMPT" '
        '"$SOCMETH_SCHEDULED_AT" "$SOCMETH_STORE_ID" "$GREETING" "$NODE_VAR"'
    )
    definition = command_job(script, env={"GREETING": "hi"})
    ctx = make_ctx(definition, trigger=trigger, scheduled_at=scheduled_at)

    _, output, _ = await run_command(command_executor, ctx)

    expected = f"nightly|42|2|{expected_scheduled_at}|store-a|hi|from-node|"
    assert output.text() == expected


async def test_job_env_overrides_the_node_but_not_the_socmeth_variables(
    command_executor: CommandExecutor,
) -> None:
    env = {"NODE_VAR": "from-job", "SOCMETH_RUN_ID": "999"}
    ctx = make_ctx(command_job('echo "$NODE_VAR $SOCMETH_RUN_ID"', env=env))

    _, output, _ = await run_command(command_executor, ctx)

    assert output.text() == "from-job 42\n"


async def test_command_reads_dev_null_and_leads_its_own_process_group(
    command_executor: CommandExecutor,
) -> None:
    script = "readlink /proc/$$/fd/0; echo $$; cut -d' ' -f5 /proc/$$/stat"

    _, output, _ = await run_command(command_executor, make_ctx(command_job(script)))

    stdin, pid, group = output.text().split()
    assert stdin == "/dev/null"
    assert group == pid
    assert int(group) != os.getpgrp()


async def test_command_past_its_timeout_is_stopped_with_its_whole_group(
    command_executor: CommandExecutor,
) -> None:
    ctx = make_ctx(command_job("sleep 30 & echo $!; sleep 30"), timeout=0.4, grace=0.2)

    result, output, elapsed = await run_command(command_executor, ctx)

    assert result.state is AttemptState.TIMED_OUT
    assert result.error == "timed out after 0.4s"
    assert result.exit_code == 128 + signal.SIGTERM
    assert 0.4 <= elapsed < 0.4 + 0.2 + SLACK_S
    [grandchild] = pids_in(output)
    assert not is_running(grandchild)


async def test_command_that_ignores_sigterm_is_killed_after_the_grace(
    command_executor: CommandExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 0.05; done"
    ctx = make_ctx(command_job(script), timeout=0.3, grace=0.3)

    result, _, elapsed = await run_command(command_executor, ctx)

    assert result.state is AttemptState.TIMED_OUT
    assert result.exit_code == 128 + signal.SIGKILL
    assert 0.3 + 0.3 <= elapsed < 0.3 + 0.3 + SLACK_S
    assert [r for r in caplog.records if getattr(r, "event", "") == "command.killed"]


async def test_cancel_stops_a_running_command(
    command_executor: CommandExecutor,
) -> None:
    ctx = make_ctx(command_job("echo $$; sleep 30"), timeout=10, grace=0.2)
    output = OutputTail()
    cancel = asyncio.Event()

    attempt = asyncio.ensure_future(command_executor.execute(ctx, output, cancel))
    await eventually(lambda: bool(pids_in(output)))
    started = time.monotonic()
    cancel.set()
    result = await attempt

    assert result.state is AttemptState.CANCELLED
    assert result.error == "cancelled"
    assert time.monotonic() - started < 0.2 + SLACK_S
    assert not is_running(pids_in(output)[0])


async def test_cancel_set_before_start_runs_nothing(
    command_executor: CommandExecutor, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    cancel = asyncio.Event()
    cancel.set()

    result = await command_executor.execute(
        make_ctx(command_job(f"touch {marker}")), OutputTail(), cancel
    )

    assert result.state is AttemptState.CANCELLED
    assert not marker.exists()


async def test_cancelling_the_task_kills_the_command(
    command_executor: CommandExecutor,
) -> None:
    ctx = make_ctx(command_job("echo $$; sleep 30"), timeout=10)
    output = OutputTail()

    attempt = asyncio.ensure_future(
        command_executor.execute(ctx, output, asyncio.Event())
    )
    await eventually(lambda: bool(pids_in(output)))
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt

    assert not is_running(pids_in(output)[0])


async def test_processes_left_behind_are_stopped_when_the_shell_exits(
    command_executor: CommandExecutor,
) -> None:
    # The background sleep also holds the pipe open: the attempt must not wait for it.
    ctx = make_ctx(command_job("sleep 30 & echo $!"), grace=0.2)

    result, output, elapsed = await run_command(command_executor, ctx)

    assert result.state is AttemptState.SUCCEEDED
    assert elapsed < 0.2 + SLACK_S
    assert not is_running(pids_in(output)[0])


async def test_pipe_held_by_an_escaped_process_does_not_hang_the_attempt(
    command_executor: CommandExecutor,
) -> None:
    escape = f"{sys.executable} -c 'import os, time; os.setsid(); time.sleep(30)'"
    ctx = make_ctx(command_job(f"{escape} & echo $!"))

    result, output, elapsed = await run_command(command_executor, ctx)

    escaped = pids_in(output)[0]
    try:
        assert result.state is AttemptState.SUCCEEDED
        assert elapsed < SLACK_S + 0.5
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(escaped, signal.SIGKILL)


async def test_command_output_keeps_the_tail_within_the_cap(
    command_executor: CommandExecutor,
) -> None:
    script = "head -c 100000 /dev/zero | tr '\\0' x; echo END"

    _, output, _ = await run_command(
        command_executor, make_ctx(command_job(script)), OutputTail(cap=1000)
    )

    assert output.truncated
    assert output.size == 1000
    assert output.text() == "x" * 996 + "END\n"


async def test_job_without_a_command_fails(command_executor: CommandExecutor) -> None:
    result, _, _ = await run_command(command_executor, make_ctx(command_job(None)))

    assert result == ExecutionResult(
        AttemptState.FAILED, error="the job has no command"
    )


async def test_command_that_cannot_start_fails_instead_of_raising(
    command_executor: CommandExecutor,
) -> None:
    ctx = make_ctx(command_job("true", env={"BROKEN": "nul\0byte"}))

    result, _, _ = await run_command(command_executor, ctx)

    assert result.state is AttemptState.FAILED
    assert result.error is not None
    assert result.error.startswith("could not start /bin/sh")


# --- a local HTTP server -----------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def response(status: int, reason: str, body: bytes = b"", *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    lines += ["Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LocalHttpServer:
    """Answer HTTP/1.1 requests by path, and remember every request received."""

    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        assert self._server is not None
        self._server.close()
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            received = await self._read(reader)
            self.requests.append(received)
            self.arrived.set()
            await self._answer(received.path, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(handler)

    async def _read(self, reader: asyncio.StreamReader) -> Received:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")[:-2]
        method, target, _ = request_line.split(" ")
        headers = {}
        for line in header_lines:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Received(method, target.split("?")[0], headers, body)

    async def _answer(self, path: str, writer: asyncio.StreamWriter) -> None:
        if path in ("/hang", "/stall-body"):
            if path == "/stall-body":
                writer.write(response(200, "OK", b"x" * 100)[:-90])
                await writer.drain()
            await asyncio.Event().wait()
        writer.write(ROUTES[path])
        await writer.drain()


ROUTES = {
    "/ok": response(200, "OK", b"hello"),
    "/created": response(201, "Created"),
    "/fail": response(500, "Internal Server Error", b"boom"),
    "/redirect": response(302, "Found", b"", "Location: /ok"),
    "/big": response(200, "OK", "é".encode() * 5000),
}


@pytest.fixture
async def server() -> AsyncIterator[LocalHttpServer]:
    local = LocalHttpServer()
    await local.start()
    yield local
    await local.aclose()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as shared:
        yield shared


def http_job(url: str, **fields: Any) -> JobDefinition:
    return JobDefinition(name="ping", type=JobType.HTTP, url=url, **fields)


async def run_http(
    client: httpx.AsyncClient, ctx: ExecutionContext, output: OutputTail | None = None
) -> tuple[ExecutionResult, OutputTail]:
    output = output or OutputTail()
    result = await HttpExecutor(client).execute(ctx, output, asyncio.Event())
    return result, output


# --- http ----------------------------------------------------------------------------


async def test_http_2xx_succeeds_with_status_line_and_body(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    result, output = await run_http(client, make_ctx(http_job(f"{server.url}/ok")))

    assert result == ExecutionResult(AttemptState.SUCCEEDED, http_status=200)
    assert output.text() == "HTTP 200 OK\nhello"
    assert server.requests[0].method == "GET"


async def test_http_sends_method_headers_and_body_as_given(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    definition = http_job(
        f"{server.url}/created",
        method="put",
        headers={"X-Token": "t0k3n"},
        body='{"a": 1}',
    )

    result, _ = await run_http(client, make_ctx(definition))

    [received] = server.requests
    assert result.state is AttemptState.SUCCEEDED
    assert (received.method, received.path) == ("PUT", "/created")
    assert received.headers["x-token"] == "t0k3n"
    assert received.body == b'{"a": 1}'


async def test_http_5xx_fails_with_the_status(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    result, output = await run_http(client, make_ctx(http_job(f"{server.url}/fail")))

    assert result == ExecutionResult(
        AttemptState.FAILED, http_status=500, error="HTTP 500, expected 2xx"
    )
    assert output.text() == "HTTP 500 Internal Server Error\nboom"


@pytest.mark.parametrize(
    ("path", "expect_status", "state"),
    [
        ("/fail", (500,), AttemptState.SUCCEEDED),
        ("/ok", (201, 204), AttemptState.FAILED),
        ("/redirect", (), AttemptState.FAILED),
        ("/redirect", (302,), AttemptState.SUCCEEDED),
    ],
    ids=["listed-500", "unlisted-200", "redirect-unexpected", "redirect-listed"],
)
async def test_http_expect_status_decides_success(
    server: LocalHttpServer,
    client: httpx.AsyncClient,
    path: str,
    expect_status: tuple[int, ...],
    state: AttemptState,
) -> None:
    definition = http_job(f"{server.url}{path}", expect_status=expect_status)

    result, _ = await run_http(client, make_ctx(definition))

    assert result.state is state
    assert [r.path for r in server.requests] == [path]


async def test_http_unexpected_status_error_lists_the_expected_ones(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    definition = http_job(f"{server.url}/ok", expect_status=(201, 204))

    result, _ = await run_http(client, make_ctx(definition))

    assert result.error == "HTTP 200, expected one of 201, 204"


async def test_http_past_its_timeout_is_timed_out(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    started = time.monotonic()

    result, _ = await run_http(
        client, make_ctx(http_job(f"{server.url}/hang"), timeout=0.3)
    )

    assert result == ExecutionResult(
        AttemptState.TIMED_OUT, error="timed out after 0.3s"
    )
    assert time.monotonic() - started < 0.3 + SLACK_S


async def test_http_timeout_while_reading_the_body_keeps_the_status(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    ctx = make_ctx(http_job(f"{server.url}/stall-body"), timeout=0.3)

    result, output = await run_http(client, ctx)

    assert result.state is AttemptState.TIMED_OUT
    assert result.http_status == 200
    assert output.text() == "HTTP 200 OK\n" + "x" * 10


async def test_http_connection_refused_fails_and_says_so(
    client: httpx.AsyncClient,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result, _ = await run_http(client, make_ctx(http_job(f"http://127.0.0.1:{port}/")))

    assert result == ExecutionResult(
        AttemptState.FAILED,
        error=f"could not connect to 127.0.0.1:{port}: connection refused",
    )


async def test_http_cancel_stops_the_request(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    ctx = make_ctx(http_job(f"{server.url}/hang"), timeout=10)
    cancel = asyncio.Event()

    attempt = asyncio.ensure_future(
        HttpExecutor(client).execute(ctx, OutputTail(), cancel)
    )
    await asyncio.wait_for(server.arrived.wait(), 2)
    cancel.set()
    result = await asyncio.wait_for(attempt, SLACK_S)

    assert result == ExecutionResult(AttemptState.CANCELLED, error="cancelled")


async def test_http_body_stops_at_the_cap_on_a_character_boundary(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    status_line = "HTTP 200 OK\n"

    result, output = await run_http(
        client, make_ctx(http_job(f"{server.url}/big")), OutputTail(cap=1001)
    )

    assert result.state is AttemptState.SUCCEEDED
    assert output.truncated
    assert output.text() == status_line + "é" * ((1001 - len(status_line)) // 2)


async def test_http_never_writes_or_logs_request_headers(
    server: LocalHttpServer,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="socmeth")
    definition = http_job(f"{server.url}/fail", headers={"Authorization": "Bearer s3"})

    _, output = await run_http(client, make_ctx(definition))

    assert server.requests[0].headers["authorization"] == "Bearer s3"
    assert "s3" not in output.text()
    assert "s3" not in caplog.text


async def test_http_header_that_breaks_the_protocol_fails_without_echoing_it(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    definition = http_job(f"{server.url}/ok", headers={"X-Key": "sec\r\nret"})

    result, _ = await run_http(client, make_ctx(definition))

    assert result.state is AttemptState.FAILED
    assert result.error is not None
    assert "sec" not in result.error
    assert server.requests == []


# --- webhook -----------------------------------------------------------------------


def webhook_job(url: str, **fields: Any) -> JobDefinition:
    return JobDefinition(name="notify", type=JobType.WEBHOOK, url=url, **fields)


async def run_webhook(
    client: httpx.AsyncClient, ctx: ExecutionContext
) -> tuple[ExecutionResult, OutputTail]:
    output = OutputTail()
    executor = WebhookExecutor(client, FakeClock(SENT_AT))
    return await executor.execute(ctx, output, asyncio.Event()), output


async def test_webhook_posts_the_documented_payload(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    definition = webhook_job(f"{server.url}/ok", tags=("ops", "nightly"))
    ctx = make_ctx(definition, previous_run_id=41, previous_state=RunState.TIMED_OUT)

    result, _ = await run_webhook(client, ctx)

    [received] = server.requests
    assert result == ExecutionResult(AttemptState.SUCCEEDED, http_status=200)
    assert received.method == "POST"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["user-agent"] == "socmeth/0.1.0"
    assert received.headers["x-socmeth-run"] == "42"
    assert received.body.startswith(b'{"version":1,')
    assert json.loads(received.body) == {
        "version": 1,
        "event": "run.attempt",
        "job": {
            "id": 7,
            "name": "notify",
            "type": "webhook",
            "tags": ["ops", "nightly"],
        },
        "run": {
            "id": 42,
            "trigger": "schedule",
            "scheduled_at": "2026-01-01T02:00:00+00:00",
            "attempt": 2,
        },
        "previous": {"run_id": 41, "state": "timed_out"},
        "sent_at": "2026-01-01T02:00:03.250000+00:00",
    }


async def test_webhook_of_a_first_manual_run_has_no_previous_and_no_schedule(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    ctx = make_ctx(
        webhook_job(f"{server.url}/ok"), trigger=Trigger.MANUAL, scheduled_at=None
    )

    await run_webhook(client, ctx)

    payload = json.loads(server.requests[0].body)
    assert payload["previous"] is None
    assert payload["run"]["trigger"] == "manual"
    assert payload["run"]["scheduled_at"] is None


async def test_webhook_with_a_secret_is_signed_over_timestamp_and_body(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    ctx = make_ctx(webhook_job(f"{server.url}/ok", secret="hush"))

    await run_webhook(client, ctx)

    [received] = server.requests
    timestamp = received.headers["x-socmeth-timestamp"]
    assert int(timestamp) == int(SENT_AT.timestamp())
    message = timestamp.encode() + b"." + received.body
    expected = hmac.new(b"hush", message, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(
        received.headers["x-socmeth-signature"], f"sha256={expected}"
    )


async def test_webhook_without_a_secret_is_not_signed(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    await run_webhook(client, make_ctx(webhook_job(f"{server.url}/ok")))

    headers = server.requests[0].headers
    assert "x-socmeth-signature" not in headers
    assert "x-socmeth-timestamp" not in headers


async def test_webhook_sends_job_headers_but_keeps_its_own(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    headers = {"X-Team": "ops", "content-type": "text/plain", "X-Socmeth-Run": "1"}

    await run_webhook(
        client, make_ctx(webhook_job(f"{server.url}/ok", headers=headers))
    )

    received = server.requests[0].headers
    assert received["x-team"] == "ops"
    assert received["content-type"] == "application/json"
    assert received["x-socmeth-run"] == "42"


async def test_webhook_payload_over_one_mebibyte_is_not_sent(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    tags = tuple(f"{n:04d}" + "t" * 1020 for n in range(1100))
    ctx = make_ctx(webhook_job(f"{server.url}/ok", tags=tags))

    result, _ = await run_webhook(client, ctx)

    assert result.state is AttemptState.FAILED
    assert result.error is not None
    assert "1 MiB" in result.error
    assert server.requests == []


async def test_webhook_error_status_fails(
    server: LocalHttpServer, client: httpx.AsyncClient
) -> None:
    result, _ = await run_webhook(client, make_ctx(webhook_job(f"{server.url}/fail")))

    assert result.state is AttemptState.FAILED
    assert result.http_status == 500


# --- the registry --------------------------------------------------------------------


async def test_executors_gives_each_job_type_its_executor(
    client: httpx.AsyncClient,
) -> None:
    executors = Executors(client, FakeClock(), store_id="store-a")
    try:
        kinds: dict[JobType, type[object]] = {
            JobType.COMMAND: CommandExecutor,
            JobType.HTTP: HttpExecutor,
            JobType.WEBHOOK: WebhookExecutor,
        }
        for job_type, kind in kinds.items():
            assert isinstance(executors.for_type(job_type), kind)
    finally:
        executors.close()


async def test_many_commands_run_concurrently(
    command_executor: CommandExecutor,
) -> None:
    ctx = make_ctx(command_job("sleep 0.2"))
    started = time.monotonic()

    results: list[ExecutionResult] = await asyncio.gather(
        *(
            command_executor.execute(ctx, OutputTail(), asyncio.Event())
            for _ in range(20)
        )
    )

    assert {r.state for r in results} == {AttemptState.SUCCEEDED}
    assert time.monotonic() - started < 0.2 + SLACK_S
