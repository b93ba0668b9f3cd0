"""Share what the cluster benches need beside tests/e2e/cluster.py.

`tests/e2e/cluster.py` starts the real nodes (a scratch PostgreSQL database and a
Redis key prefix per cluster, removed on close); this module adds what a bench needs
around it: the repository root on `sys.path` so that `tests` imports from
`python bench/NAME.py`, a check that the services answer, a cluster that is closed
whatever happens (Ctrl-C and SIGTERM included), an asyncpg connection to its store,
percentiles and the table every bench prints (each figure beside its floor or
baseline, a target and a verdict, as in bench/scale.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import asyncpg  # noqa: E402
import redis  # noqa: E402
from tests.e2e.cluster import POSTGRES_URL, REDIS_URL, Cluster  # noqa: E402

__all__ = [
    "REDIS_URL",
    "Cluster",
]  # re-exported: importing it from here puts the root on the path

ACTIVE_RUN_STATES = ("waiting", "queued", "running")


def note(message: str) -> None:
    """Say what the bench is doing, on stderr, so stdout holds the results."""
    print(message, file=sys.stderr, flush=True)


class ServicesMissing(RuntimeError):
    """Report that PostgreSQL or Redis does not answer, so no cluster can start."""


def check_services() -> None:
    """Make sure the machine's PostgreSQL and Redis answer; raise ServicesMissing."""
    if shutil.which("psql") is None:
        raise ServicesMissing("psql is not installed (the harness runs SQL with it)")
    probe = subprocess.run(
        ["psql", POSTGRES_URL, "-X", "-tAc", "select 1"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if probe.returncode != 0:
        raise ServicesMissing(
            f"PostgreSQL at {POSTGRES_URL} does not answer: {probe.stderr.strip()}"
        )
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServicesMissing(f"Redis at {REDIS_URL} does not answer: {exc}") from exc
    finally:
        client.close()


def _stop_on_signal(signum: int, _: FrameType | None) -> None:
    """Raise where the bench is, so that its cluster and temp dir are removed."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Turn SIGINT and SIGTERM into exceptions (asyncio.run only cancels its task)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop_on_signal)


@contextlib.contextmanager
def running_cluster(
    prefix: str, size: int, env: dict[str, str], keep: bool = False
) -> Iterator[Cluster]:
    """Start a cluster of `size` nodes in a temp dir; close it and remove the dir.

    With `keep` the temp dir (the nodes' logs) stays and its path is printed; the
    database and the Redis keys are removed in any case.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    cluster: Cluster | None = None
    try:
        cluster = Cluster(root, size, env=env)
        note(
            f"cluster: {size} nodes, database {cluster.database}, prefix "
            f"{cluster.prefix}"
        )
        cluster.start()
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
        if keep:
            note(f"node logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


async def connect(cluster: Cluster) -> asyncpg.Connection:
    """Open an asyncpg connection to the cluster's store, for reads of the bench."""
    return await asyncpg.connect(cluster.database_url)


async def active_runs(conn: asyncpg.Connection) -> int:
    """Count the runs that may still execute (waiting, queued, running)."""
    count = await conn.fetchval(
        "SELECT count(*) FROM runs WHERE state = ANY($1::text[])",
        list(ACTIVE_RUN_STATES),
    )
    return int(count)


async def wait_until_settled(
    conn: asyncpg.Connection, at_least: int, timeout_s: float, poll_s: float = 0.1
) -> float:
    """Wait until `at_least` runs exist and none is active; return the seconds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        total = int(await conn.fetchval("SELECT count(*) FROM runs"))
        if total >= at_least and await active_runs(conn) == 0:
            return loop.time() - started
        if loop.time() - started > timeout_s:
            raise RuntimeError(
                f"runs had not settled after {timeout_s:.0f}s: {total} runs, "
                f"{await active_runs(conn)} active (want at least {at_least}, none "
                "active)"
            )
        await asyncio.sleep(poll_s)


# Figures


def percentile(values: Sequence[float], percent: float) -> float:
    """Return the nearest-rank percentile of `values` (NaN when there are none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(percent / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class Figure:
    """One row of a bench's table: a value, what it stands beside, a verdict."""

    name: str
    value: float
    unit: str
    beside: str = "-"  # the floor or baseline of the same run, as text
    target: str = "-"
    passed: bool | None = None  # None: shown for information

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "info"
        return "PASS" if self.passed else "FAIL"


def number(value: float) -> str:
    """Format a figure: thousands separators from 100 on, three digits below."""
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if value == int(value):
        return f"{int(value)}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def print_table(figures: Sequence[Figure]) -> None:
    """Print the figures as an aligned table on stdout."""
    header = ("figure", "value", "beside (same run)", "target", "verdict")
    rows = [header] + [
        (f.name, f"{number(f.value)} {f.unit}".strip(), f.beside, f.target, f.verdict)
        for f in figures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


def verdict_line(bench: str, figures: Sequence[Figure]) -> tuple[str, int]:
    """Return the one-line verdict and the exit code (1 when a target is missed)."""
    judged = [f for f in figures if f.passed is not None]
    failed = [f.name for f in judged if not f.passed]
    if failed:
        return (
            f"{bench}: FAIL, {len(failed)} of {len(judged)} targets missed: "
            + "; ".join(failed),
            1,
        )
    return f"{bench}: PASS, all {len(judged)} targets met", 0
