"""Run webhook jobs: POST a JSON document describing the attempt, signed if asked.

The document, version 1, is compact UTF-8 JSON with its keys in this order:

    {
      "version": 1,
      "event": "run.attempt",
      "job": {"id": 7, "name": "nightly-report", "type": "webhook", "tags": ["ops"]},
      "run": {
        "id": 42,
        "trigger": "schedule",
        "scheduled_at": "2026-01-01T02:00:00+00:00",
        "attempt": 1
      },
      "previous": {"run_id": 41, "state": "succeeded"},
      "sent_at": "2026-01-01T02:00:00.013000+00:00"
    }

`trigger` is `schedule`, `manual` or `dependency`; `scheduled_at` is null for manual
runs; `attempt` counts from 1; `previous` is null for a job's first run, and its
`state` is a run state (null while that run is still active). Instants are ISO 8601 in
UTC. A receiver should refuse a `version` it does not know. Payloads over 1 MiB are
refused before sending (the README's limit).

Headers: `Content-Type: application/json`, `User-Agent: socmeth/<version>`,
`X-Socmeth-Run: <run id>`, and, when the job has a secret,
`X-Socmeth-Timestamp: <unix seconds of sent_at>` with
`X-Socmeth-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed by the
secret>`. A receiver recomputes the HMAC over the raw body, compares in constant time,
and rejects a timestamp far from its own clock, which stops replays. The job's own
headers are sent too but cannot replace these.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import httpx

import socmeth
from socmeth.clock import Clock
from socmeth.executors.base import (
    ExecutionContext,
    ExecutionResult,
    Executor,
    iso_utc,
)
from socmeth.executors.http import InvalidRequest, build_request, send
from socmeth.executors.output import OutputTail
from socmeth.models import AttemptState

PAYLOAD_VERSION = 1
MAX_PAYLOAD_BYTES = 1024 * 1024
USER_AGENT = f"socmeth/{socmeth.__version__}"
# Set by socmeth alone: a job's headers of these names are dropped, whatever their case.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "user-agent",
        "x-socmeth-run",
        "x-socmeth-timestamp",
        "x-socmeth-signature",
    }
)


class WebhookExecutor(Executor):
    """Send the attempt's document with the node's shared client; `clock` dates it."""

    def __init__(self, client: httpx.AsyncClient, clock: Clock) -> None:
        self._client = client
        self._clock = clock

    async def execute(
        self, ctx: ExecutionContext, output: OutputTail, cancel: asyncio.Event
    ) -> ExecutionResult:
        definition = ctx.job.definition
        if not definition.url:
            return ExecutionResult(AttemptState.FAILED, error="the job has no url")

        now = self._clock.now()
        body = encode_payload(build_payload(ctx, iso_utc(now)))
        if len(body) > MAX_PAYLOAD_BYTES:
            return ExecutionResult(
                AttemptState.FAILED,
                error=(
                    f"webhook payload is {len(body)} bytes, over the limit of "
                    f"{MAX_PAYLOAD_BYTES} bytes (1 MiB); not sent"
                ),
            )

        headers = {
            name: value
            for name, value in definition.headers.items()
            if name.lower() not in RESERVED_HEADERS
        }
        headers.update(_socmeth_headers(ctx, body, int(now.timestamp())))
        try:
            request = build_request(
                self._client,
                "POST",
                definition.url,
                headers=headers,
                content=body,
                ctx=ctx,
            )
        except InvalidRequest as exc:
            return ExecutionResult(AttemptState.FAILED, error=str(exc))

        return await send(
            self._client, request, ctx, output, cancel, definition.expect_status
        )


def build_payload(ctx: ExecutionContext, sent_at: str) -> dict[str, Any]:
    """Describe the attempt as the version 1 document of the module docstring."""
    job = ctx.job
    previous = None
    if ctx.previous_run_id is not None:
        state = ctx.previous_state
        previous = {
            "run_id": ctx.previous_run_id,
            "state": None if state is None else state.value,
        }

    return {
        "version": PAYLOAD_VERSION,
        "event": "run.attempt",
        "job": {
            "id": job.id,
            "name": job.name,
            "type": job.definition.type.value,
            "tags": list(job.definition.tags),
        },
        "run": {
            "id": ctx.run_id,
            "trigger": ctx.trigger.value,
            "scheduled_at": iso_utc(ctx.scheduled_at) if ctx.scheduled_at else None,
            "attempt": ctx.attempt,
        },
        "previous": previous,
        "sent_at": sent_at,
    }


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Encode the document as compact UTF-8 JSON, keeping its key order."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the X-Socmeth-Signature value for `body` sent at `timestamp`."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _socmeth_headers(
    ctx: ExecutionContext, body: bytes, timestamp: int
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Socmeth-Run": str(ctx.run_id),
    }
    secret = ctx.job.definition.secret
    if secret:
        headers["X-Socmeth-Timestamp"] = str(timestamp)
        headers["X-Socmeth-Signature"] = sign(secret, timestamp, body)
    return headers
