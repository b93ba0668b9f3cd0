"""Run the command line: help, usage errors, config errors, migrate."""

from __future__ import annotations

from pathlib import Path

import pytest

from socmeth.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)

    assert code == 0
    assert "serve" in out
    assert "migrate" in out


def test_serve_help_lists_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["serve", "--help"], capsys)

    assert code == 0
    for flag in ("--config", "--port", "--data-dir", "--host"):
        assert flag in out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["nope"], "nope"),
        (["serve", "--port", "abc"], "abc"),
        (["serve", "--port", "70000"], "70000"),
        (["serve", "--bogus"], "--bogus"),
    ],
    ids=["unknown-command", "port-not-a-number", "port-out-of-range", "unknown-flag"],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)

    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert named in err


def test_a_bad_config_stops_serve_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("workers:\n  count: -1\n")

    code, _, err = run(["serve", "--config", str(path)], capsys)

    assert code == 2
    assert "workers.count" in err
    assert "Traceback" not in err


def test_migrate_creates_the_store_in_the_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["migrate", "--data-dir", str(tmp_path / "d")], capsys)

    assert code == 0
    assert (tmp_path / "d" / "socmeth.db").is_file()
    assert "up to date" in out


def test_no_arguments_show_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([], capsys)

    assert code == 0
    assert "serve" in out


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--peers", "node2"], {}, "'node2' is not host:port"),
        (["--peers", "node2:9000,:80"], {}, "':80' is not host:port"),
        (["--node-id", "no spaces"], {}, "cluster.node_id"),
        (["--peers", "node2:9000"], {}, "a SQLite store serves one node"),
        ([], {"REDIS_URL": "redis://127.0.0.1:1"}, "redis.url"),
        ([], {"POSTGRES_URL": "postgresql://127.0.0.1:1/x"}, "needs Redis"),
    ],
    ids=[
        "peer-without-port",
        "peer-without-host",
        "bad-node-id",
        "peers-on-sqlite",
        "redis-without-postgres",
        "postgres-without-redis",
    ],
)
def test_cluster_settings_that_cannot_work_stop_serve_naming_them(
    argv: list[str],
    env: dict[str, str],
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("POSTGRES_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    code, _, err = run(["serve", "--data-dir", str(tmp_path), *argv], capsys)

    assert code == 2
    assert named in err
    assert "Traceback" not in err
    assert not (tmp_path / "socmeth.db").exists()
