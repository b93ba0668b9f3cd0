"""Offer the `socmeth` command line: serve, migrate, users.

Usage errors print one line and exit 2; failures print their cause without a
traceback unless `-v` is given.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from socmeth import __version__
from socmeth.auth.models import Principal, PrincipalKind, Role, User
from socmeth.config import Config, load_config
from socmeth.errors import SocmethError
from socmeth.logs import configure_logging

if TYPE_CHECKING:
    from socmeth.store.sql import SqlStore

EXIT_USAGE = 2
T = TypeVar("T")


def _config_options(command: Any) -> Any:
    command = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Directory for the SQLite store (default ./socmeth-data).",
    )(command)
    command = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="YAML config file (see docs/configuration.md).",
    )(command)
    return command


def _load(config_path: Path | None, overrides: dict[str, Any]) -> Config:
    if config_path is None and Path("config.yaml").is_file():
        config_path = Path("config.yaml")
    return load_config(config_path, overrides=overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="socmeth")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of failures.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """socmeth: a distributed cron scheduler with a web UI.

    Run `socmeth serve` to start a server in embedded mode (SQLite, one node) on
    port 8080. Settings come from flags, then SOCMETH_* environment variables, then
    config.yaml, then defaults.
    """
    ctx.obj = {"verbose": verbose}


@cli.command()
@_config_options
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default 8080).")
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--node-id", help="Name of this node (default: the host name).")
@click.option("--peers", help="The other nodes expected, host:port,... (cluster mode).")
def serve(
    config_path: Path | None,
    data_dir: Path | None,
    port: int | None,
    host: str | None,
    node_id: str | None,
    peers: str | None,
) -> None:
    """Run the scheduler, the workers and the API until SIGTERM or SIGINT."""
    from socmeth.server import serve as run_server

    config = _load(
        config_path,
        {
            "server.port": port,
            "server.host": host,
            "server.data_dir": data_dir,
            "cluster.node_id": node_id,
            "cluster.peers": peers,
        },
    )
    configure_logging(config.logging.level, config.logging.format)
    run_server(config)


@cli.command()
@_config_options
def migrate(config_path: Path | None, data_dir: Path | None) -> None:
    """Apply the store's schema migrations and exit."""
    from socmeth.store.migrate import migrate as run_migrations

    config = _load(config_path, {"server.data_dir": data_dir})
    config.server.data_dir.mkdir(parents=True, exist_ok=True)
    run_migrations(config.database_url)
    click.echo(f"store at {config.database_url} is up to date")


@cli.group()
def users() -> None:
    """Add, list, change and remove the users who log in when auth.enabled is true.

    Passwords are read from standard input (--password-stdin), never from the
    command line, where other users of the machine could see them.
    """


_ROLE = click.option(
    "--role",
    type=click.Choice([role.value for role in Role]),
    required=True,
    help="admin (everything), operator (read, run, cancel, pause), viewer (read).",
)
_PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input: one line, its newline dropped.",
)


@users.command("add")
@_config_options
@click.argument("name")
@_ROLE
@_PASSWORD_STDIN
def users_add(
    config_path: Path | None,
    data_dir: Path | None,
    name: str,
    role: str,
    password_stdin: bool,
) -> None:
    """Add user NAME with a role and a password (at least 12 characters)."""
    from socmeth.auth.names import check_name
    from socmeth.auth.passwords import Passwords, check_password
    from socmeth.auth.users import add_user

    config = _load(config_path, {"server.data_dir": data_dir})
    check_name(name)
    password = check_password(_read_password(password_stdin))
    user = _with_store(
        config,
        lambda store: add_user(
            store, Passwords(), name, Role(role), password, _actor(), _now()
        ),
    )
    click.echo(f"added user {user.name} with role {user.role}")


@users.command("list")
@_config_options
def users_list(config_path: Path | None, data_dir: Path | None) -> None:
    """List the users: name, role and when each was added."""
    config = _load(config_path, {"server.data_dir": data_dir})
    found = _with_store(config, lambda store: store.list_users())
    if not found:
        click.echo(
            "no users yet; add one with: socmeth users add NAME --role admin "
            "--password-stdin"
        )
        return
    for line in _user_table(found):
        click.echo(line)


@users.command("remove")
@_config_options
@click.argument("name")
def users_remove(config_path: Path | None, data_dir: Path | None, name: str) -> None:
    """Remove user NAME; the last admin cannot be removed."""
    from socmeth.auth.users import remove_user

    config = _load(config_path, {"server.data_dir": data_dir})
    _with_store(config, lambda store: remove_user(store, name, _actor(), _now()))
    click.echo(f"removed user {name}")


@users.command("passwd")
@_config_options
@click.argument("name")
@_PASSWORD_STDIN
def users_passwd(
    config_path: Path | None, data_dir: Path | None, name: str, password_stdin: bool
) -> None:
    """Set the password of user NAME; its sessions must log in again."""
    from socmeth.auth.passwords import Passwords, check_password
    from socmeth.auth.users import change_password

    config = _load(config_path, {"server.data_dir": data_dir})
    password = check_password(_read_password(password_stdin))
    _with_store(
        config,
        lambda store: change_password(
            store, Passwords(), name, password, _actor(), _now()
        ),
    )
    click.echo(f"changed the password of {name}")


def _read_password(from_stdin: bool) -> str:
    """Return the password on standard input; prompt for it on a terminal."""
    from socmeth.auth.passwords import MAX_PASSWORD_LENGTH

    if not from_stdin:
        raise click.UsageError(
            "give --password-stdin and the password on standard input, e.g. "
            "printf '%s\\n' \"$PASSWORD\" | socmeth users ... --password-stdin; a "
            "password is never taken as an argument"
        )
    if sys.stdin.isatty():
        prompted: str = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True
        )
        return prompted
    # Two characters past the longest password leave room for a CRLF; any more
    # and the length check refuses it.
    text = sys.stdin.read(MAX_PASSWORD_LENGTH + 3)
    password = text.removesuffix("\n").removesuffix("\r")
    if "\n" in password:
        raise click.UsageError(
            "standard input holds more than one line: give the password alone, on "
            "one line"
        )
    return password


def _with_store(config: Config, work: Callable[[SqlStore], Awaitable[T]]) -> T:
    """Open the store (migrating it first, as `migrate` does), do `work`, close."""
    from socmeth.store.sql import open_store

    async def run() -> T:
        config.server.data_dir.mkdir(parents=True, exist_ok=True)
        store = await open_store(config.database_url)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _actor() -> Principal:
    """Name who runs the command line for the audit records: `cli:<os user>`."""
    try:
        who = getpass.getuser()
    except (OSError, KeyError):
        who = f"uid {os.getuid()}"
    return Principal(PrincipalKind.COMMAND_LINE, who, Role.ADMIN)


def _now() -> datetime:
    from socmeth.clock import SystemClock

    return SystemClock().now()


def _user_table(found: list[User]) -> list[str]:
    rows = [("NAME", "ROLE", "CREATED")] + [
        (user.name, user.role.value, user.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"))
        for user in found
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    return [
        f"{name:<{widths[0]}}  {role:<{widths[1]}}  {created}"
        for name, role, created in rows
    ]


def main(argv: list[str] | None = None) -> None:
    """Run the command line and turn errors into messages and exit codes."""
    verbose = "-v" in (argv or sys.argv[1:]) or "--verbose" in (argv or sys.argv[1:])
    try:
        code = cli.main(args=argv, prog_name="socmeth", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message())  # `socmeth` alone: the help, not an error
        sys.exit(0)
    except click.UsageError as exc:
        hint = exc.ctx.command_path if exc.ctx else "socmeth"
        click.echo(f"socmeth: {exc.format_message()} (see '{hint} --help')", err=True)
        sys.exit(EXIT_USAGE)
    except click.Abort:
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signals
        sys.exit(130)
    except SocmethError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(f"socmeth: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
