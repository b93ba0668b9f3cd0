"""Check the retry policy: delays, jitter, and which attempts are retried."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from socmeth.models import AttemptState, JobDefinition, JobType, RetryBackoff, RunState
from socmeth.retry import retry_delay, settle_attempt

ENDED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BACKOFF = RetryBackoff(
    initial=timedelta(seconds=10), factor=2.0, max=timedelta(seconds=60)
)


def job(retries: int, backoff: RetryBackoff = BACKOFF) -> JobDefinition:
    return JobDefinition(
        name="flaky",
        type=JobType.COMMAND,
        command="false",
        retries=retries,
        retry_backoff=backoff,
    )


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    delays = [
        retry_delay(BACKOFF, attempt, random.Random(0)) for attempt in range(1, 7)
    ]

    assert [d.total_seconds() for d in delays] == [10, 20, 40, 60, 60, 60]


def test_the_default_backoff_starts_at_ten_seconds_and_caps_at_an_hour() -> None:
    backoff = RetryBackoff()

    assert retry_delay(backoff, 1, random.Random(0)) == timedelta(seconds=10)
    assert retry_delay(backoff, 9, random.Random(0)) == timedelta(seconds=2560)
    assert retry_delay(backoff, 10, random.Random(0)) == timedelta(hours=1)


def test_a_fractional_factor_is_applied_exactly() -> None:
    backoff = RetryBackoff(
        initial=timedelta(seconds=4), factor=1.5, max=timedelta(minutes=5)
    )

    assert retry_delay(backoff, 3, random.Random(0)) == timedelta(seconds=9)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 8], ids=lambda n: f"attempt-{n}")
def test_full_jitter_stays_between_zero_and_the_capped_delay(attempt: int) -> None:
    jittered = RetryBackoff(
        initial=BACKOFF.initial, factor=BACKOFF.factor, max=BACKOFF.max, jitter=True
    )
    ceiling = retry_delay(BACKOFF, attempt, random.Random(0))
    rng = random.Random(42)

    delays = [retry_delay(jittered, attempt, rng) for _ in range(200)]

    assert all(timedelta(0) <= d <= ceiling for d in delays)
    # Spread over the range, not pinned to one end.
    assert min(delays) < ceiling / 4
    assert max(delays) > ceiling * 3 / 4


def test_jitter_with_the_same_seed_repeats_the_same_delays() -> None:
    jittered = RetryBackoff(jitter=True)

    first = [retry_delay(jittered, n, random.Random(7)) for n in range(1, 5)]
    again = [retry_delay(jittered, n, random.Random(7)) for n in range(1, 5)]

    assert first == again
    assert first != [
        retry_delay(RetryBackoff(), n, random.Random(7)) for n in range(1, 5)
    ]


@pytest.mark.parametrize(
    "state",
    [AttemptState.FAILED, AttemptState.TIMED_OUT, AttemptState.LOST],
    ids=["failed", "timed-out", "lost"],
)
def test_a_retryable_end_with_retries_left_queues_the_run(state: AttemptState) -> None:
    outcome = settle_attempt(
        job(retries=2), 2, state, ENDED_AT, random.Random(0), exit_code=3
    )

    assert outcome.state is state
    assert outcome.run_state is RunState.QUEUED
    assert outcome.next_attempt_at == ENDED_AT + timedelta(seconds=20)
    assert outcome.exit_code == 3
    assert outcome.reason is None


def test_a_cancelled_attempt_is_never_retried() -> None:
    outcome = settle_attempt(
        job(retries=5), 1, AttemptState.CANCELLED, ENDED_AT, random.Random(0)
    )

    assert outcome.run_state is RunState.CANCELLED
    assert outcome.next_attempt_at is None


def test_a_success_ends_the_run() -> None:
    outcome = settle_attempt(
        job(retries=5), 1, AttemptState.SUCCEEDED, ENDED_AT, random.Random(0)
    )

    assert (outcome.run_state, outcome.next_attempt_at) == (RunState.SUCCEEDED, None)


@pytest.mark.parametrize(
    ("state", "run_state"),
    [
        (AttemptState.FAILED, RunState.FAILED),
        (AttemptState.TIMED_OUT, RunState.TIMED_OUT),
        (AttemptState.LOST, RunState.FAILED),
    ],
    ids=["failed", "timed-out", "lost"],
)
def test_the_last_allowed_attempt_ends_the_run(
    state: AttemptState, run_state: RunState
) -> None:
    # retries=2 allows attempts 1, 2 and 3; attempt 3 is the last.
    outcome = settle_attempt(
        job(retries=2), 3, state, ENDED_AT, random.Random(0), error="boom"
    )

    assert outcome.run_state is run_state
    assert outcome.next_attempt_at is None
    assert outcome.error == "boom"


def test_a_lost_last_attempt_says_why_the_run_failed() -> None:
    outcome = settle_attempt(
        job(retries=0), 1, AttemptState.LOST, ENDED_AT, random.Random(0)
    )

    assert outcome.reason is not None
    assert "lost" in outcome.reason


def test_no_retries_means_one_attempt() -> None:
    outcome = settle_attempt(
        job(retries=0), 1, AttemptState.FAILED, ENDED_AT, random.Random(0)
    )

    assert (outcome.run_state, outcome.next_attempt_at) == (RunState.FAILED, None)
