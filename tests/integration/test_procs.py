"""Read the process table: live group members, and processes of lost attempts."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

import pytest

from socmeth.executors.procs import group_alive, kill_attempt_processes

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc"), reason="needs Linux /proc to read processes"
)


def spawn(command: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["/bin/sh", "-c", command],
        env={**os.environ, **env},
        start_new_session=True,
    )


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_group_of_zombies_is_not_alive() -> None:
    child = spawn("exit 0")
    try:
        # Not reaped yet: a zombie, which killpg(pgid, 0) would still reach.
        assert wait_until(lambda: not group_alive(child.pid))
        os.killpg(child.pid, 0)
    finally:
        child.wait()


def test_a_running_group_is_alive() -> None:
    child = spawn("sleep 30")
    try:
        assert group_alive(child.pid)
    finally:
        child.kill()
        child.wait()


def test_processes_of_a_lost_attempt_are_killed_with_their_group() -> None:
    ours = {"SOCMETH_STORE_ID": "store-a", "SOCMETH_RUN_ID": "987654"}
    marked = spawn("sleep 30 & sleep 30; wait", **ours, SOCMETH_ATTEMPT="2")
    other_attempt = spawn("sleep 30", **ours, SOCMETH_ATTEMPT="1")
    other_store = spawn(
        "sleep 30",
        SOCMETH_STORE_ID="store-b",
        SOCMETH_RUN_ID="987654",
        SOCMETH_ATTEMPT="2",
    )
    try:
        assert wait_until(lambda: group_alive(marked.pid))

        found = kill_attempt_processes([(987654, 2)], "store-a")

        assert marked.pid in found
        assert marked.wait(5) == -9
        assert wait_until(lambda: not group_alive(marked.pid))
        assert other_attempt.poll() is None
        assert other_store.poll() is None, "the same run id of another store"
    finally:
        for child in (marked, other_attempt, other_store):
            if child.poll() is None:
                child.kill()
            child.wait()
