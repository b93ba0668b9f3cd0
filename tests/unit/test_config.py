"""Load configuration from defaults, file, environment and flags, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from socmeth.config import load_config
from socmeth.errors import ConfigError

README_CONFIG = """\
server:
  port: 8080

database:
  url: postgresql://localhost/socmeth

redis:
  url: redis://localhost:6379

scheduler:
  max_concurrent_jobs: 50
  job_timeout: 600

workers:
  count: 10

auth:
  enabled: true
  provider: "jwt-basic"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_serve_embedded_mode_on_8080() -> None:
    config = load_config(environ={})

    assert config.server.port == 8080
    assert config.database.url is None
    assert config.database_url.endswith("socmeth-data/socmeth.db")
    assert config.scheduler.max_job_timeout == 3600
    assert config.history.retention_days == 30
    assert config.workers.count == 10


def test_the_readme_config_file_is_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, README_CONFIG), environ={})

    assert config.database.url == "postgresql://localhost/socmeth"
    assert config.redis.url == "redis://localhost:6379"
    assert config.scheduler.max_concurrent_jobs == 50
    assert config.auth.enabled is True


def test_flags_beat_environment_which_beats_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 7000\nworkers:\n  count: 3\n")
    environ = {"SOCMETH_SERVER_PORT": "7100", "SOCMETH_WORKERS_COUNT": "4"}

    config = load_config(path, environ=environ, overrides={"server.port": 7200})

    assert config.server.port == 7200
    assert config.workers.count == 4


def test_container_variables_set_the_database_and_redis_urls() -> None:
    environ = {"POSTGRES_URL": "postgresql://db/x", "REDIS_URL": "redis://r:6379"}

    config = load_config(environ=environ)

    assert config.database.url == "postgresql://db/x"
    assert config.redis.url == "redis://r:6379"


def test_variables_socmeth_sets_for_jobs_are_not_config() -> None:
    environ = {"SOCMETH_JOB": "backup", "SOCMETH_RUN_ID": "7", "SOCMETH_ATTEMPT": "1"}

    assert load_config(environ=environ).workers.count == 10


@pytest.mark.parametrize(
    ("text", "environ", "named"),
    [
        ("server:\n  prot: 1\n", {}, "server.prot"),
        ("servr:\n  port: 1\n", {}, "servr"),
        ("workers:\n  count: many\n", {}, "workers.count"),
        ("server:\n  port: true\n", {}, "server.port"),
        ("scheduler:\n  timezone: Mars/Olympus\n", {}, "scheduler.timezone"),
        ("", {"SOCMETH_WORKERS_COUNT": "abc"}, "workers.count"),
        ("", {"SOCMETH_SCHEDULER_NOPE": "1"}, "SOCMETH_SCHEDULER_NOPE"),
        ("", {"SOCMETH_SCHEDULER_JOB_TIMEOUT": "7200"}, "scheduler"),
        ("", {"SOCMETH_DATABASE_URL": "mysql://x"}, "database.url"),
        ("- just\n- a list\n", {}, "config.yaml"),
        ("server: [\n", {}, "config.yaml"),
    ],
    ids=[
        "unknown-key",
        "unknown-section",
        "bad-value",
        "switch-for-a-number",
        "unknown-zone",
        "bad-env-value",
        "unknown-env-key",
        "default-timeout-over-cap",
        "unknown-database",
        "not-a-mapping",
        "not-yaml",
    ],
)
def test_a_bad_key_or_value_is_refused_naming_it(
    tmp_path: Path, text: str, environ: dict[str, str], named: str
) -> None:
    path = write(tmp_path, text) if text else None

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)

    assert named in str(caught.value)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})
