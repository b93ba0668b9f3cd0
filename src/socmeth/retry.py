"""Decide what a run does after an attempt ends: a pure function of the job and `now`.

SPEC: `retries: N` allows N attempts after the first. The delay before attempt k+1 is
`min(max, initial * factor^(k-1))`, counted from the end of attempt k; with jitter the
delay is drawn uniformly from [0, that] ("full jitter"). Failed, timed-out and lost
attempts are retried; cancelled ones are not.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from socmeth.models import AttemptState, JobDefinition, RetryBackoff, RunState
from socmeth.store.base import AttemptOutcome

_RUN_STATE_OF = {
    AttemptState.SUCCEEDED: RunState.SUCCEEDED,
    AttemptState.FAILED: RunState.FAILED,
    AttemptState.TIMED_OUT: RunState.TIMED_OUT,
    AttemptState.CANCELLED: RunState.CANCELLED,
    AttemptState.LOST: RunState.FAILED,
}


def retry_delay(backoff: RetryBackoff, attempt: int, rng: random.Random) -> timedelta:
    """Return the wait after attempt number `attempt` (1-based) before the next one."""
    seconds = backoff.initial.total_seconds() * backoff.factor ** (attempt - 1)
    capped = min(backoff.max.total_seconds(), seconds)
    if backoff.jitter:
        capped = rng.uniform(0.0, capped)
    return timedelta(seconds=capped)


def settle_attempt(
    definition: JobDefinition,
    attempt: int,
    state: AttemptState,
    finished_at: datetime,
    rng: random.Random,
    *,
    exit_code: int | None = None,
    http_status: int | None = None,
    error: str | None = None,
) -> AttemptOutcome:
    """Return the outcome of attempt number `attempt`: a retry, or the run's end."""
    retryable = state.is_retryable and attempt <= definition.retries
    next_attempt_at = None
    run_state = _RUN_STATE_OF[state]
    reason = None
    if retryable:
        delay = retry_delay(definition.retry_backoff, attempt, rng)
        next_attempt_at = finished_at + delay
        run_state = RunState.QUEUED
    elif state is AttemptState.LOST:
        reason = "the attempt was lost (its node died or stopped) and no retry is left"
    return AttemptOutcome(
        state=state,
        run_state=run_state,
        exit_code=exit_code,
        http_status=http_status,
        error=error,
        next_attempt_at=next_attempt_at,
        reason=reason,
    )
