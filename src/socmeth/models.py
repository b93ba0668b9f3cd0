"""Define the plain values that flow through socmeth: jobs, runs and attempts.

These are frozen dataclasses; pydantic lives only at the edges (API, config). The words
are the glossary's: a job is what to run and when, a run is one firing of a job, an
attempt is one execution of a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class JobType(StrEnum):
    COMMAND = "command"
    HTTP = "http"
    WEBHOOK = "webhook"


class Concurrency(StrEnum):
    """Say what a fire does while the job has an active run (Kubernetes' words)."""

    ALLOW = "allow"
    FORBID = "forbid"
    REPLACE = "replace"


class Misfire(StrEnum):
    """Say what happens to fires that passed while no scheduler was up."""

    RUN_ONCE = "run_once"
    SKIP = "skip"


class Trigger(StrEnum):
    """Name what caused a run."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    DEPENDENCY = "dependency"


class RunState(StrEnum):
    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"

    @property
    def is_active(self) -> bool:
        """Tell whether a run in this state may still execute."""
        return self in ACTIVE_RUN_STATES


ACTIVE_RUN_STATES = frozenset({RunState.WAITING, RunState.QUEUED, RunState.RUNNING})
FINAL_RUN_STATES = frozenset(set(RunState) - ACTIVE_RUN_STATES)


class AttemptState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def is_final(self) -> bool:
        """Tell whether the attempt has ended."""
        return self not in (AttemptState.QUEUED, AttemptState.RUNNING)

    @property
    def is_retryable(self) -> bool:
        """Tell whether the retry policy may follow an attempt that ended this way."""
        return self in (AttemptState.FAILED, AttemptState.TIMED_OUT, AttemptState.LOST)


@dataclass(frozen=True)
class RetryBackoff:
    """Shape the delays between attempts: min(max, initial * factor^(k-1))."""

    initial: timedelta = timedelta(seconds=10)
    factor: float = 2.0
    max: timedelta = timedelta(hours=1)
    jitter: bool = False


@dataclass(frozen=True)
class JobDefinition:
    """Hold everything an operator sets on a job; the store adds identity and times.

    Type-specific fields are None (or empty) for the other types: `command` for command
    jobs; `url`, `method`, `headers`, `body` and `expect_status` for http jobs; `url`,
    `headers` and `secret` for webhook jobs.
    """

    name: str
    type: JobType
    schedule: str | None = None
    timezone: str = "UTC"
    enabled: bool = True
    description: str = ""
    tags: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    command: str | None = None
    url: str | None = None
    method: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    expect_status: tuple[int, ...] = ()
    secret: str | None = None
    timeout: timedelta = timedelta(seconds=600)
    retries: int = 0
    retry_backoff: RetryBackoff = field(default_factory=RetryBackoff)
    concurrency: Concurrency = Concurrency.FORBID
    misfire: Misfire = Misfire.RUN_ONCE
    misfire_grace: timedelta | None = None
    depends_on: tuple[str, ...] = ()
    dependency_timeout: timedelta | None = None


@dataclass(frozen=True)
class Job:
    """A stored job: its definition plus identity, times and its next fire."""

    id: int
    definition: JobDefinition
    created_at: datetime
    updated_at: datetime
    next_fire_at: datetime | None

    @property
    def name(self) -> str:
        return self.definition.name


@dataclass(frozen=True)
class Attempt:
    """One execution of a run."""

    id: int
    run_id: int
    number: int
    state: AttemptState
    node_id: str | None
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    http_status: int | None = None
    error: str | None = None
    output_truncated: bool = False


@dataclass(frozen=True)
class Run:
    """One firing of a job, with its attempts oldest first."""

    id: int
    job_id: int
    job_name: str
    trigger: Trigger
    scheduled_at: datetime | None
    created_at: datetime
    state: RunState
    reason: str | None = None
    late: bool = False
    next_attempt_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: tuple[Attempt, ...] = ()
    # A dependency run: the run whose demand triggered it.
    needed_by_run_id: int | None = None

    @property
    def last_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


@dataclass(frozen=True)
class UpstreamLink:
    """Name the run of a dependency that a run waits for, or was fed by."""

    job_id: int
    job_name: str
    run_id: int
    state: RunState
