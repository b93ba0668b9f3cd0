"""Offer the `socmeth` command line: serve, migrate.

Usage errors print one line and exit 2; failures print their cause without a
traceback unless `-v` is given.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import click

from socmeth import __version__
from socmeth.config import Config, load_config
from socmeth.errors import SocmethError
from socmeth.logs import configure_logging

EXIT_USAGE = 2


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
