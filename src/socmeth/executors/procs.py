"""Read the process table (Linux `/proc`) for what signals alone cannot tell.

Two questions need it. Is anything of a process group still alive? `killpg(pgid, 0)`
also counts zombies, which under an init that does not reap orphans (the PID 1 of
many containers) stay forever, so a stopped group would look alive until the kill
grace ran out. And which processes did a previous life of this node leave running?
After a crash their attempts are settled as `lost` and may be retried; the old
processes must not run on beside the retry, and the environment socmeth gave them
(`SOCMETH_STORE_ID`, `SOCMETH_RUN_ID`, `SOCMETH_ATTEMPT`) names them.

Where `/proc` is missing, the group check falls back to signals and nothing is found
to kill.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc")
STORE_ID_VARIABLE = "SOCMETH_STORE_ID"


def store_id_of(database_url: str) -> str:
    """Return a short, stable name of a store, for the environment of commands."""
    return hashlib.sha256(database_url.encode()).hexdigest()[:16]


def group_alive(pgid: int) -> bool:
    """Tell whether the group has a member that is not a zombie."""
    if not PROC.is_dir():
        return _signal_reaches(pgid)
    return any(state != "Z" for _, group, state in _processes() if group == pgid)


def kill_attempt_processes(
    attempts: Iterable[tuple[int, int]], store_id: str
) -> list[int]:
    """SIGKILL the process groups of processes started for these (run, attempt).

    Returns the pids found. Only processes whose environment carries the store id,
    run id and attempt number socmeth set are touched, so neither a reused pid nor
    the same run id of another store on this machine is ever hit.
    """
    wanted = {(store_id, str(run_id), str(number)) for run_id, number in attempts}
    if not wanted or not PROC.is_dir():
        return []
    found = []
    for pid, group, state in _processes():
        if state == "Z" or pid == os.getpid():
            continue
        if _attempt_of(pid) in wanted:
            found.append(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
    return found


def _processes() -> Iterator[tuple[int, int, str]]:
    """Yield (pid, process group, state letter) of every process we can read."""
    with os.scandir(PROC) as entries:
        pids = [int(entry.name) for entry in entries if entry.name.isdigit()]
    for pid in pids:
        try:
            stat = Path(PROC, str(pid), "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses; fields follow the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        yield pid, int(fields[2]), fields[0]


def _attempt_of(pid: int) -> tuple[str, str, str] | None:
    try:
        raw = Path(PROC, str(pid), "environ").read_bytes()
    except OSError:
        return None
    env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    found = [
        env.get(name)
        for name in (STORE_ID_VARIABLE.encode(), b"SOCMETH_RUN_ID", b"SOCMETH_ATTEMPT")
    ]
    if None in found:
        return None
    store_id, run_id, number = (v.decode(errors="replace") for v in found if v)
    return store_id, run_id, number


def _signal_reaches(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
