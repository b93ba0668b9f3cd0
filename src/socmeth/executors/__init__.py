"""Run attempts, one executor per job type, behind the `Executor` interface.

A node builds one `Executors` at start, around the node's shared httpx client, and asks
it for the executor of each attempt's job type.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from socmeth.clock import Clock
from socmeth.executors.base import ExecutionContext, ExecutionResult, Executor
from socmeth.executors.command import DEFAULT_SPAWN_THREADS, CommandExecutor
from socmeth.executors.http import HttpExecutor
from socmeth.executors.output import DEFAULT_OUTPUT_CAP, OutputTail
from socmeth.executors.webhook import WebhookExecutor
from socmeth.models import JobType

__all__ = [
    "DEFAULT_OUTPUT_CAP",
    "CommandExecutor",
    "ExecutionContext",
    "ExecutionResult",
    "Executor",
    "Executors",
    "HttpExecutor",
    "OutputTail",
    "WebhookExecutor",
]


class Executors:
    """Hold the executor of every job type for one node.

    `http_client` is shared by http and webhook jobs and stays the caller's to close.
    `clock` stamps webhook payloads. `store_id`, `spawn_threads` and `environ` go to
    the `CommandExecutor`.
    """

    def __init__(
        self,
        http_client: httpx.AsyncClient,
        clock: Clock,
        *,
        store_id: str,
        spawn_threads: int = DEFAULT_SPAWN_THREADS,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._command = CommandExecutor(
            store_id=store_id, spawn_threads=spawn_threads, environ=environ
        )
        self._by_type: dict[JobType, Executor] = {
            JobType.COMMAND: self._command,
            JobType.HTTP: HttpExecutor(http_client),
            JobType.WEBHOOK: WebhookExecutor(http_client, clock),
        }

    @property
    def store_id(self) -> str:
        """Return the store id commands carry in their environment."""
        return self._command.store_id

    def for_type(self, job_type: JobType) -> Executor:
        """Return the executor that runs jobs of `job_type`."""
        return self._by_type[job_type]

    def close(self) -> None:
        """Release the spawn threads; call it after the last attempt has ended."""
        self._command.close()
