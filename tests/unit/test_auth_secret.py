"""Find the JWT secret: from config, or kept in the data dir; refused in a cluster
without one. Also the auth keys of the config."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from socmeth.auth.secret import SECRET_FILE, jwt_secret, kept_secret
from socmeth.config import Config, load_config
from socmeth.errors import ConfigError

CONFIGURED = "a-shared-secret-of-more-than-32-bytes"


def config(data_dir: Path, **environ: str) -> Config:
    return load_config(environ={"SOCMETH_SERVER_DATA_DIR": str(data_dir), **environ})


def test_the_configured_secret_wins(tmp_path: Path) -> None:
    chosen = config(tmp_path, SOCMETH_AUTH_JWT_SECRET=CONFIGURED)

    assert jwt_secret(chosen) == CONFIGURED.encode()
    assert not (tmp_path / SECRET_FILE).exists()


def test_a_cluster_without_a_configured_secret_is_refused_naming_the_key(
    tmp_path: Path,
) -> None:
    clustered = config(tmp_path, POSTGRES_URL="postgresql://db/socmeth")

    with pytest.raises(ConfigError) as raised:
        jwt_secret(clustered)

    assert raised.value.key == "auth.jwt_secret"
    assert "every node" in str(raised.value)
    assert not (tmp_path / SECRET_FILE).exists()


def test_a_cluster_with_a_configured_secret_uses_it(tmp_path: Path) -> None:
    clustered = config(
        tmp_path,
        POSTGRES_URL="postgresql://db/socmeth",
        SOCMETH_AUTH_JWT_SECRET=CONFIGURED,
    )

    assert jwt_secret(clustered) == CONFIGURED.encode()


def test_a_single_node_generates_a_secret_once_and_keeps_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"

    first = jwt_secret(config(data_dir))
    second = jwt_secret(config(data_dir))

    path = data_dir / SECRET_FILE
    assert first == second
    assert len(first) >= 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().strip() == first
    assert [p.name for p in data_dir.iterdir()] == [SECRET_FILE]  # no temporary


def test_the_kept_secret_is_a_valid_configured_secret(tmp_path: Path) -> None:
    kept = kept_secret(tmp_path).decode()

    moved = config(tmp_path / "other", SOCMETH_AUTH_JWT_SECRET=kept)

    assert jwt_secret(moved) == kept.encode()


def test_starts_at_once_agree_on_one_secret(tmp_path: Path) -> None:
    found: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        found.append(kept_secret(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(found) == 8
    assert len(set(found)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]


def test_a_secret_file_others_may_read_is_refused(tmp_path: Path) -> None:
    kept_secret(tmp_path)
    (tmp_path / SECRET_FILE).chmod(0o644)

    with pytest.raises(ConfigError, match="chmod 600") as raised:
        kept_secret(tmp_path)

    assert raised.value.key == "server.data_dir"


def test_a_short_kept_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    path.write_text("short\n")
    path.chmod(0o600)

    with pytest.raises(ConfigError, match="5 bytes"):
        kept_secret(tmp_path)


def test_a_data_dir_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    with pytest.raises(ConfigError, match="cannot keep the JWT secret") as raised:
        kept_secret(blocker / "data")

    assert raised.value.key == "server.data_dir"


def test_the_auth_keys_default_and_come_from_the_environment() -> None:
    default = load_config(environ={}).auth
    chosen = load_config(
        environ={
            "SOCMETH_AUTH_TOKEN_TTL": "600",
            "SOCMETH_AUTH_LOGIN_FAILURES_PER_USER": "3",
            "SOCMETH_AUTH_LOGIN_FAILURES_PER_ADDRESS": "9",
            "SOCMETH_AUTH_LOGIN_WINDOW": "60",
        }
    ).auth

    assert (default.jwt_secret, default.token_ttl) == (None, 3600)
    assert (default.login_failures_per_user, default.login_window) == (5, 300)
    assert default.login_failures_per_address == 20
    assert (chosen.token_ttl, chosen.login_window) == (600, 60)
    assert (chosen.login_failures_per_user, chosen.login_failures_per_address) == (3, 9)


def test_a_short_configured_secret_is_refused_without_showing_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("auth:\n  jwt_secret: too-short-but-secret\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})

    assert raised.value.key == "auth.jwt_secret"
    assert "20 bytes" in str(raised.value)
    assert "too-short-but-secret" not in str(raised.value)


def test_the_configured_secret_is_masked_in_the_configs_repr() -> None:
    chosen = load_config(environ={"SOCMETH_AUTH_JWT_SECRET": CONFIGURED})

    assert CONFIGURED not in repr(chosen)
    assert CONFIGURED not in str(chosen.auth)


@pytest.mark.parametrize(
    ("key", "value"),
    [("TOKEN_TTL", "30"), ("LOGIN_WINDOW", "0"), ("LOGIN_FAILURES_PER_USER", "0")],
    ids=["ttl-under-a-minute", "no-window", "no-failures"],
)
def test_auth_limits_out_of_range_are_refused_naming_the_key(
    key: str, value: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={f"SOCMETH_AUTH_{key}": value})

    assert raised.value.key == f"auth.{key.lower()}"
