"""Export socmeth's Prometheus metrics, one registry per node.

Counters and histograms are updated where things happen (a run ends, an attempt ends,
an attempt starts); gauges that describe stored state are refreshed from the store and
the queue when `/metrics` is scraped, so they are right after a restart too.
"""

from __future__ import annotations

import contextlib

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from socmeth.models import FINAL_RUN_STATES
from socmeth.store.base import Store

# The `_created` series double every metric's lines and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600)
_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


class Metrics:
    """Hold the node's metrics and render them in the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs_ended = Counter(
            "socmeth_runs",
            "Runs that reached a final state, by job and state.",
            ["job", "state"],
            registry=self.registry,
        )
        self.attempt_duration = Histogram(
            "socmeth_attempt_duration_seconds",
            "Time from an attempt's start to its end, by job type and attempt state.",
            ["type", "state"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.schedule_lateness = Histogram(
            "socmeth_schedule_lateness_seconds",
            "Start of a scheduled run's first attempt minus its scheduled instant.",
            buckets=_LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.queue_size = Gauge(
            "socmeth_queue_size",
            "Attempts waiting in the queue for a worker.",
            registry=self.registry,
        )
        self.running_attempts = Gauge(
            "socmeth_running_attempts",
            "Attempts running in the whole cluster.",
            registry=self.registry,
        )
        self.jobs = Gauge(
            "socmeth_jobs",
            "Stored jobs, by state (enabled or paused).",
            ["state"],
            registry=self.registry,
        )

    def forget_job(self, name: str) -> None:
        """Drop the series of a deleted job, so they do not linger forever."""
        for state in FINAL_RUN_STATES:
            with contextlib.suppress(KeyError):
                self.runs_ended.remove(name, state.value)

    async def refresh(self, store: Store) -> None:
        """Read the gauges that describe stored state.

        The queue size is the store's count of queued attempts: the queue itself may
        hold fewer (a worker keeps the messages it could not claim yet at capacity)
        or more (duplicates after a re-publish), and the store is the truth.
        """
        counts = await store.count_jobs()
        self.jobs.labels(state="enabled").set(counts.enabled)
        self.jobs.labels(state="paused").set(counts.paused)
        self.running_attempts.set(await store.running_count())
        self.queue_size.set(await store.queued_count())

    def render(self) -> bytes:
        """Return every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry)
