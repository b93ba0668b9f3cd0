"""Log in, check HTTP Basic and bearer credentials, on a fake clock and an in-memory
store."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import profiles

from socmeth.auth.access_tokens import issue_access_token, verify_access_token
from socmeth.auth.api_tokens import create_api_token
from socmeth.auth.authenticator import Authenticator
from socmeth.auth.errors import (
    CredentialsError,
    RateLimitedError,
    TokenExpiredError,
    TokenMalformedError,
    TokenRevokedError,
    TokenSignatureError,
)
from socmeth.auth.memory import MemoryAuthStore
from socmeth.auth.models import Principal, PrincipalKind, Role
from socmeth.auth.passwords import Passwords
from socmeth.auth.ratelimit import LoginLimiter, LoginLimits
from socmeth.auth.users import add_user, change_password, change_role, remove_user
from socmeth.clock import FakeClock
from socmeth.config import load_config

SECRET = b"k" * 32
PASSWORD = "correct horse battery staple"
HOUR = timedelta(hours=1)
BY = Principal(PrincipalKind.COMMAND_LINE, "root", Role.ADMIN)
ADDRESS = "192.0.2.10"


class CountingPasswords(Passwords):
    """Count the dummy verifies, to see that unknown names cost one too."""

    def __init__(self) -> None:
        super().__init__(profiles.CHEAPEST)
        self.dummies = 0

    def verify_dummy(self, password: str) -> None:
        self.dummies += 1
        super().verify_dummy(password)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryAuthStore:
    return MemoryAuthStore()


@pytest.fixture
def passwords() -> CountingPasswords:
    return CountingPasswords()


@pytest.fixture
def auth(
    store: MemoryAuthStore, clock: FakeClock, passwords: CountingPasswords
) -> Authenticator:
    limits = LoginLimits(
        max_per_user=3, max_per_address=10, window=timedelta(seconds=60)
    )
    return Authenticator(
        store,
        clock,
        SECRET,
        token_ttl=HOUR,
        limiter=LoginLimiter(limits),
        passwords=passwords,
    )


@pytest.fixture
async def alice(
    store: MemoryAuthStore, clock: FakeClock, passwords: CountingPasswords
) -> None:
    await add_user(store, passwords, "alice", Role.OPERATOR, PASSWORD, BY, clock.now())
    await add_user(store, passwords, "root", Role.ADMIN, PASSWORD, BY, clock.now())
    clock.advance(1)


@pytest.mark.usefixtures("alice")
async def test_a_login_returns_the_user_and_a_token_for_it(
    auth: Authenticator, clock: FakeClock
) -> None:
    principal, issued = await auth.login("alice", PASSWORD, ADDRESS)

    assert principal == Principal(PrincipalKind.USER, "alice", Role.OPERATOR)
    assert principal.actor == "alice"
    assert issued.expires_in == 3600
    claims = verify_access_token(SECRET, issued.token, clock.now())
    assert (claims.subject, claims.role) == ("alice", Role.OPERATOR)
    assert await auth.authenticate_bearer(issued.token) == principal


@pytest.mark.usefixtures("alice")
@pytest.mark.parametrize(
    ("name", "password"),
    [("alice", "the wrong password"), ("nobody", PASSWORD), ("Not A Name!", PASSWORD)],
    ids=["wrong-password", "unknown-name", "invalid-name"],
)
async def test_a_wrong_name_or_password_gets_one_and_the_same_error(
    auth: Authenticator, passwords: CountingPasswords, name: str, password: str
) -> None:
    with pytest.raises(CredentialsError) as raised:
        await auth.login(name, password, ADDRESS)
    with pytest.raises(CredentialsError):
        await auth.authenticate_password(name, password, ADDRESS)

    assert str(raised.value) == "the user name or the password is wrong"
    # An unknown name costs a hash verify too, so timing does not tell it apart.
    assert passwords.dummies == (0 if name == "alice" else 2)


@pytest.mark.usefixtures("alice")
async def test_http_basic_credentials_give_the_user(auth: Authenticator) -> None:
    principal = await auth.authenticate_password("root", PASSWORD, ADDRESS)

    assert principal == Principal(PrincipalKind.USER, "root", Role.ADMIN)


@pytest.mark.usefixtures("alice")
async def test_failures_lock_the_name_out_until_the_window_passes(
    auth: Authenticator, clock: FakeClock
) -> None:
    for _ in range(3):
        with pytest.raises(CredentialsError):
            await auth.login("alice", "a wrong password", ADDRESS)

    with pytest.raises(RateLimitedError) as limited:
        await auth.login("alice", PASSWORD, "198.51.100.1")  # right, but refused
    assert limited.value.retry_after == timedelta(seconds=60)

    clock.advance(60)
    principal, _ = await auth.login("alice", PASSWORD, ADDRESS)
    assert principal.name == "alice"


@pytest.mark.usefixtures("alice")
async def test_a_success_clears_the_names_failures(auth: Authenticator) -> None:
    for _ in range(2):
        with pytest.raises(CredentialsError):
            await auth.login("alice", "a wrong password", ADDRESS)
    await auth.login("alice", PASSWORD, ADDRESS)

    for _ in range(2):
        with pytest.raises(CredentialsError):
            await auth.login("alice", "a wrong password", ADDRESS)
    await auth.login("alice", PASSWORD, ADDRESS)


@pytest.mark.usefixtures("alice")
async def test_a_token_expires_after_its_ttl(
    auth: Authenticator, clock: FakeClock
) -> None:
    _, issued = await auth.login("alice", PASSWORD, ADDRESS)

    clock.advance(HOUR.total_seconds() - 1)
    await auth.authenticate_bearer(issued.token)
    clock.advance(1)
    with pytest.raises(TokenExpiredError):
        await auth.authenticate_bearer(issued.token)


@pytest.mark.usefixtures("alice")
async def test_a_password_change_ends_the_tokens_issued_before_it(
    auth: Authenticator,
    store: MemoryAuthStore,
    clock: FakeClock,
    passwords: CountingPasswords,
) -> None:
    _, before = await auth.login("alice", PASSWORD, ADDRESS)
    clock.advance(1)

    await change_password(
        store, passwords, "alice", "a brand new password", BY, clock.now()
    )
    _, after = await auth.login("alice", "a brand new password", ADDRESS)

    with pytest.raises(TokenRevokedError, match="log in again"):
        await auth.authenticate_bearer(before.token)
    assert (await auth.authenticate_bearer(after.token)).name == "alice"
    with pytest.raises(CredentialsError):
        await auth.login("alice", PASSWORD, ADDRESS)


@pytest.mark.usefixtures("alice")
async def test_a_role_change_ends_old_tokens_and_the_stored_role_counts(
    auth: Authenticator, store: MemoryAuthStore, clock: FakeClock
) -> None:
    _, before = await auth.login("alice", PASSWORD, ADDRESS)
    clock.advance(1)

    await change_role(store, "alice", Role.VIEWER, BY, clock.now())
    principal, _ = await auth.login("alice", PASSWORD, ADDRESS)

    assert principal.role is Role.VIEWER
    with pytest.raises(TokenRevokedError):
        await auth.authenticate_bearer(before.token)


@pytest.mark.usefixtures("alice")
async def test_a_removed_users_tokens_are_refused(
    auth: Authenticator, store: MemoryAuthStore, clock: FakeClock
) -> None:
    _, issued = await auth.login("alice", PASSWORD, ADDRESS)

    await remove_user(store, "alice", BY, clock.now())

    with pytest.raises(TokenRevokedError, match="no longer exists"):
        await auth.authenticate_bearer(issued.token)


@pytest.mark.usefixtures("alice")
async def test_a_token_signed_with_another_secret_is_refused(
    auth: Authenticator, clock: FakeClock
) -> None:
    forged = issue_access_token(b"x" * 32, "root", Role.ADMIN, clock.now(), HOUR)

    with pytest.raises(TokenSignatureError):
        await auth.authenticate_bearer(forged.token)
    with pytest.raises(TokenMalformedError):
        await auth.authenticate_bearer("not-a-token")


@pytest.mark.usefixtures("alice")
async def test_an_api_token_is_taken_as_a_bearer_credential(
    auth: Authenticator, store: MemoryAuthStore, clock: FakeClock
) -> None:
    admin = Principal(PrincipalKind.USER, "root", Role.ADMIN)
    created = await create_api_token(store, "ci", Role.OPERATOR, admin, clock.now())

    principal = await auth.authenticate_bearer(created.secret)

    assert principal == Principal(PrincipalKind.API_TOKEN, "ci", Role.OPERATOR)
    assert principal.actor == "token:ci"
    assert (await store.get_api_token(created.token.id)).last_used_at == clock.now()


async def test_a_hash_made_with_old_parameters_is_renewed_at_login(
    store: MemoryAuthStore, clock: FakeClock
) -> None:
    old = Passwords(profiles.CHEAPEST)
    await add_user(store, old, "alice", Role.ADMIN, PASSWORD, BY, clock.now())
    current = Passwords(replace(profiles.CHEAPEST, time_cost=2))
    auth = Authenticator(store, clock, SECRET, passwords=current)
    clock.advance(1)

    _, issued = await auth.login("alice", PASSWORD, ADDRESS)

    stored = await store.get_user("alice")
    assert not current.needs_rehash(stored.password_hash)
    assert current.verify(stored.password_hash, PASSWORD)
    assert (await auth.authenticate_bearer(issued.token)).name == "alice"


@pytest.mark.usefixtures("alice")
async def test_logins_never_log_a_password_or_an_unknown_name(
    auth: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    _, issued = await auth.login("alice", PASSWORD, ADDRESS)
    with pytest.raises(CredentialsError):
        await auth.login("alice", "hunter2hunter2", ADDRESS)
    with pytest.raises(CredentialsError):
        await auth.login("my-password-in-the-name-field", PASSWORD, ADDRESS)

    events = [getattr(r, "event", "") for r in caplog.records]
    assert events == ["auth.logged_in", "auth.login_refused", "auth.login_refused"]
    for secret in (PASSWORD, "hunter2hunter2", "my-password-in", issued.token):
        assert secret not in caplog.text
    assert "an unknown name" in caplog.text


async def test_the_authenticator_is_built_from_config(
    tmp_path: Path, store: MemoryAuthStore, clock: FakeClock
) -> None:
    config = load_config(
        environ={
            "SOCMETH_SERVER_DATA_DIR": str(tmp_path),
            "SOCMETH_AUTH_TOKEN_TTL": "120",
        }
    )

    auth = Authenticator.from_config(config, store, clock)

    assert auth.token_ttl == timedelta(minutes=2)
    assert (tmp_path / "jwt_secret").is_file()
