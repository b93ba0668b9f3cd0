"""Serve one node over HTTP with uvicorn, starting and stopping it with the app.

The node starts and stops inside the ASGI lifespan, so that uvicorn's handling of
SIGTERM and SIGINT (stop accepting, finish requests) is followed by the node's own
graceful stop (no new attempts, a grace period for running ones) before the process
exits.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI

from socmeth.api.app import create_app
from socmeth.config import Config
from socmeth.errors import ConfigError
from socmeth.node import Node

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def bind_host(config: Config) -> str:
    """Choose the address to listen on: loopback unless told, and warn when exposed."""
    host = config.server.host or LOOPBACK
    if not config.auth.enabled and not _is_loopback(host):
        log.warning(
            "AUTH IS DISABLED and socmeth listens on %s: anyone who can reach this "
            "port can run any command on this machine. Enable auth or bind to "
            "127.0.0.1.",
            host,
            extra={"event": "server.unprotected"},
        )
    return host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_unavailable(config: Config) -> None:
    """Stop at start on settings whose feature has not landed, naming the issue."""
    if config.auth.enabled:
        raise ConfigError(
            "auth.enabled",
            "authentication is not available yet (issue 6); set auth.enabled: false "
            "and keep the server on a trusted network",
        )
    if config.redis.url:
        raise ConfigError(
            "redis.url",
            "cluster mode with Redis is not available yet (issue 4); unset REDIS_URL "
            "to run in embedded mode",
        )
    if config.database.url and not config.database.url.startswith("sqlite:"):
        raise ConfigError(
            "database.url",
            "PostgreSQL is not available yet (issue 4); unset POSTGRES_URL to keep "
            "state in SQLite in the data dir",
        )


def build_app(node: Node) -> FastAPI:
    """Create the API app whose lifespan starts and stops `node`."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    return create_app(node, lifespan=lifespan)


def _already_stopped(signum: int, frame: FrameType | None) -> None:
    """Ignore the signal uvicorn raises again once it has shut down."""


def serve(config: Config) -> None:
    """Run the server until SIGTERM or SIGINT."""
    refuse_unavailable(config)
    config.server.data_dir.mkdir(parents=True, exist_ok=True)
    host = bind_host(config)
    node = Node(config)
    app = build_app(node)
    log.info(
        "serving on http://%s:%s with state in %s",
        host,
        config.server.port,
        config.database_url,
        extra={"event": "server.listening"},
    )
    # uvicorn stops on SIGTERM/SIGINT, restores the handlers it found, and raises the
    # signal again. Handlers that do nothing make that re-raise a no-op, so a graceful
    # stop (the node has stopped in the lifespan by then) exits with status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _already_stopped)
    uvicorn.run(
        app,
        host=host,
        port=config.server.port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
