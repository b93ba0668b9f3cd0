"""Define the store: the one source of truth for jobs, runs and attempts.

Every implementation keeps these invariants, which the scheduler and workers rely on:

- A run for a fire is created only by the insert that the unique (job, scheduled
  instant) key guards, in the same transaction that moves the job's `next_fire_at` on;
  a second run for the same fire is never stored, whatever restarts or races happen.
- A worker executes an attempt only after `claim_attempt` updated exactly one row from
  `queued` to `running`; a redelivered queue message therefore never runs twice.
- A write that is refused (duplicate name, missing job) changes nothing.
- The dependency graph stays acyclic and names only stored jobs: a job's
  `depends_on` is checked against the stored jobs in the transaction that writes it,
  a job others depend on cannot be deleted, and a rename rewrites their lists.
- Dependency work is never lost: a waiting run, and an ended run that another job
  depends on, are put on the store's dependency work list in the transaction that
  created or ended them; a pass of `resolve_dependencies` takes them off in the
  transaction that acts on them.

All instants are aware UTC datetimes. Methods raise `NotFoundError` for a missing job,
run or attempt, `ConflictError` for a clash with stored state and `StoreError` when
the store itself fails. The leader's writes (`record_fires`, `resolve_dependencies`,
`start_retry`, `prune_runs`, and `cancel_run` for a fire's replace) take a `Fence`
and raise `FencedError`, writing nothing, once another node took the lease.

`AuthStore`, which `Store` extends, keeps users, API tokens and audit records
(socmeth.auth); its invariants are in its own docstring.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from socmeth.auth.models import ApiToken, AuditAction, AuditRecord, Role, User
from socmeth.dependencies import Plan, Snapshot
from socmeth.models import (
    Attempt,
    AttemptState,
    Concurrency,
    Job,
    JobDefinition,
    Run,
    RunState,
    Trigger,
    UpstreamLink,
)

T = TypeVar("T")

# Every store's ids are signed 64-bit integers, counted from 1.
MAX_ID = 2**63 - 1


def fits_id(digits: str) -> bool:
    """Tell whether `digits` (ASCII digits) are an id a store can hold."""
    # The length goes first: int() refuses a string of thousands of digits.
    return len(digits) <= len(str(MAX_ID)) and int(digits) <= MAX_ID


Planner = Callable[[Snapshot, datetime], Plan]


@dataclass(frozen=True)
class Page(Generic[T]):
    """Hold one page of a collection and the cursor of the next, None at the end."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class JobFilter:
    """Narrow a job listing: a substring of the name, enabled or not, a tag."""

    search: str | None = None
    enabled: bool | None = None
    tag: str | None = None


class JobSort(StrEnum):
    """Order a job listing. Each value is the word the API and the dashboard take:
    the field sorted by, with a leading `-` for newest (or Z) first."""

    NAME = "name"  # A to Z
    NAME_DESC = "-name"  # Z to A
    NEXT_FIRE = "next_fire_at"  # soonest first; jobs with no next fire last
    UPDATED = "-updated_at"  # most recently updated first
    CREATED = "-created_at"  # most recently created first


@dataclass(frozen=True)
class RunFilter:
    """Narrow a run listing; every field left None matches everything.

    The creation range is half-open: `created_after` <= created_at < `created_before`.
    """

    job_id: int | None = None
    states: frozenset[RunState] | None = None
    trigger: Trigger | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class NewRun:
    """Describe a run to create.

    A run created `queued` gets attempt 1 in the same transaction; one created in a
    final state (`skipped`) gets no attempt and its `finished_at` is the creation time.
    One created `waiting` gets no attempt either: it goes on the dependency work
    list, and `give_up_at` ends its wait (the job's `dependency_timeout`).
    """

    job_id: int
    trigger: Trigger
    scheduled_at: datetime | None
    state: RunState = RunState.QUEUED
    reason: str | None = None
    late: bool = False
    needed_by_run_id: int | None = None
    give_up_at: datetime | None = None


@dataclass(frozen=True)
class GiveUp:
    """End a waiting run `skipped`: its job's next fire came before its dependencies
    were done. Applied with its job's fire advance, and only while the run waits."""

    job_id: int
    run_id: int
    reason: str


@dataclass(frozen=True)
class FireAdvance:
    """Move a job's next fire on, only if it still holds the value the planner read.

    The condition keeps a planner from overwriting a schedule that an update changed
    between its read and its write.
    """

    job_id: int
    expected_next_fire_at: datetime
    next_fire_at: datetime | None


@dataclass(frozen=True)
class QueuedAttempt:
    """Name an attempt that waits in the queue: what a queue message carries."""

    attempt_id: int
    run_id: int
    number: int


@dataclass(frozen=True)
class AttemptOutcome:
    """Carry the end of an attempt and what the run does next.

    `next_attempt_at` set: the run goes back to `queued` with a pending retry. Unset:
    the run ends in `run_state`.
    """

    state: AttemptState
    run_state: RunState
    exit_code: int | None = None
    http_status: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ClaimedAttempt:
    """Give a worker everything it needs to execute an attempt it claimed."""

    attempt: Attempt
    run: Run
    job: Job
    previous_run: Run | None  # the job's latest ended run before this one


@dataclass(frozen=True)
class ClaimBatch:
    """Split the attempts a worker tried to claim.

    `deferred` holds attempts still queued that were not claimed because the cluster
    already runs `max_running` attempts; the rest (claimed elsewhere, cancelled,
    deleted) are in neither list and their messages can be dropped.
    """

    claimed: list[ClaimedAttempt]
    deferred: list[int]


@dataclass(frozen=True)
class AttemptFinish:
    """Carry one ended attempt to the store, with its final output tail."""

    attempt_id: int
    outcome: AttemptOutcome
    output: str | None = None
    output_truncated: bool = False


@dataclass(frozen=True)
class FinishedAttempts:
    """Report a batch of ended attempts.

    `runs` holds each finish's run as it is now, or None where the attempt was no
    longer running (already settled elsewhere); `dependency_work` is true when an
    ended run went on the dependency work list, so the leader should take a pass.
    """

    runs: list[Run | None]
    dependency_work: bool = False


@dataclass(frozen=True)
class RunningAttempt:
    """Describe an attempt a node runs, for reaping and cancel checks."""

    attempt: Attempt
    run: Run
    job: Job


@dataclass(frozen=True)
class DependencyPass:
    """Report one pass of dependency resolution.

    `queued` holds the runs that pass created or released `queued`, with their first
    attempts (to publish); `ended` the waiting runs it ended. `worked` is false when
    there was nothing to do, so the caller can stop taking passes.
    """

    worked: bool = False
    queued: list[Run] = field(default_factory=list)
    ended: list[Run] = field(default_factory=list)
    waiting: list[Run] = field(default_factory=list)


@dataclass(frozen=True)
class GraphJob:
    """One job of a dependency graph, with its latest run."""

    id: int
    name: str
    enabled: bool
    schedule: str | None
    latest_run: Run | None


@dataclass(frozen=True)
class DependencyGraph:
    """Name a job's upstream and downstream jobs and the edges between them.

    An edge (a, b) says b depends on a: a runs first. `truncated` is true when the
    graph was cut at the size asked for.
    """

    job_id: int
    jobs: list[GraphJob]
    edges: list[tuple[int, int]]
    truncated: bool = False


@dataclass(frozen=True)
class NodeBeat:
    """What a node says of itself in each heartbeat."""

    id: str
    address: str
    version: str
    started_at: datetime
    running: int


@dataclass(frozen=True)
class NodeRecord:
    """A node as the store last heard of it."""

    id: str
    address: str
    version: str
    started_at: datetime
    last_heartbeat_at: datetime
    running: int
    stopped_at: datetime | None


@dataclass(frozen=True)
class Lease:
    """The leader lease: `holder` leads in `term` until `expires_at` (store clock)."""

    holder: str | None
    term: int
    expires_at: datetime | None
    # For a lease just taken from another holder: when that holder's lease ended
    # (lapsed, released, or still running when it was taken from a gone session).
    previous_expires_at: datetime | None = None

    def leader_at(self, now: datetime) -> str | None:
        """Return the node that holds the lease at `now`, if any."""
        if self.expires_at is None or self.expires_at <= now:
            return None
        return self.holder

    def held_by(self, node_id: str, now: datetime) -> bool:
        """Tell whether `node_id` holds the lease at `now`."""
        return self.leader_at(now) == node_id


@dataclass(frozen=True)
class Fence:
    """Name the leadership a write is made under: `holder` leading in `term`.

    A fenced write checks, in its own transaction, that the lease still has this
    holder and term, and raises FencedError otherwise, so that a leader that lost
    the lease (paused, cut off) cannot act on it.
    """

    holder: str
    term: int


@dataclass(frozen=True)
class JobCounts:
    enabled: int = 0
    paused: int = 0


@dataclass(frozen=True)
class RunCounts:
    by_state: dict[RunState, int] = field(default_factory=dict)


# The run states the dashboard counts as failures: the run ended without success
# through its own attempts or its dependencies (a lost attempt ends its run failed).
FAILED_RUN_STATES = frozenset(
    {RunState.FAILED, RunState.TIMED_OUT, RunState.UPSTREAM_FAILED}
)


@dataclass(frozen=True)
class EndedBucket:
    """Count the runs that ended in [`start_at`, `start_at` + the bucket width)."""

    start_at: datetime
    ended: int
    failed: int


@dataclass(frozen=True)
class NewUser:
    """Describe a user to create; `password_hash` is an argon2id hash, never the
    password (socmeth.auth.passwords)."""

    name: str
    role: Role
    password_hash: str = field(repr=False)


@dataclass(frozen=True)
class NewApiToken:
    """Describe an API token to create: the SHA-256 hex digest of the token, never
    the token itself (socmeth.auth.api_tokens)."""

    name: str
    role: Role
    token_hash: str = field(repr=False)
    created_by: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class NewAuditRecord:
    """Describe an audit record to append. `detail` is small, JSON-serializable and
    holds no secret (socmeth.auth.audit checks both)."""

    at: datetime
    actor: str
    action: AuditAction
    target: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditFilter:
    """Narrow an audit listing; every field left None matches everything."""

    action: str | None = None
    actor: str | None = None
    target: str | None = None


class AuthStore(ABC):
    """Keep users, API tokens and audit records (socmeth.auth).

    Invariants:

    - User names are unique, and so are token names (among all tokens, revoked ones
      too, so that an audit record's `token:NAME` names one token for ever). A taken
      name is a ConflictError with field `name`, and the write changes nothing.
    - There is always an admin once there was one: deleting the last admin, or
      changing the last admin's role, is a ConflictError (field `role`), checked in
      the transaction that writes, with the admins locked, so that two concurrent
      removals cannot both pass.
    - A token is looked up by the SHA-256 of its text; the store never sees the text.
    - Audit records are only ever appended; ids grow with every record, so that
      newest first is by id.

    Names are taken as given: callers check them (socmeth.auth.names).
    """

    # Users

    @abstractmethod
    async def create_user(self, user: NewUser, now: datetime) -> User:
        """Store a new user, created and updated at `now`.

        ConflictError (field `name`) when the name is taken.
        """

    @abstractmethod
    async def get_user(self, name: str) -> User:
        """Return the user of that name; NotFoundError when there is none."""

    @abstractmethod
    async def list_users(self) -> list[User]:
        """Return every user, by name. Users are few; there is no paging."""

    @abstractmethod
    async def update_user(
        self,
        name: str,
        now: datetime,
        *,
        role: Role | None = None,
        password_hash: str | None = None,
    ) -> User:
        """Change a user's role, password hash, or both, and set `updated_at` to `now`.

        Arguments left None keep their value; `updated_at` moves even when nothing
        else changed. NotFoundError for an unknown name; ConflictError (field
        `role`) when it would leave no admin.
        """

    @abstractmethod
    async def delete_user(self, name: str) -> None:
        """Delete a user; NotFoundError for an unknown name, ConflictError (field
        `role`) for the last admin. The tokens it created stay."""

    # API tokens

    @abstractmethod
    async def create_api_token(self, token: NewApiToken, now: datetime) -> ApiToken:
        """Store a new API token, created at `now`, never used, not revoked.

        ConflictError (field `name`) when the name is taken.
        """

    @abstractmethod
    async def get_api_token(self, token_id: int) -> ApiToken:
        """Return one API token by id; NotFoundError when there is none."""

    @abstractmethod
    async def find_api_token(self, token_hash: str) -> ApiToken | None:
        """Return the API token whose hash this is, revoked or not; None if none.

        An index lookup by the hash.
        """

    @abstractmethod
    async def list_api_tokens(self, *, include_revoked: bool = True) -> list[ApiToken]:
        """Return API tokens, by name; with `include_revoked` false, only those not
        revoked (expired ones are listed either way)."""

    @abstractmethod
    async def touch_api_token(
        self, token_id: int, now: datetime, min_interval: timedelta
    ) -> bool:
        """Set a token's `last_used_at` to `now`, unless it was set less than
        `min_interval` before `now`; return whether it was written.

        The condition is in the update, so nodes using one token at once write it
        at most once per interval.
        """

    @abstractmethod
    async def revoke_api_token(self, token_id: int, now: datetime) -> ApiToken:
        """Revoke a token at `now` and return it; a token already revoked is
        returned unchanged. NotFoundError when there is none."""

    # Audit

    @abstractmethod
    async def append_audit(self, record: NewAuditRecord) -> AuditRecord:
        """Append an audit record and return it with its id."""

    @abstractmethod
    async def list_audit(
        self, audit_filter: AuditFilter, limit: int, cursor: str | None
    ) -> Page[AuditRecord]:
        """Return audit records newest first (by id), `limit` at a time.

        The filter's fields match exactly. Pages are keyset pages on the id;
        ValidationError (field `cursor`) for a cursor this store did not make for
        an audit listing.
        """


class Store(AuthStore):
    """Keep jobs, runs and attempts; see the module docstring for the invariants."""

    # Lifecycle

    @abstractmethod
    async def close(self) -> None:
        """Release every connection."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreError unless the store answers a trivial query."""

    # Cluster

    @abstractmethod
    async def store_now(self) -> datetime:
        """Return the store's clock: what node liveness and the lease are read by.

        PostgreSQL's clock for a shared database; for SQLite, which serves one node,
        the node's own clock.
        """

    @abstractmethod
    async def heartbeat(self, beat: NodeBeat) -> datetime:
        """Record that a node is alive, at the store's clock; return that instant."""

    @abstractmethod
    async def mark_stopped(self, node_id: str) -> None:
        """Record that a node stopped cleanly, so that it reads down at once."""

    @abstractmethod
    async def list_nodes(self) -> tuple[datetime, list[NodeRecord]]:
        """Return the store's clock and every node that ever heartbeated, by id."""

    @abstractmethod
    async def acquire_lease(
        self, node_id: str, ttl: timedelta, *, gone_term: int | None = None
    ) -> Lease | None:
        """Renew the lease if `node_id` holds it, or take it if it lapsed.

        Taking it raises the term; renewing keeps it, even after a lapse while no
        other node took the lease. Returns the lease when `node_id` holds it after
        the call, None while another node's lease runs. Expiry is by the store's
        clock. `gone_term`: the lease of that term is taken even while it runs,
        because its holder's session is known to be gone (see `term_lock`).
        """

    @property
    @abstractmethod
    def has_term_locks(self) -> bool:
        """Tell whether this store has session locks (`term_lock`)."""

    @abstractmethod
    async def term_lock(self, term: int) -> bool:
        """Hold the session lock of a term, if no other node's session does.

        A leader holds its term's lock on a connection of its own for as long as it
        leads, so a follower that can take the lock of the running term knows that
        the holder's session is gone (its process died): it need not wait for the
        lease to lapse. Safe to repeat while held. Only for stores with
        `has_term_locks`.
        """

    @abstractmethod
    async def release_term_lock(self, term: int) -> None:
        """Let go of a term's session lock, if held."""

    @abstractmethod
    async def release_lease(self, node_id: str, term: int) -> None:
        """Give the lease up at once, if `node_id` still holds it in `term`."""

    @abstractmethod
    async def current_lease(self) -> tuple[datetime, Lease]:
        """Return the store's clock and the lease as stored."""

    # Jobs

    @abstractmethod
    async def create_job(
        self, definition: JobDefinition, next_fire_at: datetime | None, now: datetime
    ) -> Job:
        """Store a new job; ConflictError when the name is taken.

        ValidationError (field `depends_on`) when a dependency names no stored job.
        """

    @abstractmethod
    async def update_job(
        self,
        job_id: int,
        definition: JobDefinition,
        next_fire_at: datetime | None,
        now: datetime,
        *,
        read_at: datetime | None = None,
    ) -> Job:
        """Replace a job's definition and next fire; ConflictError on a taken name.

        With `read_at` (the `updated_at` of the job the new definition was made
        from), ChangedError when the job changed since: another update, or a
        rename of a job it depends on, rewrote it meanwhile.

        ValidationError (field `depends_on`) when a dependency names no stored job
        or would close a cycle, which the message names (`a -> b -> a`). A new name
        is written into the `depends_on` of the jobs that depend on this one. Jobs
        that gain a dependency are fed only by successes from now on.
        """

    @abstractmethod
    async def delete_job(self, job_id: int) -> None:
        """Delete a job with its runs, attempts and output.

        ConflictError, naming them, while other jobs depend on it.
        """

    @abstractmethod
    async def get_job(self, job_id: int) -> Job:
        """Return one job by id."""

    @abstractmethod
    async def get_job_by_name(self, name: str) -> Job:
        """Return one job by name."""

    @abstractmethod
    async def list_jobs(
        self,
        job_filter: JobFilter,
        limit: int,
        cursor: str | None,
        sort: JobSort = JobSort.NAME,
    ) -> Page[Job]:
        """Return jobs in the order of `sort`, `limit` at a time.

        Ties of the sorted field are broken by id, in the same direction, so the
        order is total. Pages are keyset pages: a cursor holds the sort and the last
        job's sorted value and id, and the next page starts after them, one index
        range scan deep however far in it is; paging through a store that does not
        change meanwhile yields each matching job exactly once. A job whose sorted
        value changes while a client pages (an update, a fire moving its next fire)
        moves in the order. ValidationError (field `cursor`) for a cursor this store
        did not make, or made under another sort.
        """

    @abstractmethod
    async def count_jobs(self) -> JobCounts:
        """Count jobs by enabled and paused."""

    @abstractmethod
    async def due_jobs(self, now: datetime, limit: int) -> list[Job]:
        """Return enabled jobs whose next fire is at or before `now`, earliest first.

        An index lookup on the next fire, never a scan of every job.
        """

    @abstractmethod
    async def next_due_at(self) -> datetime | None:
        """Return the earliest next fire, pending retry or end of a dependency wait,
        for the scheduler's sleep."""

    # Runs

    @abstractmethod
    async def dependency_graph(self, job_id: int, limit: int) -> DependencyGraph:
        """Return the jobs upstream and downstream of a job, at most `limit` of them."""

    @abstractmethod
    async def record_fires(
        self,
        advances: Sequence[FireAdvance],
        runs: Sequence[NewRun],
        now: datetime,
        give_ups: Sequence[GiveUp] = (),
        *,
        fence: Fence | None = None,
    ) -> list[Run]:
        """Create runs for fires and move next fires on, in one transaction.

        A run whose (job, scheduled instant) already exists is left out silently, and
        so is a run whose job's advance no longer matched. Give-ups of jobs whose
        advance matched end their waiting runs `skipped` first. Returned: the runs
        the give-ups ended, then the runs actually created, with their first
        attempts.
        """

    @abstractmethod
    async def create_run(
        self,
        new_run: NewRun,
        now: datetime,
        *,
        concurrency: Concurrency = Concurrency.ALLOW,
    ) -> Run:
        """Create one run outside the schedule (manual or dependency trigger).

        `concurrency` applies to the job's active runs in the same transaction:
        `forbid` raises ConflictError naming the active run, `replace` cancels the
        active runs (a running one is asked to stop), `allow` leaves them.
        """

    @abstractmethod
    async def resolve_dependencies(
        self,
        now: datetime,
        limit: int,
        planner: Planner,
        *,
        fence: Fence | None = None,
    ) -> DependencyPass:
        """Take one pass over the dependency work list, in one transaction.

        Reads up to `limit` entries of the list and the waiting runs whose
        `give_up_at` passed, builds their `Snapshot`, and applies what `planner`
        returns: creates demanded and pushed runs, links, releases and ends waiting
        runs, and takes the entries it read off the list.
        """

    @abstractmethod
    async def upstream_links(
        self, run_ids: Sequence[int]
    ) -> dict[int, list[UpstreamLink]]:
        """Return, for each run, the runs of its dependencies it waits for or was fed
        by, ordered by the dependencies' names."""

    @abstractmethod
    async def get_run(self, run_id: int) -> Run:
        """Return one run with its attempts."""

    @abstractmethod
    async def list_runs(
        self, run_filter: RunFilter, limit: int, cursor: str | None
    ) -> Page[Run]:
        """Return runs newest first, each with its attempts."""

    @abstractmethod
    async def active_runs(self, job_ids: Sequence[int]) -> dict[int, list[Run]]:
        """Return the waiting, queued and running runs of the given jobs."""

    @abstractmethod
    async def previous_final_run(self, job_id: int, before_run_id: int) -> Run | None:
        """Return the job's latest ended run older than `before_run_id`."""

    @abstractmethod
    async def count_runs(self) -> RunCounts:
        """Count runs by state."""

    @abstractmethod
    async def ended_runs_by_bucket(
        self, since: datetime, width: timedelta, count: int
    ) -> list[EndedBucket]:
        """Count ended runs, and failed ones (FAILED_RUN_STATES), per time bucket.

        Returns `count` buckets of `width` each, the first starting at `since`, empty
        ones included. A run belongs to the bucket of its `finished_at`. One range
        scan of the finish index, grouped in the database, however many runs ended.
        """

    @abstractmethod
    async def cancel_run(
        self, run_id: int, reason: str, now: datetime, *, fence: Fence | None = None
    ) -> Run:
        """Cancel a run.

        A run with no running attempt ends `cancelled` at once (its queued attempt,
        if any, ends `cancelled` too); a running one is marked so that its worker stops
        it. A run already ended is returned unchanged.
        """

    @abstractmethod
    async def prune_runs(
        self, finished_before: datetime, limit: int, *, fence: Fence | None = None
    ) -> int:
        """Delete up to `limit` ended runs finished before the instant; return count."""

    @abstractmethod
    async def forget_nodes(
        self, silent_before: datetime, *, fence: Fence | None = None
    ) -> int:
        """Delete the rows of nodes whose last heartbeat is before the instant, and
        that run no attempt; return how many."""

    # Attempts

    @abstractmethod
    async def claim_attempts(
        self,
        attempt_ids: Sequence[int],
        node_id: str,
        now: datetime,
        max_running: int,
    ) -> ClaimBatch:
        """Move queued attempts to running for `node_id`, in one transaction.

        An attempt is claimed only when its row changed from `queued` to `running`,
        and only while fewer than `max_running` attempts run in the whole store; its
        run becomes `running`. See ClaimBatch for the ones not claimed.
        """

    @abstractmethod
    async def finish_attempts(
        self,
        finishes: Sequence[AttemptFinish],
        now: datetime,
        *,
        silent_since: datetime | None = None,
        fence: Fence | None = None,
    ) -> FinishedAttempts:
        """Record ended attempts and settle their runs, in one transaction.

        For each finish, in order: the attempt gets its final state, result and output;
        its run goes back to `queued` with `next_attempt_at` when the outcome has a
        retry, or ends in the outcome's run state; an ended run that anything depends
        on goes on the dependency work list. A finish of an attempt that is no longer
        running is ignored (its run in the result is None).

        `silent_since` (a store instant) is for reaping: a finish is then kept only
        while the attempt's node is silent since that instant (see
        `orphaned_attempts`), checked in the same transaction.
        """

    @abstractmethod
    async def save_outputs(self, outputs: Sequence[tuple[int, str, bool]]) -> None:
        """Store (attempt id, output tail, truncated) of running attempts."""

    @abstractmethod
    async def get_output(self, run_id: int, number: int) -> tuple[Attempt, str]:
        """Return an attempt of a run and its stored output."""

    @abstractmethod
    async def due_retries(self, now: datetime, limit: int) -> list[Run]:
        """Return queued runs whose pending retry is due."""

    @abstractmethod
    async def start_retry(
        self, run_id: int, now: datetime, *, fence: Fence | None = None
    ) -> QueuedAttempt | None:
        """Create the run's next attempt, queued, and clear its pending retry.

        None when the run no longer waits for a retry (cancelled meanwhile).
        """

    @abstractmethod
    async def queued_attempts(
        self, limit: int, after_id: int, queued_before: datetime | None = None
    ) -> list[QueuedAttempt]:
        """Return queued attempts with ids above `after_id`, for re-publishing;
        with `queued_before`, only those queued before that instant."""

    @abstractmethod
    async def running_attempts(self, node_id: str | None) -> list[RunningAttempt]:
        """Return running attempts, of one node or of all nodes."""

    @abstractmethod
    async def orphaned_attempts(
        self, silent_since: datetime, limit: int, *, except_node: str | None = None
    ) -> list[RunningAttempt]:
        """Return running attempts whose node is silent since `silent_since`.

        A node is silent when its last heartbeat is before that store instant, when
        it stopped, or when it never wrote a node row. Attempts of `except_node`
        are left out. Oldest attempts first.
        """

    @abstractmethod
    async def cancel_requested(self, attempt_ids: Sequence[int]) -> set[int]:
        """Return which of these attempts should stop.

        That is every attempt whose run was asked to stop, and every one that is no
        longer running in the store (its job was deleted, or it was settled as lost):
        nothing would record its end.
        """

    @abstractmethod
    async def running_count(self) -> int:
        """Count running attempts in the whole store."""

    @abstractmethod
    async def queued_count(self) -> int:
        """Count queued attempts in the whole store: the cluster's queue size."""
