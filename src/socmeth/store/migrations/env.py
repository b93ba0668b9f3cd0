"""Run the store's migrations for Alembic.

Online, through the store's own async engine (so SQLite connections get the same
pragmas and BEGIN IMMEDIATE, and PostgreSQL needs no second driver); offline
(`sql=True`), as SQL text for a database administrator to apply.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from alembic import context
from sqlalchemy import Connection

from socmeth.store.migrate import URL_ATTRIBUTE
from socmeth.store.schema import metadata
from socmeth.store.sql import WRITE_OPTION, async_url, create_store_engine

# Every socmeth node takes this advisory lock before migrating, so nodes starting
# together on one PostgreSQL migrate one after another. The value is arbitrary:
# "socmeth" in ASCII.
PG_MIGRATION_LOCK = 0x736F636D657468


def _store_url() -> str:
    url = context.config.attributes.get(URL_ATTRIBUTE)
    url = url or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no store URL for the migrations: call socmeth.store.migrate.migrate(url)"
        )
    return str(url)


def _migrate_offline() -> None:
    context.configure(
        url=async_url(_store_url()),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _migrate_connection(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite runs DDL inside transactions too once SQLAlchemy emits BEGIN, so a
        # failed migration leaves no half-made schema behind.
        transactional_ddl=True,
        # SQLite alters tables by copying them; batch mode writes that for us.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(
                f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"
            )
        context.run_migrations()


async def _migrate_online() -> None:
    engine = create_store_engine(_store_url())
    try:
        async with engine.execution_options(**{WRITE_OPTION: True}).connect() as conn:
            await conn.run_sync(_migrate_connection)
    finally:
        await engine.dispose()


def _run_online() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_migrate_online())
        return
    # Called from a coroutine: the caller's loop cannot run another loop, so the
    # migration gets its own thread; the caller blocks, as with any sync call.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _migrate_online()).result()


if context.is_offline_mode():
    _migrate_offline()
else:
    _run_online()
