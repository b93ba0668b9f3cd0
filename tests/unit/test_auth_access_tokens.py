"""Issue HS256 access tokens and refuse every kind of bad one, each by its own error."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from socmeth.auth.access_tokens import (
    AUDIENCE,
    CLOCK_SKEW,
    ISSUER,
    MAX_TOKEN_LENGTH,
    issue_access_token,
    verify_access_token,
)
from socmeth.auth.errors import (
    TokenAlgorithmError,
    TokenAudienceError,
    TokenError,
    TokenExpiredError,
    TokenIssuerError,
    TokenMalformedError,
    TokenSignatureError,
)
from socmeth.auth.models import Role

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
NOW = datetime(2026, 1, 1, 12, 0, 30, 250_000, tzinfo=UTC)
HOUR = timedelta(hours=1)


def claims(**changed: Any) -> dict[str, Any]:
    """Return valid claims for a token issued at NOW, with some changed."""
    issued = int(NOW.timestamp())
    values: dict[str, Any] = {
        "sub": "alice",
        "role": "operator",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": issued,
        "exp": issued + 3600,
        "jti": "abc",
    }
    values.update(changed)
    return {key: value for key, value in values.items() if value is not None}


def signed(payload: dict[str, Any], secret: bytes = SECRET, **kwargs: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", **kwargs)


def segment(document: dict[str, Any]) -> str:
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_an_issued_token_carries_the_claims_and_verifies() -> None:
    issued = issue_access_token(SECRET, "alice", Role.OPERATOR, NOW, HOUR)

    verified = verify_access_token(SECRET, issued.token, NOW)
    payload = jwt.decode(
        issued.token,
        SECRET,
        algorithms=["HS256"],
        options={"verify_signature": True, "verify_exp": False, "verify_aud": False},
    )

    assert verified == issued.claims
    assert (verified.subject, verified.role) == ("alice", Role.OPERATOR)
    assert verified.issued_at == NOW.replace(microsecond=0)
    assert verified.expires_at == verified.issued_at + HOUR
    assert issued.expires_in == 3600
    assert set(payload) == {"sub", "role", "iss", "aud", "iat", "exp", "jti"}
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"


def test_each_token_gets_its_own_id() -> None:
    first = issue_access_token(SECRET, "alice", Role.ADMIN, NOW, HOUR)
    second = issue_access_token(SECRET, "alice", Role.ADMIN, NOW, HOUR)

    assert first.claims.token_id != second.claims.token_id
    assert len(first.claims.token_id) >= 16


def test_a_token_is_valid_until_just_before_its_expiry() -> None:
    issued = issue_access_token(SECRET, "alice", Role.VIEWER, NOW, HOUR)
    expiry = issued.claims.expires_at

    verify_access_token(SECRET, issued.token, expiry - timedelta(microseconds=1))
    with pytest.raises(TokenExpiredError, match=r"expired at .*log in again"):
        verify_access_token(SECRET, issued.token, expiry)


def test_a_token_issued_a_little_ahead_passes_but_not_far_ahead() -> None:
    ahead = issue_access_token(SECRET, "alice", Role.VIEWER, NOW + CLOCK_SKEW, HOUR)
    future = issue_access_token(
        SECRET, "alice", Role.VIEWER, NOW + CLOCK_SKEW + timedelta(seconds=2), HOUR
    )

    verify_access_token(SECRET, ahead.token, NOW)
    with pytest.raises(TokenMalformedError, match="in the future"):
        verify_access_token(SECRET, future.token, NOW)


def test_alg_none_is_refused() -> None:
    unsigned = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims())}."

    with pytest.raises(TokenAlgorithmError, match="HS256"):
        verify_access_token(SECRET, unsigned, NOW)


@pytest.mark.parametrize("alg", ["HS384", "HS512"], ids=["hs384", "hs512"])
def test_other_algorithms_are_refused_even_with_the_right_secret(alg: str) -> None:
    token = jwt.encode(claims(), SECRET + SECRET, algorithm=alg)

    with pytest.raises(TokenAlgorithmError):
        verify_access_token(SECRET + SECRET, token, NOW)


def test_an_rs256_header_cannot_make_the_secret_a_public_key() -> None:
    # Algorithm confusion: a token that claims RS256, "signed" with HMAC.
    header, payload = segment({"alg": "RS256", "typ": "JWT"}), segment(claims())
    token = f"{header}.{payload}.{segment({'x': 1})}"

    with pytest.raises(TokenAlgorithmError):
        verify_access_token(SECRET, token, NOW)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(TokenSignatureError, match="another secret"):
        verify_access_token(SECRET, signed(claims(), OTHER_SECRET), NOW)


def test_a_token_whose_claims_were_changed_is_refused() -> None:
    header, _, signature = signed(claims()).split(".")
    forged = f"{header}.{segment(claims(role='admin'))}.{signature}"

    with pytest.raises(TokenSignatureError):
        verify_access_token(SECRET, forged, NOW)


def test_a_wrong_issuer_is_refused() -> None:
    with pytest.raises(TokenIssuerError, match="iss"):
        verify_access_token(SECRET, signed(claims(iss="someone-else")), NOW)


@pytest.mark.parametrize(
    "audience",
    ["other-api", ["socmeth-api", "other-api"]],
    ids=["other", "list-with-ours"],
)
def test_a_wrong_audience_is_refused(audience: Any) -> None:
    with pytest.raises(TokenAudienceError, match="aud"):
        verify_access_token(SECRET, signed(claims(aud=audience)), NOW)


@pytest.mark.parametrize("claim", ["sub", "role", "iss", "aud", "iat", "exp", "jti"])
def test_every_claim_is_required(claim: str) -> None:
    token = signed(claims(**{claim: None}))

    with pytest.raises(TokenMalformedError, match=f"no {claim} claim"):
        verify_access_token(SECRET, token, NOW)


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"role": "root"}, "role claim 'root' is not one of"),
        ({"role": ["admin"]}, "role claim"),
        ({"sub": 7}, "sub claim"),
        ({"jti": ""}, "jti claim"),
        ({"exp": "tomorrow"}, "exp claim is not a number"),
        ({"iat": True}, "iat claim is not a number"),
        ({"exp": 10**30}, "exp claim is out of range"),
        ({"exp": int(NOW.timestamp()) - 10}, "expires before it was issued"),
    ],
    ids=[
        "unknown-role",
        "role-list",
        "sub-number",
        "empty-jti",
        "exp-text",
        "iat-bool",
        "exp-huge",
        "exp-before-iat",
    ],
)
def test_claims_of_the_wrong_kind_are_refused(
    changed: dict[str, Any], message: str
) -> None:
    with pytest.raises(TokenMalformedError, match=message):
        verify_access_token(SECRET, signed(claims(**changed)), NOW)


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "x" * (MAX_TOKEN_LENGTH + 1)],
    ids=["empty", "one-part", "three-parts", "too-long"],
)
def test_what_is_no_token_is_refused(token: str) -> None:
    with pytest.raises(TokenMalformedError):
        verify_access_token(SECRET, token, NOW)


def test_messages_never_hold_the_token() -> None:
    token = signed(claims(), OTHER_SECRET)

    with pytest.raises(TokenError) as raised:
        verify_access_token(SECRET, token, NOW)

    assert token not in str(raised.value)
    assert token.split(".")[2] not in str(raised.value)


def test_a_short_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        issue_access_token(b"short", "alice", Role.ADMIN, NOW, HOUR)
    with pytest.raises(ValueError, match="at least 32"):
        verify_access_token(b"short", "a.b.c", NOW)


def test_a_token_must_live_a_positive_time() -> None:
    with pytest.raises(ValueError, match="positive"):
        issue_access_token(SECRET, "alice", Role.ADMIN, NOW, timedelta(0))
