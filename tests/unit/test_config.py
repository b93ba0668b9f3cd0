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
        ("", {"REDIS_URL": "http://127.0.0.1:6379"}, "redis.url"),
        ("redis:\n  prefix: 'a b'\n", {}, "redis.prefix"),
        ("", {"SOCMETH_CLUSTER_PEERS": ",,"}, "cluster.peers"),
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
        "unknown-redis-scheme",
        "prefix-with-space",
        "peers-naming-none",
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


# Cluster


@pytest.mark.parametrize(
    "node_id",
    ["a", "node-1", "Node_2.eu-west", "9lives", "n" * 64],
    ids=["one-letter", "dash", "dot-and-underscore", "leading-digit", "64-chars"],
)
def test_a_plain_node_id_is_accepted(node_id: str) -> None:
    config = load_config(environ={}, overrides={"cluster.node_id": node_id})

    assert config.cluster.node_id == node_id


@pytest.mark.parametrize(
    "node_id",
    ["", "-a", ".a", "_a", "no spaces", "a/b", "a:1", "nœud", "n" * 65],
    ids=[
        "empty",
        "leading-dash",
        "leading-dot",
        "leading-underscore",
        "space",
        "slash",
        "colon",
        "not-ascii",
        "65-chars",
    ],
)
def test_a_node_id_that_is_not_plain_is_refused_naming_it(node_id: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, overrides={"cluster.node_id": node_id})

    assert caught.value.key == "cluster.node_id"
    assert repr(node_id) in str(caught.value)


def test_the_node_id_defaults_to_none_and_comes_from_the_environment() -> None:
    assert load_config(environ={}).cluster.node_id is None

    config = load_config(environ={"SOCMETH_CLUSTER_NODE_ID": "node-7"})

    assert config.cluster.node_id == "node-7"


def test_peers_from_the_environment_split_on_commas_dropping_blanks() -> None:
    environ = {"SOCMETH_CLUSTER_PEERS": " node2:8080, ,node3:9000,,[::1]:8080 , "}

    config = load_config(environ=environ)

    assert config.cluster.peers == ("node2:8080", "node3:9000", "[::1]:8080")


def test_peers_from_a_flag_beat_the_environment_and_split_alike() -> None:
    config = load_config(
        environ={"SOCMETH_CLUSTER_PEERS": "node2:8080"},
        overrides={"cluster.peers": "node4:8080,node5:8081"},
    )

    assert config.cluster.peers == ("node4:8080", "node5:8081")


def test_peers_may_be_a_list_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster:\n  peers: [node2:8080, node3:8080]\n")

    assert load_config(path, environ={}).cluster.peers == ("node2:8080", "node3:8080")


def test_empty_peers_are_none_but_commas_alone_are_refused() -> None:
    assert load_config(environ={"SOCMETH_CLUSTER_PEERS": ""}).cluster.peers == ()

    with pytest.raises(ConfigError, match="names no host:port"):
        load_config(environ={"SOCMETH_CLUSTER_PEERS": " , ,"})


@pytest.mark.parametrize(
    ("given", "bad"),
    [
        ("node2:8080,node3", "node3"),
        ("node2:", "node2:"),
        (":8080", ":8080"),
        ("node2:http", "node2:http"),
        ("node2:0", "node2:0"),
        ("node2:65536", "node2:65536"),
        ("node2:-1", "node2:-1"),
    ],
    ids=[
        "no-port",
        "empty-port",
        "no-host",
        "named-port",
        "port-zero",
        "port-too-high",
        "negative-port",
    ],
)
def test_a_peer_that_is_not_host_port_is_refused_naming_it(
    given: str, bad: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"SOCMETH_CLUSTER_PEERS": given})

    assert caught.value.key == "cluster.peers"
    assert f"{bad!r} is not host:port" in str(caught.value)


@pytest.mark.parametrize(
    "given",
    ["http://node2:8080", "node 2:8080", "node_2:8080", "-node2:8080", "::1:8080"],
    ids=["url", "space-in-host", "underscore", "leading-dash", "bare-ipv6"],
)
def test_a_peer_whose_host_is_no_host_name_is_refused(given: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"SOCMETH_CLUSTER_PEERS": given})

    assert caught.value.key == "cluster.peers"
    assert f"{given!r} is not host:port" in str(caught.value)


def test_a_peer_port_in_other_digits_is_refused() -> None:
    arabic_indic_three = "\u0663"  # str.isdigit() holds, and int() reads 3
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"SOCMETH_CLUSTER_PEERS": f"node2:{arabic_indic_three}"})

    assert caught.value.key == "cluster.peers"


@pytest.mark.parametrize(
    "given",
    ["node2.example.com:8080", "10.0.0.7:8080", "[::1]:8080", "[fe80::1]:1"],
    ids=["host-name", "ipv4", "ipv6-loopback", "ipv6-link-local"],
)
def test_a_peer_host_may_be_a_name_an_ipv4_or_a_bracketed_ipv6(given: str) -> None:
    assert load_config(environ={"SOCMETH_CLUSTER_PEERS": given}).cluster.peers == (
        given,
    )


def test_advertise_is_validated_as_host_port() -> None:
    config = load_config(environ={"SOCMETH_CLUSTER_ADVERTISE": "node1.lan:8080"})
    assert config.cluster.advertise == "node1.lan:8080"
    assert load_config(environ={}).cluster.advertise is None

    with pytest.raises(ConfigError) as caught:
        load_config(environ={"SOCMETH_CLUSTER_ADVERTISE": "node1.lan"})

    assert caught.value.key == "cluster.advertise"
    assert "'node1.lan' is not host:port" in str(caught.value)


def test_an_unknown_cluster_key_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"SOCMETH_CLUSTER_NODES": "a:1"})

    assert "cluster has no key 'nodes'" in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "clustered"),
    [
        ({}, False),
        ({"SOCMETH_DATABASE_URL": "sqlite:////var/lib/socmeth/socmeth.db"}, False),
        ({"POSTGRES_URL": "postgresql://db/socmeth"}, True),
        ({"SOCMETH_DATABASE_URL": "postgres://db/socmeth"}, True),
    ],
    ids=["default-sqlite", "sqlite-url", "postgresql", "postgres-alias"],
)
def test_clustered_means_the_state_lives_in_postgresql(
    environ: dict[str, str], clustered: bool
) -> None:
    assert load_config(environ=environ).clustered is clustered


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({"SOCMETH_AUTH_ENABLED": "true"}, True),
        ({"SOCMETH_AUTH_ENABLED": "false"}, False),
        ({}, None),
    ],
    ids=["true", "false", "unset"],
)
def test_an_optional_switch_reads_from_the_environment(
    environ: dict[str, str], enabled: bool | None
) -> None:
    assert load_config(environ=environ).auth.enabled is enabled
