"""Hash and verify passwords with argon2id, and refuse the ones the rule refuses."""

from __future__ import annotations

from dataclasses import replace

import pytest
from argon2 import Type, profiles

from socmeth.auth.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    Passwords,
    check_password,
)
from socmeth.errors import ValidationError

GOOD = "correct horse battery staple"


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(profiles.CHEAPEST)


def test_a_hash_is_argon2id_salted_and_verifies_only_its_password(
    passwords: Passwords,
) -> None:
    first = passwords.hash(GOOD)
    second = passwords.hash(GOOD)

    assert first.startswith("$argon2id$")
    assert first != second  # each hash has its own salt
    assert GOOD not in first
    assert passwords.verify(first, GOOD)
    assert not passwords.verify(first, GOOD + "!")
    assert not passwords.verify(first, GOOD.upper())


def test_the_default_parameters_are_rfc_9106s_low_memory_option() -> None:
    password_hash = Passwords().hash(GOOD)

    assert password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_a_hash_made_with_other_parameters_needs_a_rehash(
    passwords: Passwords,
) -> None:
    cheap = passwords.hash(GOOD)

    assert not passwords.needs_rehash(cheap)
    assert Passwords().needs_rehash(cheap)
    assert passwords.needs_rehash("not a hash")


def test_an_unreadable_stored_hash_verifies_nothing_and_is_logged_without_itself(
    passwords: Passwords, caplog: pytest.LogCaptureFixture
) -> None:
    assert not passwords.verify("$argon2id$broken", GOOD)

    assert [getattr(r, "event", "") for r in caplog.records] == [
        "auth.bad_password_hash"
    ]
    assert "broken" not in caplog.text


def test_the_dummy_verify_never_matches(passwords: Passwords) -> None:
    passwords.verify_dummy(GOOD)
    passwords.verify_dummy("")


@pytest.mark.parametrize(
    "password",
    ["", "x" * (MAX_PASSWORD_LENGTH + 1)],
    ids=["empty", "too-long"],
)
def test_verify_refuses_passwords_outside_the_lengths_without_raising(
    passwords: Passwords, password: str
) -> None:
    assert not passwords.verify(passwords.hash(GOOD), password)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "is empty: give at least 12 characters"),
        ("elevenchars", "has 11 characters; a password has at least 12"),
        (
            "x" * (MAX_PASSWORD_LENGTH + 1),
            "has 1025 characters; a password has at most",
        ),
        ("twelve chars\r", "control character U+000D at position 12"),
        ("nul in\0the middle", "control character U+0000 at position 6"),
    ],
    ids=["empty", "short", "long", "carriage-return", "nul"],
)
def test_the_rule_refuses_weak_passwords_naming_the_field_not_the_password(
    password: str, message: str, passwords: Passwords
) -> None:
    with pytest.raises(ValidationError) as raised:
        check_password(password)
    with pytest.raises(ValidationError):
        passwords.hash(password)

    (error,) = raised.value.errors
    assert error.field == "password"
    assert message in error.message
    if password:
        assert password not in str(raised.value)


@pytest.mark.parametrize(
    "password",
    ["x" * MIN_PASSWORD_LENGTH, "x" * MAX_PASSWORD_LENGTH, "mot de passe très long 🔑"],
    ids=["shortest", "longest", "unicode-and-spaces"],
)
def test_the_rule_takes_any_printable_password_of_12_to_1024_characters(
    password: str,
) -> None:
    assert check_password(password) == password


def test_only_argon2id_parameters_are_taken() -> None:
    with pytest.raises(ValueError, match="argon2id"):
        Passwords(replace(profiles.CHEAPEST, type=Type.I))
