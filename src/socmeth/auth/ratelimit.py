"""Limit failed logins per user name and per client address, as a pure function of
`now`.

A name may fail `max_per_user` times, and an address `max_per_address` times, within
a sliding `window`; the next attempt is then refused until the oldest of those
failures leaves the window. A login that succeeds clears its name's failures (not
its address's: one address may be guessing at many names). Refused attempts are
not counted, so a client that keeps trying is let in again once the window passes.

The counts live in this process: each node counts its own, so a cluster of N nodes
lets a client fail up to N times as often. Memory is bounded: at most `max_keys`
names and addresses are tracked, the least recently failed forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from socmeth.auth.errors import RateLimitedError

# A name longer than any user name is cut: a key is never larger than this.
_KEY_CHARS = 128


@dataclass(frozen=True)
class LoginLimits:
    """How many failures a name and an address may have within `window`."""

    max_per_user: int = 5
    max_per_address: int = 20
    window: timedelta = timedelta(minutes=5)
    max_keys: int = 100_000

    def __post_init__(self) -> None:
        if min(self.max_per_user, self.max_per_address, self.max_keys) < 1:
            raise ValueError(f"login limits must be at least 1: {self}")
        if self.window <= timedelta(0):
            raise ValueError(f"the login window must be positive, not {self.window}")


class LoginLimiter:
    """Count failed logins and refuse attempts over the limits (see the module)."""

    def __init__(self, limits: LoginLimits | None = None) -> None:
        self._limits = limits or LoginLimits()
        self._failures: OrderedDict[tuple[str, str], deque[datetime]] = OrderedDict()

    def check(self, user: str, address: str, now: datetime) -> None:
        """Raise RateLimitedError when the name or the address is over its limit.

        The error's `retry_after` is how long until the attempt would be let in.
        """
        limits = self._limits
        waits = [
            (what, wait)
            for what, key, limit in (
                ("user", _user_key(user), limits.max_per_user),
                ("address", ("address", address), limits.max_per_address),
            )
            if (wait := self._wait(key, limit, now)) is not None
        ]
        if not waits:
            return
        what, wait = max(waits, key=lambda found: found[1])
        raise RateLimitedError(
            f"too many failed logins for this {what}: try again in {_seconds(wait)} s",
            retry_after=wait,
        )

    def failed(self, user: str, address: str, now: datetime) -> None:
        """Count a failed login of `user` from `address` at `now`."""
        limits = self._limits
        self._count(_user_key(user), limits.max_per_user, now)
        self._count(("address", address), limits.max_per_address, now)

    def succeeded(
        self, user: str, address: str | None = None, at: datetime | None = None
    ) -> None:
        """Clear the failures of a name that just logged in; with `address` and
        `at`, also take back the failure counted for that address at `at` (an
        attempt is counted as failed before its password is checked)."""
        self._failures.pop(_user_key(user), None)
        failures = self._failures.get(("address", address or ""))
        if address is not None and at is not None and failures and at in failures:
            failures.remove(at)

    def tracked(self) -> int:
        """Count the names and addresses with failures held, for tests and metrics."""
        return len(self._failures)

    def _wait(
        self, key: tuple[str, str], limit: int, now: datetime
    ) -> timedelta | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        _forget_before(failures, now - self._limits.window)
        if not failures:
            del self._failures[key]
            return None
        if len(failures) < limit:
            return None
        return failures[0] + self._limits.window - now

    def _count(self, key: tuple[str, str], limit: int, now: datetime) -> None:
        failures = self._failures.pop(key, None) or deque(maxlen=limit)
        _forget_before(failures, now - self._limits.window)
        failures.append(now)
        self._failures[key] = failures  # now the most recent
        while len(self._failures) > self._limits.max_keys:
            self._failures.popitem(last=False)


def _user_key(user: str) -> tuple[str, str]:
    return ("user", user[:_KEY_CHARS].lower())


def _forget_before(failures: deque[datetime], start: datetime) -> None:
    while failures and failures[0] <= start:
        failures.popleft()


def _seconds(wait: timedelta) -> int:
    """Round a wait up to whole seconds, at least 1."""
    whole = int(wait.total_seconds())
    return max(1, whole + (whole < wait.total_seconds()))
