"""The dependency rule as a pure function of the job graph, the runs and `now`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from socmeth.dependencies import (
    MAX_DEPENDENCIES,
    DemandedRun,
    JobView,
    Link,
    Plan,
    PushedRun,
    RunEnd,
    RunView,
    Snapshot,
    WaitingRun,
    dependency_list_errors,
    find_cycle,
    format_cycle,
    plan_dependencies,
)
from socmeth.models import RunState

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def job(
    job_id: int,
    *depends_on: int,
    scheduled: bool = True,
    enabled: bool = True,
    consumed_at: datetime = T0,
    success: RunView | None = None,
    active: Sequence[int] = (),
    timeout: timedelta | None = None,
) -> JobView:
    return JobView(
        id=job_id,
        name=f"job-{job_id}",
        enabled=enabled,
        scheduled=scheduled,
        depends_on=depends_on,
        consumed_at=consumed_at,
        dependency_timeout=timeout,
        latest_success=success,
        active_run_ids=tuple(active),
    )


def succeeded(run_id: int, job_id: int, finished_at: datetime) -> RunView:
    return RunView(run_id, job_id, RunState.SUCCEEDED, finished_at)


def ended(
    run_id: int, job_id: int, state: RunState, reason: str | None = None
) -> RunView:
    return RunView(run_id, job_id, state, at(30), reason)


def active(run_id: int, job_id: int, state: RunState = RunState.RUNNING) -> RunView:
    return RunView(run_id, job_id, state)


def waiting(
    run_id: int,
    job_id: int,
    links: Mapping[int, RunView | None] | None = None,
    give_up_at: datetime | None = None,
) -> WaitingRun:
    return WaitingRun(
        run=RunView(run_id, job_id, RunState.WAITING),
        created_at=at(1),
        links=links or {},
        give_up_at=give_up_at,
    )


def plan_of(
    jobs: Sequence[JobView],
    waiting_runs: Sequence[WaitingRun] = (),
    successes: Sequence[RunView] = (),
    now: datetime = NOW,
) -> Plan:
    by_id = {j.id: j for j in jobs}
    downstream: dict[int, list[int]] = {}
    for j in jobs:
        for dep in j.depends_on:
            downstream.setdefault(dep, []).append(j.id)
    snapshot = Snapshot(by_id, waiting_runs, successes, downstream)
    return plan_dependencies(snapshot, now)


# The graph


def test_no_cycle_in_a_diamond() -> None:
    upstream = {"b": ["a"], "c": ["a"], "a": []}
    assert find_cycle(upstream, "d", ["b", "c"]) is None


def test_a_cycle_is_named_from_the_job_back_to_it() -> None:
    upstream = {"deploy": ["tests"], "tests": []}
    cycle = find_cycle(upstream, "tests", ["deploy"])
    assert cycle == ["tests", "deploy", "tests"]
    assert format_cycle(cycle) == "tests -> deploy -> tests"


def test_a_long_cycle_is_named_in_order_past_branches_that_lead_nowhere() -> None:
    upstream = {"b": ["x", "c"], "x": ["y"], "y": [], "c": ["d"], "d": ["a"]}
    assert find_cycle(upstream, "a", ["b"]) == ["a", "b", "c", "d", "a"]


def test_a_job_whose_new_list_drops_the_edge_breaks_the_cycle() -> None:
    # Stored: a depends on b, b depends on a (as if the update of a removes it).
    upstream = {"a": ["b"], "b": ["a"]}
    assert find_cycle(upstream, "a", []) is None


def test_cycles_are_found_by_id_too() -> None:
    assert find_cycle({2: [3], 3: [1]}, 1, [2]) == [1, 2, 3, 1]


def test_a_job_may_not_list_itself_or_a_name_twice() -> None:
    errors = dependency_list_errors("deploy", ["deploy", "tests", "tests"])
    messages = [e.message for e in errors]
    assert {e.field for e in errors} == {"depends_on"}
    assert messages == [
        "job deploy cannot depend on itself (deploy -> deploy)",
        "lists tests more than once",
    ]


def test_a_job_may_list_at_most_a_hundred_dependencies() -> None:
    names = [f"j{i}" for i in range(MAX_DEPENDENCIES + 1)]
    (error,) = dependency_list_errors("x", names)
    assert "at most 100" in error.message
    assert dependency_list_errors("x", names[:-1]) == []


# Resolving a waiting run


def test_stale_dependencies_are_demanded_together_and_linked() -> None:
    plan = plan_of([job(1), job(2), job(3, 1, 2)], [waiting(10, 3)])

    assert plan.demanded == [
        DemandedRun(key=-1, job_id=1, needed_by_run_id=10, waiting=False),
        DemandedRun(key=-2, job_id=2, needed_by_run_id=10, waiting=False),
    ]
    assert plan.links == [Link(10, 1, -1), Link(10, 2, -2)]
    assert plan.released == []
    assert plan.ended == []


def test_fresh_successes_release_the_run_and_are_consumed() -> None:
    jobs = [
        job(1, success=succeeded(5, 1, at(10))),
        job(2, success=succeeded(6, 2, at(12))),
        job(3, 1, 2, consumed_at=at(2)),
    ]
    plan = plan_of(jobs, [waiting(10, 3)])

    assert plan.demanded == []
    assert plan.links == [Link(10, 1, 5), Link(10, 2, 6)]
    assert plan.released == [10]
    assert plan.consumed == {3: NOW}


def test_a_success_that_finished_before_the_job_last_began_is_stale() -> None:
    jobs = [
        job(1, success=succeeded(5, 1, at(10))),
        job(2, success=succeeded(6, 2, at(20))),
        job(3, 1, 2, consumed_at=at(15)),
    ]
    plan = plan_of(jobs, [waiting(10, 3)])

    assert [d.job_id for d in plan.demanded] == [1]
    assert set(plan.links) == {Link(10, 1, -1), Link(10, 2, 6)}
    assert plan.released == []


def test_a_success_finishing_at_the_instant_the_job_began_is_stale() -> None:
    jobs = [job(1, success=succeeded(5, 1, at(15))), job(3, 1, consumed_at=at(15))]
    assert [d.job_id for d in plan_of(jobs, [waiting(10, 3)]).demanded] == [1]


def test_an_active_run_of_a_dependency_is_waited_for_instead_of_demanded() -> None:
    jobs = [job(1, active=[4, 8]), job(3, 1)]
    plan = plan_of(jobs, [waiting(10, 3)])

    assert plan.demanded == []
    assert plan.links == [Link(10, 1, 8)]  # the newest active run
    assert plan.released == []


def test_a_run_still_linked_to_an_active_run_keeps_waiting() -> None:
    jobs = [job(1, active=[8]), job(2, success=succeeded(6, 2, at(20))), job(3, 1, 2)]
    links = {1: active(8, 1), 2: succeeded(6, 2, at(20))}
    plan = plan_of(jobs, [waiting(10, 3, links)])

    assert plan.empty


def test_the_last_linked_success_releases_the_run_at_its_finish_if_later() -> None:
    # The success was recorded after this pass read the clock (a clock a little
    # behind the worker's): consuming at `now` would leave it fresh, feeding twice.
    late_finish = NOW + timedelta(milliseconds=20)
    jobs = [job(1, success=succeeded(8, 1, late_finish)), job(3, 1)]
    plan = plan_of(jobs, [waiting(10, 3, {1: succeeded(8, 1, late_finish)})])

    assert plan.released == [10]
    assert plan.consumed == {3: late_finish}
    assert plan.links == []  # the link stands as it is


@pytest.mark.parametrize(
    "state", [RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED]
)
def test_a_failed_dependency_ends_the_run_upstream_failed(state: RunState) -> None:
    jobs = [job(1), job(2), job(3, 1, 2)]
    links = {1: active(8, 1), 2: ended(9, 2, state)}
    plan = plan_of(jobs, [waiting(10, 3, links)])

    assert plan.ended == [
        RunEnd(
            10,
            RunState.UPSTREAM_FAILED,
            f"dependency job-2 failed: its run 9 ended {state}",
        )
    ]
    assert plan.released == []
    assert plan.demanded == []


def test_upstream_failure_passes_down_with_the_first_reason() -> None:
    reason = "dependency job-1 failed: its run 9 ended failed"
    links = {2: ended(11, 2, RunState.UPSTREAM_FAILED, reason)}
    plan = plan_of([job(1), job(2, 1), job(3, 2)], [waiting(12, 3, links)])

    (end,) = plan.ended
    assert end.state is RunState.UPSTREAM_FAILED
    assert end.reason == (
        f"dependency job-2 failed: its run 11 ended upstream_failed ({reason})"
    )


def test_a_skipped_dependency_run_skips_the_run_waiting_for_it() -> None:
    links = {1: ended(9, 1, RunState.SKIPPED, "dependency job-0 is paused")}
    plan = plan_of([job(1), job(3, 1)], [waiting(10, 3, links)])

    (end,) = plan.ended
    assert end.state is RunState.SKIPPED
    assert "job-1 was skipped: its run 9 ended skipped" in end.reason


def test_a_paused_dependency_is_not_demanded_and_skips_the_run() -> None:
    jobs = [job(1), job(2, enabled=False), job(3, 1, 2)]
    plan = plan_of(jobs, [waiting(10, 3)])

    (end,) = plan.ended
    assert end.state is RunState.SKIPPED
    assert "dependency job-2 is paused" in end.reason
    # Nothing else was started for a run that will not execute.
    assert plan.demanded == []
    assert plan.links == []


def test_a_paused_dependency_with_a_fresh_success_still_feeds() -> None:
    jobs = [job(2, enabled=False, success=succeeded(6, 2, at(20))), job(3, 2)]
    plan = plan_of(jobs, [waiting(10, 3)])

    assert plan.released == [10]


def test_a_paused_dependency_with_an_active_run_is_waited_for() -> None:
    jobs = [job(2, enabled=False, active=[7]), job(3, 2)]
    plan = plan_of(jobs, [waiting(10, 3)])

    assert plan.links == [Link(10, 2, 7)]
    assert plan.ended == []


def test_a_dependency_with_dependencies_is_demanded_waiting() -> None:
    jobs = [job(1), job(2, 1, timeout=timedelta(minutes=5)), job(3, 2)]
    plan = plan_of(jobs, [waiting(10, 3)])

    (demand,) = plan.demanded
    assert (demand.job_id, demand.waiting) == (2, True)
    assert demand.give_up_at == NOW + timedelta(minutes=5)


def test_two_runs_needing_one_dependency_share_one_demanded_run() -> None:
    # The diamond's middle: b and c both wait for a, resolved in the same pass.
    jobs = [job(1), job(2, 1), job(3, 1)]
    plan = plan_of(jobs, [waiting(20, 2), waiting(30, 3)])

    assert [(d.job_id, d.needed_by_run_id) for d in plan.demanded] == [(1, 20)]
    assert plan.links == [Link(20, 1, -1), Link(30, 1, -1)]


def test_one_success_feeds_one_of_two_waiting_runs_of_a_job() -> None:
    success = succeeded(5, 1, at(10))
    jobs = [job(1, success=success), job(3, 1, scheduled=True)]
    plan = plan_of(jobs, [waiting(10, 3), waiting(11, 3, {1: success})])

    assert plan.released == [10]
    # The second one's linked success fed the first: it needs a new one.
    assert [(d.job_id, d.needed_by_run_id) for d in plan.demanded] == [(1, 11)]
    assert Link(11, 1, -1) in plan.links


def test_a_link_to_a_pruned_run_is_replaced() -> None:
    plan = plan_of([job(1), job(3, 1)], [waiting(10, 3, {1: None})])
    assert plan.links == [Link(10, 1, -1)]


def test_a_waiting_run_gives_up_at_its_dependency_timeout() -> None:
    jobs = [job(1, active=[8]), job(3, 1, timeout=timedelta(seconds=90))]
    links = {1: active(8, 1)}
    ends = at(1) + timedelta(seconds=90)  # the run was created at at(1)

    still = plan_of(
        jobs, [waiting(10, 3, links, give_up_at=ends)], now=ends - timedelta(seconds=1)
    )
    assert still.empty

    plan = plan_of(jobs, [waiting(10, 3, links, give_up_at=ends)], now=ends)
    (end,) = plan.ended
    assert end.state is RunState.SKIPPED
    assert end.reason == (
        "gave up after waiting 90 s for dependencies (dependency_timeout 90 s): "
        "still waiting for job-1"
    )


def test_a_wait_seen_late_says_how_long_it_really_was() -> None:
    # The node was down when the wait should have ended.
    jobs = [job(1, active=[8]), job(3, 1, timeout=timedelta(seconds=6))]
    ends = at(1) + timedelta(seconds=6)
    late = ends + timedelta(seconds=9.94)
    plan = plan_of(jobs, [waiting(10, 3, {1: active(8, 1)}, give_up_at=ends)], now=late)

    (end,) = plan.ended
    assert (end.reason or "").startswith(
        "gave up after waiting 15.9 s for dependencies (dependency_timeout 6 s)"
    )


@pytest.mark.parametrize("timeout", [None, timedelta(seconds=5)])
def test_the_reason_names_the_wait_the_run_had_whatever_the_job_says_now(
    timeout: timedelta | None,
) -> None:
    # The job's timeout changed after the run began to wait.
    jobs = [job(1, active=[8]), job(3, 1, timeout=timeout)]
    ends = at(1) + timedelta(seconds=2.5)
    plan = plan_of(jobs, [waiting(10, 3, {1: active(8, 1)}, give_up_at=ends)], now=ends)

    (end,) = plan.ended
    assert end.reason is not None
    assert end.reason.startswith(
        "gave up after waiting 2.5 s for dependencies (dependency_timeout 2.5 s)"
    )


def test_a_run_that_no_longer_waits_is_left_alone() -> None:
    run = WaitingRun(RunView(10, 3, RunState.QUEUED), created_at=at(1))
    assert plan_of([job(1), job(3, 1)], [run]).empty


# Pushes for unscheduled jobs


def test_a_success_pushes_an_idle_unscheduled_dependent() -> None:
    success = succeeded(5, 1, at(10))
    jobs = [job(1, success=success), job(2, 1, scheduled=False)]
    plan = plan_of(jobs, successes=[success])

    assert plan.pushed == [PushedRun(-1, 2)]
    assert plan.consumed == {2: NOW}


@pytest.mark.parametrize(
    "dependent",
    [
        job(2, 1, scheduled=True),
        job(2, 1, scheduled=False, enabled=False),
        job(2, 1, scheduled=False, active=[9]),
        job(2, 1, scheduled=False, consumed_at=at(10)),
    ],
    ids=["scheduled", "paused", "active", "already-fed"],
)
def test_a_success_pushes_no_dependent_that_is(dependent: JobView) -> None:
    success = succeeded(5, 1, at(10))
    plan = plan_of([job(1, success=success), dependent], successes=[success])
    assert plan.pushed == []


def test_a_push_waits_until_every_dependency_is_fresh() -> None:
    b_done = succeeded(5, 2, at(10))
    jobs = [job(1), job(2, success=b_done), job(4, 2, 3, scheduled=False), job(3)]
    assert plan_of(jobs, successes=[b_done]).pushed == []

    c_done = succeeded(6, 3, at(11))
    jobs[3] = job(3, success=c_done)
    assert plan_of(jobs, successes=[c_done]).pushed == [PushedRun(-1, 4)]


def test_two_successes_in_one_pass_push_a_dependent_once() -> None:
    b_done, c_done = succeeded(5, 2, at(10)), succeeded(6, 3, at(11))
    jobs = [
        job(2, success=b_done),
        job(3, success=c_done),
        job(4, 2, 3, scheduled=False),
    ]
    plan = plan_of(jobs, successes=[b_done, c_done])

    assert plan.pushed == [PushedRun(-1, 4)]


def test_a_released_run_is_not_pushed_a_second_time() -> None:
    # The unscheduled job's waiting run is released by the success; the push that
    # the same success would make finds the job active.
    success = succeeded(5, 1, at(10))
    jobs = [job(1, success=success), job(2, 1, scheduled=False, active=[20])]
    plan = plan_of(jobs, [waiting(20, 2, {1: success})], successes=[success])

    assert plan.released == [20]
    assert plan.pushed == []


# Whole graphs, pass by pass


def test_a_diamond_demands_each_job_once_across_passes() -> None:
    # a=1; b=2 and c=3 after a; d=4 after b and c. Trigger d (run 40).
    jobs = {1: job(1), 2: job(2, 1), 3: job(3, 1), 4: job(4, 2, 3)}
    first = plan_of(list(jobs.values()), [waiting(40, 4)])
    assert [(d.job_id, d.waiting) for d in first.demanded] == [(2, True), (3, True)]

    # The store gives the demanded runs ids 41 (b) and 42 (c); they wait.
    jobs[2] = job(2, 1, active=[41])
    jobs[3] = job(3, 1, active=[42])
    second = plan_of(list(jobs.values()), [waiting(41, 2), waiting(42, 3)])
    assert [(d.job_id, d.needed_by_run_id) for d in second.demanded] == [(1, 41)]
    assert second.links == [Link(41, 1, -1), Link(42, 1, -1)]

    # a's run 43 succeeds: b and c are released together, d still waits.
    a_done = succeeded(43, 1, at(50))
    jobs[1] = job(1, success=a_done)
    third = plan_of(
        list(jobs.values()),
        [waiting(41, 2, {1: a_done}), waiting(42, 3, {1: a_done})],
        successes=[a_done],
    )
    assert third.released == [41, 42]
    assert third.demanded == []
    assert third.pushed == []


# A pass's budget


def test_a_pass_creates_at_most_its_budget_and_leaves_the_rest() -> None:
    success = succeeded(5, 1, at(10))
    dependents = [job(i, 1, scheduled=False) for i in range(10, 15)]
    jobs = [job(1, success=success), *dependents]

    by_id = {j.id: j for j in jobs}
    snapshot = Snapshot(by_id, [], [success], {1: [j.id for j in dependents]})
    plan = plan_dependencies(snapshot, NOW, max_new_runs=2)

    assert [p.job_id for p in plan.pushed] == [10, 11]
    assert plan.leftover == [5]  # the success, to push the others next pass


def test_waiting_runs_past_the_budget_are_left_for_the_next_pass() -> None:
    jobs = [job(1), job(2), job(3, 1), job(4, 2)]
    plan = plan_dependencies(
        Snapshot({j.id: j for j in jobs}, [waiting(30, 3), waiting(40, 4)]),
        NOW,
        max_new_runs=1,
    )

    assert [d.needed_by_run_id for d in plan.demanded] == [30]
    assert plan.leftover == [40]
