"""Bring a store's schema to the latest migration, with Alembic driven from code.

The migration scripts ship inside the package (`migrations/`), so no alembic.ini is
needed: `migrate(url)` points Alembic at them and at the store URL.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError

from socmeth.errors import ConfigError, StoreError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Key of Config.attributes that carries the store URL to migrations/env.py.
URL_ATTRIBUTE = "socmeth_url"


def alembic_config(url: str) -> Config:
    """Return an Alembic config for the store at `url` and the packaged scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not as sqlalchemy.url: the config file syntax would
    # read a percent sign in a password as interpolation.
    config.attributes[URL_ATTRIBUTE] = url
    return config


def head_revision() -> str:
    """Return the revision of the newest migration script."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the package ships at least one migration"
    return head


def migrate(url: str) -> None:
    """Apply every pending migration to the store at `url`; safe to run again.

    Creates the parent directory of a SQLite file. Raises StoreError when the
    database fails. Synchronous, and blocks an event loop running in the calling
    thread: `open_store` calls it from a thread.
    """
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)

    try:
        command.upgrade(alembic_config(url), "head")
    except DBAPIError as exc:
        cause = exc.orig if exc.orig is not None else exc
        raise StoreError(
            f"migrating the store failed: {type(cause).__name__}: {cause}"
        ) from exc
    except OSError as exc:
        raise StoreError(f"migrating the store failed: {exc}") from exc
    logger.info(
        "store schema is at revision %s",
        head_revision(),
        extra={"event": "store.migrated"},
    )


def shown_url(url: str) -> str:
    """Return a store URL fit for logs and messages: its password masked."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str) -> Path | None:
    """Return the database file a SQLite URL names, None for other databases.

    Refuses in-memory SQLite: each pooled connection would open its own empty
    database, so writes would vanish between calls.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None

    database = parsed.database or ""
    if database in ("", ":memory:") or "memory" in str(parsed.query.get("mode", "")):
        raise ConfigError(
            "database.url",
            f"{url!r} is an in-memory SQLite database, which socmeth cannot share "
            "between connections: give a file, e.g. sqlite:////var/lib/socmeth/db",
        )
    if database.startswith("file:"):
        return None  # an SQLite URI: the driver resolves it
    return Path(database).expanduser()
