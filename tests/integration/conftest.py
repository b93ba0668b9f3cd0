"""Give integration tests a migrated, empty store of every backend.

A backend is one entry of BACKENDS: a context manager that yields the URL of an
empty database of its kind and removes it afterwards. The contract suite runs once
per entry: SQLite, and PostgreSQL at SOCMETH_TEST_POSTGRES_URL (by default the
machine's, postgresql://postgres@127.0.0.1/postgres), where the user may create
databases; each test gets a database of its own and drops it. A PostgreSQL that does
not answer skips its tests with the reason, or fails them under
SOCMETH_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from socmeth.store.sql import SqlStore, async_url, open_store
from tests.conftest import missing_service

POSTGRES_URL = os.environ.get(
    "SOCMETH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/postgres"
)


@contextlib.asynccontextmanager
async def _sqlite_url(tmp_path: Path) -> AsyncIterator[str]:
    # A subfolder that does not exist yet: opening the store must create it.
    yield f"sqlite:///{tmp_path / 'data' / 'socmeth.db'}"


@contextlib.asynccontextmanager
async def _postgresql_url(_: Path) -> AsyncIterator[str]:
    name = f"socmeth_test_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(async_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        try:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except (OSError, DBAPIError) as exc:
            missing_service(
                f"PostgreSQL at {_shown(POSTGRES_URL)} does not answer: {exc}"
            )
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(False)
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


BACKENDS: dict[str, Callable[[Path], contextlib.AbstractAsyncContextManager[str]]] = {
    "sqlite": _sqlite_url,
    "postgresql": _postgresql_url,
}


@pytest.fixture(params=sorted(BACKENDS))
async def store_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """Yield the URL of an empty database, not yet migrated."""
    async with BACKENDS[request.param](tmp_path) as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    """Yield a migrated store; fail the test if it leaked a connection."""
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        checked_out = opened.engine.pool.checkedout()  # type: ignore[attr-defined]
        await opened.close()
    assert checked_out == 0, f"{checked_out} connections were never given back"
