"""Run the command line: help, usage errors, config errors, migrate, users."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from pathlib import Path

import pytest

from socmeth.auth.models import Role, User
from socmeth.auth.passwords import Passwords
from socmeth.cli import main
from socmeth.store.sql import open_store


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


# socmeth users: passwords from standard input only, clear errors, exit codes.

PASSWORD = "correct horse battery staple"


def users(
    argv: list[str],
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return run(["users", *argv, "--data-dir", str(data_dir)], capsys)


def stored_users(data_dir: Path) -> list[User]:
    async def read() -> list[User]:
        store = await open_store(f"sqlite:///{data_dir / 'socmeth.db'}")
        try:
            return await store.list_users()
        finally:
            await store.close()

    return asyncio.run(read())


def test_users_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["users", "--help"], capsys)

    assert code == 0
    for command in ("add", "list", "remove", "passwd"):
        assert command in out


@pytest.mark.parametrize("command", ["add", "list", "remove", "passwd"])
def test_every_users_command_takes_config_and_data_dir(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["users", command, "--help"], capsys)

    assert code == 0
    assert "--config" in out
    assert "--data-dir" in out


def test_an_added_user_is_listed_with_its_role(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add = ["add", "alice", "--role", "admin", "--password-stdin"]
    code, out, _ = users(add, tmp_path, capsys, monkeypatch, PASSWORD + "\n")
    assert (code, out) == (0, "added user alice with role admin\n")
    add = ["add", "bob", "--role", "viewer", "--password-stdin"]
    users(add, tmp_path, capsys, monkeypatch, PASSWORD + "\n")

    code, out, _ = users(["list"], tmp_path, capsys, monkeypatch)

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["alice", "admin"],
        ["bob", "viewer"],
    ]
    assert lines[1].endswith("UTC")


def test_the_password_is_the_line_on_stdin_without_its_newline(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add = ["add", "alice", "--role", "operator", "--password-stdin"]
    users(add, tmp_path, capsys, monkeypatch, PASSWORD + "\r\n")

    (user,) = stored_users(tmp_path)
    assert user.role is Role.OPERATOR
    assert user.password_hash.startswith("$argon2id$")
    assert Passwords().verify(user.password_hash, PASSWORD)


def test_listing_no_users_says_how_to_add_one(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, _ = users(["list"], tmp_path, capsys, monkeypatch)

    assert code == 0
    assert "socmeth users add NAME --role admin --password-stdin" in out


@pytest.mark.parametrize(
    ("argv", "stdin", "named"),
    [
        (["add", "alice", "--role", "boss", "--password-stdin"], PASSWORD, "'boss'"),
        (["add", "alice", "--role", "admin"], PASSWORD, "--password-stdin"),
        (["add", "alice", "--role", "admin", PASSWORD], "", "unexpected extra"),
        (
            ["add", "Alice", "--role", "admin", "--password-stdin"],
            PASSWORD,
            "name: 'Alice' is not a valid name",
        ),
        (
            ["add", "alice", "--role", "admin", "--password-stdin"],
            "",
            "password: is empty: give at least 12 characters",
        ),
        (
            ["add", "alice", "--role", "admin", "--password-stdin"],
            "hunter2\n",
            "password: has 7 characters; a password has at least 12",
        ),
        (
            ["add", "alice", "--role", "admin", "--password-stdin"],
            f"{PASSWORD}\nsecond line\n",
            "more than one line",
        ),
    ],
    ids=[
        "unknown-role",
        "no-password-stdin",
        "password-as-argument",
        "bad-name",
        "empty-password",
        "weak-password",
        "two-lines",
    ],
)
def test_bad_input_exits_2_naming_the_value_and_adds_nobody(
    argv: list[str],
    stdin: str,
    named: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = users(argv, tmp_path, capsys, monkeypatch, stdin)

    assert code == 2
    assert named in err
    assert "Traceback" not in err
    assert "hunter2" not in err
    assert "second line" not in err
    assert not (tmp_path / "socmeth.db").exists() or stored_users(tmp_path) == []


def test_a_taken_name_exits_2_naming_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add = ["add", "alice", "--role", "admin", "--password-stdin"]
    users(add, tmp_path, capsys, monkeypatch, PASSWORD)

    code, _, err = users(add, tmp_path, capsys, monkeypatch, PASSWORD)

    assert code == 2
    assert "a user named 'alice' already exists" in err


def test_passwd_sets_a_new_password(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add = ["add", "alice", "--role", "admin", "--password-stdin"]
    users(add, tmp_path, capsys, monkeypatch, PASSWORD)

    new = "a whole new password"
    passwd = ["passwd", "alice", "--password-stdin"]
    code, out, _ = users(passwd, tmp_path, capsys, monkeypatch, new + "\n")

    assert (code, out) == (0, "changed the password of alice\n")
    (user,) = stored_users(tmp_path)
    assert Passwords().verify(user.password_hash, new)
    assert not Passwords().verify(user.password_hash, PASSWORD)


def test_passwd_of_an_unknown_user_exits_2_suggesting_near_names(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add = ["add", "alice", "--role", "admin", "--password-stdin"]
    users(add, tmp_path, capsys, monkeypatch, PASSWORD)

    passwd = ["passwd", "alicia", "--password-stdin"]
    code, _, err = users(passwd, tmp_path, capsys, monkeypatch, PASSWORD)

    assert code == 2
    assert "no user is named 'alicia': did you mean alice?" in err


def test_remove_deletes_a_user_but_never_the_last_admin(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, role in (("alice", "admin"), ("bob", "operator")):
        add = ["add", name, "--role", role, "--password-stdin"]
        users(add, tmp_path, capsys, monkeypatch, PASSWORD)

    removed = users(["remove", "bob"], tmp_path, capsys, monkeypatch)
    last = users(["remove", "alice"], tmp_path, capsys, monkeypatch)
    unknown = users(["remove", "carol"], tmp_path, capsys, monkeypatch)

    assert removed[:2] == (0, "removed user bob\n")
    assert last[0] == 2
    assert "only admin" in last[2]
    assert unknown[0] == 2
    assert "no user is named 'carol'" in unknown[2]
    assert [user.name for user in stored_users(tmp_path)] == ["alice"]


def test_users_commands_read_the_data_dir_from_the_config_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  data_dir: {tmp_path / 'from-config'}\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD))

    add = ["users", "add", "alice", "--role", "viewer", "--password-stdin"]
    code, _, _ = run([*add, "--config", str(path)], capsys)

    assert code == 0
    assert [u.name for u in stored_users(tmp_path / "from-config")] == ["alice"]


def test_the_users_commands_never_log_or_print_a_password(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # socmeth's own loggers at their most verbose (the drivers' stay at WARNING,
    # as configure_logging leaves them: at DEBUG they log statement parameters).
    caplog.set_level(logging.DEBUG, logger="socmeth")
    new = "the second password here"

    add = ["add", "alice", "--role", "admin", "--password-stdin"]
    printed = [users(add, tmp_path, capsys, monkeypatch, PASSWORD)]
    passwd = ["passwd", "alice", "--password-stdin"]
    printed.append(users(passwd, tmp_path, capsys, monkeypatch, new))
    printed.append(users(["list"], tmp_path, capsys, monkeypatch))

    events = {getattr(r, "event", "") for r in caplog.records}
    assert {"auth.user_added", "auth.password_changed"} <= events
    (user,) = stored_users(tmp_path)
    for secret in (PASSWORD, new, user.password_hash):
        assert secret not in caplog.text
        for _, out, err in printed:
            assert secret not in out + err
