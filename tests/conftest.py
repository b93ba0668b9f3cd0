"""Share what every test tier needs: the rule for tests that need local services."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

POSTGRES_HOST = os.environ.get("SOCMETH_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_USER = os.environ.get("SOCMETH_TEST_POSTGRES_USER", "postgres")


def services_required() -> bool:
    """Tell whether a missing service must fail the test (CI) instead of skipping."""
    return os.environ.get("SOCMETH_REQUIRE_SERVICES") == "1"


def missing_service(reason: str) -> None:
    """Fail in CI, skip elsewhere, naming what is missing."""
    if services_required():
        pytest.fail(f"{reason} (SOCMETH_REQUIRE_SERVICES=1, so this fails)")
    pytest.skip(f"{reason}; set SOCMETH_REQUIRE_SERVICES=1 to make this an error")


def require_postgres() -> None:
    """Make sure the local PostgreSQL and its client tools answer."""
    if shutil.which("psql") is None or shutil.which("pg_dump") is None:
        missing_service("the PostgreSQL client tools (psql, pg_dump) are not installed")
    probe = subprocess.run(
        ["psql", "-h", POSTGRES_HOST, "-U", POSTGRES_USER, "-tAc", "select 1"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if probe.returncode != 0:
        missing_service(
            f"PostgreSQL at {POSTGRES_HOST} does not answer: {probe.stderr.strip()}"
        )
