"""Limit failed logins per name and per address, moving a fake clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from socmeth.auth.errors import RateLimitedError
from socmeth.auth.ratelimit import LoginLimiter, LoginLimits
from socmeth.clock import FakeClock

WINDOW = timedelta(minutes=5)


def limiter(
    per_user: int = 3, per_address: int = 5, max_keys: int = 100
) -> LoginLimiter:
    return LoginLimiter(LoginLimits(per_user, per_address, WINDOW, max_keys))


def fail(limits: LoginLimiter, clock: FakeClock, user: str, address: str) -> None:
    limits.check(user, address, clock.now())
    limits.failed(user, address, clock.now())


def test_a_name_is_refused_until_its_first_failure_leaves_the_window() -> None:
    limits, clock = limiter(), FakeClock()
    fail(limits, clock, "alice", "10.0.0.1")
    clock.advance(60)
    fail(limits, clock, "alice", "10.0.0.2")
    fail(limits, clock, "alice", "10.0.0.3")

    with pytest.raises(RateLimitedError, match="this user: try again in 240 s") as hit:
        limits.check("alice", "10.0.0.4", clock.now())
    assert hit.value.retry_after == timedelta(minutes=4)

    clock.advance(239)
    with pytest.raises(RateLimitedError, match="in 1 s"):
        limits.check("alice", "10.0.0.4", clock.now())
    clock.advance(1)
    limits.check("alice", "10.0.0.4", clock.now())  # the first failure is out


def test_other_names_are_not_held_back_by_one_names_failures() -> None:
    limits, clock = limiter(), FakeClock()
    for address in ("a", "b", "c"):
        fail(limits, clock, "alice", address)

    limits.check("bob", "d", clock.now())


def test_an_address_is_refused_after_its_failures_whatever_the_names() -> None:
    limits, clock = limiter(per_user=100, per_address=5), FakeClock()
    for index in range(5):
        fail(limits, clock, f"user{index}", "192.0.2.7")

    with pytest.raises(RateLimitedError, match="this address"):
        limits.check("somebody-else", "192.0.2.7", clock.now())
    limits.check("somebody-else", "192.0.2.8", clock.now())

    clock.advance(WINDOW.total_seconds())
    limits.check("somebody-else", "192.0.2.7", clock.now())


def test_a_success_clears_the_names_failures_but_not_the_addresss() -> None:
    limits, clock = limiter(per_user=3, per_address=4), FakeClock()
    fail(limits, clock, "alice", "a")
    fail(limits, clock, "alice", "a")

    limits.succeeded("alice")
    fail(limits, clock, "alice", "a")
    fail(limits, clock, "alice", "a")

    limits.check("alice", "b", clock.now())  # two failures since the success
    with pytest.raises(RateLimitedError, match="this address"):
        limits.check("alice", "a", clock.now())  # four from this address


def test_refused_attempts_do_not_count() -> None:
    limits, clock = limiter(per_user=2), FakeClock()
    fail(limits, clock, "alice", "a")
    fail(limits, clock, "alice", "a")
    for _ in range(10):
        clock.advance(1)
        with pytest.raises(RateLimitedError):
            limits.check("alice", "a", clock.now())

    clock.advance(WINDOW.total_seconds() - 10)

    limits.check("alice", "a", clock.now())


def test_names_count_alike_whatever_their_case() -> None:
    limits, clock = limiter(per_user=2), FakeClock()
    fail(limits, clock, "Alice", "a")
    fail(limits, clock, "ALICE", "b")

    with pytest.raises(RateLimitedError):
        limits.check("alice", "c", clock.now())


def test_the_longer_wait_of_name_and_address_is_the_one_told() -> None:
    limits, clock = limiter(per_user=1, per_address=1), FakeClock()
    fail(limits, clock, "bob", "a")  # the address's failure, 5 min from now
    clock.advance(60)
    limits.failed("alice", "b", clock.now())  # alice's, 5 min from this later now

    with pytest.raises(RateLimitedError, match="this user: try again in 300 s"):
        limits.check("alice", "a", clock.now())


def test_memory_stays_bounded_forgetting_the_oldest_first() -> None:
    limits, clock = limiter(per_user=1, per_address=1000, max_keys=10), FakeClock()
    for index in range(50):
        limits.failed(f"user{index}", "a", clock.now())

    assert limits.tracked() == 10
    limits.check("user0", "b", clock.now())  # forgotten
    with pytest.raises(RateLimitedError):
        limits.check("user49", "b", clock.now())


def test_entries_past_the_window_are_dropped_when_looked_at() -> None:
    limits, clock = limiter(), FakeClock()
    fail(limits, clock, "alice", "a")
    clock.advance(WINDOW.total_seconds())

    limits.check("alice", "a", clock.now())

    assert limits.tracked() == 0


@pytest.mark.parametrize(
    "limits",
    [
        {"max_per_user": 0},
        {"max_per_address": 0},
        {"window": timedelta(0)},
        {"max_keys": 0},
    ],
    ids=["no-user-failures", "no-address-failures", "no-window", "no-keys"],
)
def test_limits_below_one_are_refused(limits: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="login"):
        LoginLimits(**limits)  # type: ignore[arg-type]
