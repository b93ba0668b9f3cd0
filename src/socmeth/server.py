"""Serve one node over HTTP: claim the store, bind the port, start the node, serve.

The order makes a failed start harmless and explain itself in one line: the SQLite
store is locked first (a second server on the same data dir is refused before it
can touch the first one's runs), the port is bound next (a taken port is refused
before the node settles anything), and only then does the node start. uvicorn then
serves until SIGTERM or SIGINT; the node stops after it, gracefully (no new attempts,
a grace period for running ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

import uvicorn

from socmeth.api.app import create_app
from socmeth.auth.secret import jwt_secret
from socmeth.config import Config
from socmeth.errors import ConfigError
from socmeth.node import Node
from socmeth.store.migrate import shown_url, sqlite_file

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def bind_host(config: Config) -> str:
    """Choose the address to listen on: loopback unless told otherwise."""
    return config.server.host or LOOPBACK


def warn_if_exposed(config: Config, host: str) -> None:
    """Warn loudly when the API, which runs any command, is open beyond loopback."""
    if config.auth.enabled or _is_loopback(host):
        return
    log.warning(
        "AUTH IS DISABLED and socmeth listens on %s: anyone who can reach this port "
        "can run any command on this machine. Set auth.enabled: true (and add users "
        "with socmeth users add), or bind to 127.0.0.1.",
        host,
        extra={"event": "server.unprotected"},
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_unavailable(config: Config) -> None:
    """Stop at start on settings that cannot work together, or have not landed."""
    if config.auth.enabled:
        # A cluster without a shared signing secret stops here, naming the key.
        jwt_secret(config)
    if config.clustered and not config.redis.url:
        raise ConfigError(
            "redis.url",
            "cluster mode keeps state in PostgreSQL and needs Redis for the queue the "
            "nodes share; set redis.url (or REDIS_URL), or unset database.url (or "
            "POSTGRES_URL) to serve one node on SQLite",
        )
    if config.clustered:
        return
    if config.redis.url:
        raise ConfigError(
            "redis.url",
            "a Redis queue is for cluster mode, whose state is in PostgreSQL; set "
            "database.url (or POSTGRES_URL), or unset redis.url to serve one node on "
            "SQLite",
        )
    if config.cluster.peers:
        raise ConfigError(
            "cluster.peers",
            "a SQLite store serves one node, so it has no peers; for several nodes "
            "set database.url (POSTGRES_URL) and redis.url (REDIS_URL) on each",
        )


@contextlib.contextmanager
def store_lock(config: Config) -> Iterator[None]:
    """Hold an exclusive lock beside the SQLite file while this server runs.

    SQLite has one node by definition (SPEC: SQLite with more than one node is
    refused), and a second server on the same file would settle the first one's
    running attempts as lost.
    """
    database = sqlite_file(config.database_url)
    if database is None:
        yield
        return
    lock_path = database.with_name(database.name + ".lock")
    handle = _open_lock(lock_path)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ConfigError(
                "server.data_dir",
                f"the store {database} is in use by socmeth serve (pid {holder}); "
                "one SQLite store serves one node: stop that server or choose "
                "another --data-dir",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def _open_lock(path: Path) -> IO[str]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a+")
    except OSError as exc:
        raise ConfigError(
            "server.data_dir",
            f"cannot use {path.parent} for the store: {exc.strerror}",
        ) from exc


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket now, so that a taken port fails the start early."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except socket.gaierror as exc:
        raise ConfigError(
            "server.host", f"{host!r} is not an address of this machine: {exc}"
        ) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc)
        key = "server.host" if exc.errno == errno.EADDRNOTAVAIL else "server.port"
        raise ConfigError(key, f"cannot listen on {host}:{port}: {reason}") from exc
    sock.set_inheritable(True)
    return sock


def with_auth_decided(config: Config, host: str) -> Config:
    """Settle `auth.enabled` left unset: on when the server listens beyond loopback,
    where anyone who reaches the port could otherwise run any command."""
    if config.auth.enabled is not None:
        return config
    auth = config.auth.model_copy(update={"enabled": not _is_loopback(host)})
    return config.model_copy(update={"auth": auth})


def serve(config: Config) -> None:
    """Run the server until SIGTERM or SIGINT."""
    host = bind_host(config)
    config = with_auth_decided(config, host)
    refuse_unavailable(config)
    with store_lock(config):
        sock = bind_socket(host, config.server.port)
        warn_if_exposed(config, host)
        with sock:
            asyncio.run(_serve(config, sock, host))


async def _serve(config: Config, sock: socket.socket, host: str) -> None:
    node = Node(config)
    try:
        await node.start()
    except BaseException:
        await node.stop()
        raise
    if config.auth.enabled and not await node.store.list_users():
        log.warning(
            "auth is on and no user exists, so nobody can log in: add one with "
            "`socmeth users add NAME --role admin --password-stdin`",
            extra={"event": "server.no_users"},
        )
    server = _Server(
        uvicorn.Config(
            create_app(node),
            log_config=None,
            lifespan="off",
            # X-Forwarded-For from loopback would let local callers pick the
            # address their failed logins count against.
            proxy_headers=False,
            timeout_graceful_shutdown=5,
        ),
        node,
    )
    # uvicorn stops on SIGTERM/SIGINT, restores the handlers it found and raises the
    # signal again once it has stopped. Handlers that do nothing make that re-raise
    # harmless, so the node below gets its graceful stop and the exit status is 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _already_stopping)
    log.info(
        "serving on http://%s:%s with state in %s",
        host,
        config.server.port,
        shown_url(config.database_url),
        extra={"event": "server.listening"},
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        await node.stop()


class _Server(uvicorn.Server):
    """Serve the API, and hand leadership over as soon as the stop is asked for.

    uvicorn finishes the requests in flight before it returns (up to 5 s), and the
    node stops after it; a leader meanwhile keeps its duties, so the lease would
    change hands only after the last request. Started at the signal, the hand-over
    runs beside that graceful end instead.
    """

    def __init__(self, config: uvicorn.Config, node: Node) -> None:
        super().__init__(config)
        self._node = node
        self._loop = asyncio.get_running_loop()
        self._handing_over: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        if self._handing_over is None:
            self._handing_over = self._loop.create_task(
                self._node.hand_over(), name="hand-over"
            )


def _already_stopping(signum: int, frame: FrameType | None) -> None:
    """Ignore the signal uvicorn raises again once it has shut down."""
