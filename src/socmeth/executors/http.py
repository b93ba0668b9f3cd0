"""Run http jobs: one request, judged by its response status.

The output of an attempt is the status line (`HTTP 200 OK`) followed by the response
body, read as a stream and no further than the output cap. Request headers are never
written anywhere, since they often carry credentials. Redirects are not followed: a 3xx
is a failure unless `expect_status` lists it. `ctx.timeout` bounds the whole exchange,
from connecting to the last byte of the body read.

`send` is shared with the webhook executor, which differs only in the request it builds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass, replace

import httpx

from socmeth.executors.base import (
    ExecutionContext,
    ExecutionResult,
    Executor,
    run_bounded,
    timed_out,
)
from socmeth.executors.output import OutputTail, utf8_head
from socmeth.models import AttemptState

logger = logging.getLogger(__name__)

DEFAULT_METHOD = "GET"


class HttpExecutor(Executor):
    """Send the job's request with the node's shared client and judge the status."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def execute(
        self, ctx: ExecutionContext, output: OutputTail, cancel: asyncio.Event
    ) -> ExecutionResult:
        definition = ctx.job.definition
        if not definition.url:
            return ExecutionResult(AttemptState.FAILED, error="the job has no url")

        body = definition.body
        try:
            request = build_request(
                self._client,
                (definition.method or DEFAULT_METHOD).upper(),
                definition.url,
                headers=dict(definition.headers),
                content=None if body is None else body.encode(),
                ctx=ctx,
            )
        except InvalidRequest as exc:
            return ExecutionResult(AttemptState.FAILED, error=str(exc))

        return await send(
            self._client, request, ctx, output, cancel, definition.expect_status
        )


class InvalidRequest(Exception):
    """Report a job whose request cannot be built, in words safe to show and log."""


def build_request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    content: bytes | None,
    ctx: ExecutionContext,
) -> httpx.Request:
    """Build the request of an attempt, refusing one that cannot be sent."""
    # Each phase may take the whole timeout; run_bounded cuts the exchange as a whole.
    timeout = httpx.Timeout(ctx.timeout.total_seconds())
    try:
        return client.build_request(
            method, url, headers=headers, content=content, timeout=timeout
        )
    except UnicodeEncodeError:
        # The codec's message quotes the character, which may be part of a secret.
        raise InvalidRequest("a header name or value is not ASCII") from None
    except httpx.InvalidURL as exc:
        raise InvalidRequest(f"invalid url: {exc}") from None


async def send(
    client: httpx.AsyncClient,
    request: httpx.Request,
    ctx: ExecutionContext,
    output: OutputTail,
    cancel: asyncio.Event,
    expect_status: tuple[int, ...],
) -> ExecutionResult:
    """Send `request`, write the status line and body into `output`, judge the status.

    Success is a status in `expect_status`, or any 2xx when it is empty.
    """
    progress = _Progress()
    exchange = _exchange(client, request, ctx, output, expect_status, progress)
    result = await run_bounded(exchange, ctx, cancel)
    if result.http_status is None and progress.status is not None:
        # Stopped while the body was being read: the status was already known.
        return replace(result, http_status=progress.status)
    return result


@dataclass
class _Progress:
    status: int | None = None


async def _exchange(
    client: httpx.AsyncClient,
    request: httpx.Request,
    ctx: ExecutionContext,
    output: OutputTail,
    expect_status: tuple[int, ...],
    progress: _Progress,
) -> ExecutionResult:
    try:
        response = await client.send(request, stream=True, follow_redirects=False)
    except httpx.HTTPError as exc:
        return _failure(exc, request, None, ctx)

    progress.status = response.status_code
    try:
        status_line = f"HTTP {response.status_code} {response.reason_phrase}\n"
        output.append(status_line.encode())
        await _read_body(response, output)
    except httpx.HTTPError as exc:
        return _failure(exc, request, response.status_code, ctx)
    finally:
        await response.aclose()

    return judge_status(response.status_code, expect_status)


async def _read_body(response: httpx.Response, output: OutputTail) -> None:
    """Copy the body into `output`, stopping at the cap rather than reading on."""
    async for chunk in response.aiter_bytes():
        room = output.cap - output.size
        if len(chunk) > room:
            output.append(utf8_head(chunk, room))
            output.mark_truncated()
            return
        output.append(chunk)


def judge_status(status: int, expect_status: tuple[int, ...]) -> ExecutionResult:
    """Succeed on a listed status, or on any 2xx when none is listed."""
    if expect_status:
        ok = status in expect_status
        expected = "one of " + ", ".join(str(code) for code in expect_status)
    else:
        ok = 200 <= status < 300
        expected = "2xx"

    if ok:
        return ExecutionResult(AttemptState.SUCCEEDED, http_status=status)
    return ExecutionResult(
        AttemptState.FAILED,
        http_status=status,
        error=f"HTTP {status}, expected {expected}",
    )


def _failure(
    exc: httpx.HTTPError,
    request: httpx.Request,
    status: int | None,
    ctx: ExecutionContext,
) -> ExecutionResult:
    if isinstance(exc, httpx.TimeoutException):
        # httpx's phase timeouts are all ctx.timeout, so this is the attempt's timeout.
        return replace(timed_out(ctx), http_status=status)

    error = _describe(exc, request)
    logger.debug(
        "request to %s failed: %s",
        request.url.host,
        error,
        extra={"event": "http.request_failed"},
    )
    return ExecutionResult(AttemptState.FAILED, http_status=status, error=error)


def _describe(exc: httpx.HTTPError, request: httpx.Request) -> str:
    """Say in one line why the exchange failed, naming the host but not the url."""
    url = request.url
    where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect to {where}: {_os_reason(exc)}"
    if isinstance(exc, httpx.LocalProtocolError):
        # h11's message quotes the offending header value, which may be a secret.
        return "the request is not valid HTTP; check the job's method and headers"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"{where} broke the HTTP protocol: {exc}"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return f"unsupported url: {exc}"
    return f"request to {where} failed: {type(exc).__name__}: {exc}"


def _os_reason(exc: BaseException) -> str:
    """Find the operating system's reason (e.g. "connection refused") behind `exc`."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            # Its errno is OpenSSL's, which os.strerror would misread as EPERM.
            return f"TLS failed: {cause.reason or cause}"
        if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
            return os.strerror(cause.errno).lower()
        if isinstance(cause, OSError) and cause.strerror:
            # getaddrinfo's errors have negative numbers that strerror does not know.
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return str(exc)
