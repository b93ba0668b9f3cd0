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


@pytest.mark.parametrize("flag", ["--node-id", "--peers"])
def test_cluster_flags_are_refused_naming_the_issue(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["serve", flag, "x"], capsys)

    assert code == 2
    assert flag in err
    assert "issue 4" in err
