"""Run throwaway Redis and PostgreSQL servers of a test's own, to stop and start.

Tests that take a service down must never touch the machine's shared ones
(127.0.0.1:5432 and 127.0.0.1:6379): each server here listens on a free loopback
port, keeps its files in a scratch folder, and is stopped and removed by `close()`
whatever state it is in.

- `ThrowawayRedis` keeps nothing across a restart unless told to (no RDB snapshot, no
  append-only file): stopped and started again, it comes back empty, without the
  stream and its consumer group.
- `ThrowawayPostgres` is a fresh cluster made by `initdb` with trust authentication.
  `initdb` and the server refuse to run as root, so as root they run as the
  `postgres` user (`runuser`), in a folder that user owns.

A missing binary fails the test under SOCMETH_REQUIRE_SERVICES=1 and skips it
elsewhere (`tests.conftest.missing_service`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import missing_service
from tests.e2e.conftest import free_port

START_TIMEOUT_S = 30.0
POSTGRES_USER = "postgres"


def redis_server_binary() -> str:
    """Return the path of redis-server, or fail/skip the test when it is missing."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if found is None:
        missing_service("redis-server is not installed")
    assert found is not None
    return found


def postgres_bin_dir() -> Path:
    """Return the folder of initdb and pg_ctl, or fail/skip the test without them."""
    candidates = [
        Path(p).parent for p in (shutil.which("initdb"), shutil.which("pg_ctl")) if p
    ]
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: _version_key(p.parent.name),
        reverse=True,
    )
    for folder in candidates:
        real = folder.resolve()
        if (real / "initdb").is_file() and (real / "pg_ctl").is_file():
            return real
    missing_service("the PostgreSQL server tools (initdb, pg_ctl) are not installed")
    raise AssertionError("unreachable")


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


class ThrowawayRedis:
    """One redis-server on a free loopback port, started and stopped at will."""

    def __init__(self, root: Path, *, persistent: bool = False) -> None:
        self.binary = redis_server_binary()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "redis.log"
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        assert not self.running, f"redis-server on port {self.port} already runs"
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.log_path),
            *persistence,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_until_answering()

    def _wait_until_answering(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if not self.running:
                    raise AssertionError(
                        f"redis-server on port {self.port} exited at start:\n"
                        f"{_tail(self.log_path)}"
                    )
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        raise AssertionError(f"redis-server on port {self.port} never answered")

    def stop(self) -> None:
        """Stop the server (SIGTERM) and wait for it; nothing to do if it is down."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stream_length(self, key: str) -> int:
        """Return XLEN of a stream (0 when it does not exist)."""
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=2)
        try:
            return int(client.xlen(key))
        finally:
            client.close()

    def close(self) -> None:
        self.stop()


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own, made by initdb, on a free loopback port."""

    def __init__(self) -> None:
        bin_dir = postgres_bin_dir()
        self.initdb = str(bin_dir / "initdb")
        self.pg_ctl = str(bin_dir / "pg_ctl")
        self.port = free_port()
        self.url = f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/postgres"
        self._as_user: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            # initdb and postgres refuse root; run them as the postgres user.
            try:
                owner = pwd.getpwnam(POSTGRES_USER)
            except KeyError:
                missing_service(
                    "initdb refuses to run as root and there is no "
                    f"{POSTGRES_USER!r} user to run it as"
                )
            runuser = shutil.which("runuser")
            if runuser is None:
                missing_service("runuser is missing: cannot run initdb as postgres")
            self._as_user = [str(runuser), "-u", POSTGRES_USER, "--"]
        # Under /tmp, not the test's tmp_path: pytest makes that readable by root
        # only, and the server's user must reach its folder.
        self.dir = Path(tempfile.mkdtemp(prefix="socmeth-pg-"))
        if owner is not None:
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self._initialised = False

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self._as_user, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{' '.join(args[:2])} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n{_tail(self.log_path)}"
            )

    def start(self) -> None:
        """Create the cluster on first use, start the server and wait for it."""
        if not self._initialised:
            self._run(
                self.initdb,
                "-D",
                str(self.data),
                "-U",
                POSTGRES_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            self._initialised = True
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            str(int(START_TIMEOUT_S)),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` ends every session, as a restart by an operator."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        if not self._initialised:
            return False
        done = subprocess.run(
            [*self._as_user, self.pg_ctl, "-D", str(self.data), "status"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode == 0

    def log(self) -> str:
        return _tail(self.log_path, 200)

    def close(self) -> None:
        """Stop the server if it runs (immediately) and remove its files."""
        try:
            if self.running:
                self.stop("immediate")
        finally:
            _kill_leftover_postmaster(self.data)
            shutil.rmtree(self.dir, ignore_errors=True)


def _kill_leftover_postmaster(data: Path) -> None:
    """Kill a postmaster pg_ctl could not stop, named by its pid file."""
    pid_file = data / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
