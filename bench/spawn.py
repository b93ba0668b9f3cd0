"""Measure ways of running many short commands, to choose how the executor spawns.

Runs COUNT `/bin/sh -c true` with each approach and prints one table row per approach:

    a  subprocess.run, one after another (the machine's baseline)
    b  subprocess.run over a pool of N threads
    c  asyncio.create_subprocess_exec, N at a time
    d  CommandExecutor, N attempts at a time (spawn pool of its default size)
    e  CommandExecutor, all COUNT at once, for several spawn pool sizes

Each row also gives its time as a multiple of row a; the acceptance test allows the
executor 2x. Usage: python bench/spawn.py [--count 1000] [--concurrency 10 50]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from socmeth.executors import CommandExecutor, ExecutionContext, OutputTail
from socmeth.executors.command import DEFAULT_SPAWN_THREADS
from socmeth.models import AttemptState, Job, JobDefinition, JobType, Trigger

ARGV = ["/bin/sh", "-c", "true"]


def run_one() -> None:
    subprocess.run(ARGV, stdin=subprocess.DEVNULL, capture_output=True, check=True)


def sequential(count: int) -> None:
    for _ in range(count):
        run_one()


def thread_pool(count: int, threads: int) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(run_one) for _ in range(count)]:
            future.result()


async def bounded(count: int, limit: int, one: Callable[[], Awaitable[None]]) -> float:
    """Run `one` COUNT times with at most `limit` in flight; return the worst loop lag.

    The lag is how late a 1 ms sleep on the same loop woke up: how long the loop was
    unable to serve anything else (an API request, a heartbeat) while spawning.
    """
    gate = asyncio.Semaphore(limit)

    async def gated() -> None:
        async with gate:
            await one()

    ticker = asyncio.ensure_future(_worst_lag())
    try:
        await asyncio.gather(*(gated() for _ in range(count)))
    finally:
        ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)
    return LAG.pop()


LAG: list[float] = []


async def _worst_lag() -> None:
    worst = 0.0
    try:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)
    finally:
        LAG.append(worst)


async def asyncio_subprocess(count: int, limit: int) -> float:
    async def one() -> None:
        process = await asyncio.create_subprocess_exec(
            *ARGV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        await process.communicate()
        assert process.returncode == 0

    return await bounded(count, limit, one)


async def executor(count: int, limit: int, spawn_threads: int) -> float:
    command = CommandExecutor(store_id="bench", spawn_threads=spawn_threads)
    ctx = _context()

    async def one() -> None:
        result = await command.execute(ctx, OutputTail(), asyncio.Event())
        assert result.state is AttemptState.SUCCEEDED, result

    try:
        return await bounded(count, limit, one)
    finally:
        command.close()


def _context() -> ExecutionContext:
    now = datetime.now(UTC)
    definition = JobDefinition(name="bench", type=JobType.COMMAND, command="true")
    return ExecutionContext(
        job=Job(1, definition, now, now, None),
        run_id=1,
        attempt=1,
        trigger=Trigger.SCHEDULE,
        scheduled_at=now,
        previous_state=None,
        previous_run_id=None,
        timeout=timedelta(seconds=60),
    )


Row = tuple[str, int, float, float | None]


def timed(label: str, in_flight: int, action: Callable[[], float | None]) -> Row:
    """Run `action` once; return its row: label, in flight, seconds, worst loop lag."""
    started = time.perf_counter()
    lag = action()
    return label, in_flight, time.perf_counter() - started, lag


def print_table(count: int, rows: list[Row]) -> None:
    baseline = rows[0][2]
    print(f"{count} x /bin/sh -c true")
    print(
        f"{'approach':<40} {'in flight':>9} {'total s':>8} {'ms each':>8} "
        f"{'vs a':>6} {'loop lag ms':>11}"
    )
    for label, in_flight, elapsed, lag in rows:
        per = elapsed / count * 1000
        ratio = elapsed / baseline
        shown_lag = "-" if lag is None else f"{lag * 1000:.1f}"
        print(
            f"{label:<40} {in_flight:>9} {elapsed:>8.3f} {per:>8.3f} "
            f"{ratio:>5.2f}x {shown_lag:>11}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument(
        "--spawn-threads", type=int, nargs="+", default=[1, 2, 4, 8, 16]
    )
    args = parser.parse_args()
    count: int = args.count

    rows = [timed("a subprocess.run, sequential", 1, lambda: sequential(count))]
    for n in args.concurrency:
        rows.append(
            timed("b subprocess.run, thread pool", n, lambda n=n: thread_pool(count, n))
        )
    for n in args.concurrency:
        job = asyncio_subprocess(count, n)
        rows.append(
            timed("c asyncio.create_subprocess_exec", n, lambda j=job: asyncio.run(j))
        )
    for n in args.concurrency:
        job = executor(count, n, DEFAULT_SPAWN_THREADS)
        label = f"d CommandExecutor, {DEFAULT_SPAWN_THREADS} spawn threads"
        rows.append(timed(label, n, lambda j=job: asyncio.run(j)))
    for threads in args.spawn_threads:
        job = executor(count, count, threads)
        label = f"e CommandExecutor, {threads} spawn threads"
        rows.append(timed(label, count, lambda j=job: asyncio.run(j)))
    print_table(count, rows)


if __name__ == "__main__":
    main()
