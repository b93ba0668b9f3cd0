"""Issue and verify the access tokens that a login returns: JWTs signed with HS256.

A token carries `sub` (the user's name), `role`, `iss` (`socmeth`), `aud`
(`socmeth-api`), `iat`, `exp` and a random `jti`. Verification (RFC 8725, "JSON Web
Token Best Current Practices"):

1. The algorithm is fixed: only HS256 is accepted, whatever the header says, so
   `alg: none` and algorithm confusion are refused before anything is read.
2. The signature is checked (PyJWT compares in constant time) before any claim.
3. Every claim above is required, with the right type; `iss` and `aud` must match.
4. Time is read from the `now` passed in, never from the system clock: `exp` must
   be after it, and `iat` no later than `CLOCK_SKEW` after it (a node whose clock is
   a little ahead may have issued the token).

Each refusal is its own TokenError subclass; messages never include the token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from socmeth.auth.errors import (
    TokenAlgorithmError,
    TokenAudienceError,
    TokenExpiredError,
    TokenIssuerError,
    TokenMalformedError,
    TokenSignatureError,
)
from socmeth.auth.models import Role

ALGORITHM = "HS256"
ISSUER = "socmeth"
AUDIENCE = "socmeth-api"
REQUIRED_CLAIMS = ("sub", "role", "iss", "aud", "iat", "exp", "jti")
CLOCK_SKEW = timedelta(seconds=30)
# No token socmeth issues comes near this; longer input is refused unread.
MAX_TOKEN_LENGTH = 4096
# HS256 wants a key of at least its hash's size (RFC 7518, 3.2).
MIN_SECRET_BYTES = 32

# PyJWT reads the system clock for exp, iat and nbf, so those checks are ours; so
# are the types of sub and jti, to name the claim alike for every claim.
_DECODE_OPTIONS: Any = {
    "require": list(REQUIRED_CLAIMS),
    "verify_signature": True,
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
    "verify_iss": True,
    "verify_aud": True,
    "strict_aud": True,
    "verify_sub": False,
    "verify_jti": False,
}
_JWT = jwt.PyJWT(options={"enforce_minimum_key_length": True})


@dataclass(frozen=True)
class AccessClaims:
    """The verified content of an access token."""

    subject: str
    role: Role
    issued_at: datetime
    expires_at: datetime
    token_id: str


@dataclass(frozen=True)
class IssuedAccessToken:
    """A new access token, its claims, and its lifetime in whole seconds (the
    `expires_in` of a login's answer)."""

    token: str
    claims: AccessClaims
    expires_in: int


def issue_access_token(
    secret: bytes, subject: str, role: Role, now: datetime, ttl: timedelta
) -> IssuedAccessToken:
    """Sign a token for `subject` with `role`, valid from `now` for `ttl`.

    Instants are whole seconds (JWT's NumericDate), `now` rounded down.
    """
    _check_secret(secret)
    if ttl <= timedelta(0):
        raise ValueError(f"an access token lives a positive time, not {ttl}")
    issued_at = now.astimezone(UTC).replace(microsecond=0)
    seconds = int(ttl.total_seconds())
    claims = AccessClaims(
        subject=subject,
        role=role,
        issued_at=issued_at,
        expires_at=issued_at + timedelta(seconds=seconds),
        token_id=secrets.token_urlsafe(16),
    )
    payload = {
        "sub": claims.subject,
        "role": claims.role.value,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(claims.issued_at.timestamp()),
        "exp": int(claims.expires_at.timestamp()),
        "jti": claims.token_id,
    }
    token = _JWT.encode(payload, secret, algorithm=ALGORITHM)
    return IssuedAccessToken(token, claims, seconds)


def verify_access_token(secret: bytes, token: str, now: datetime) -> AccessClaims:
    """Return the claims of a token socmeth signed with `secret`, valid at `now`.

    Raises a TokenError subclass for each way a token is refused (see the module
    docstring for the order of the checks).
    """
    _check_secret(secret)
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenMalformedError(
            f"the access token is empty or longer than {MAX_TOKEN_LENGTH} characters"
        )
    payload = _decode(secret, token)
    claims = _claims_of(payload)
    if now >= claims.expires_at:
        raise TokenExpiredError(
            f"the access token expired at {claims.expires_at.isoformat()}: log in again"
        )
    if claims.issued_at > now + CLOCK_SKEW:
        raise TokenMalformedError(
            f"the access token was issued at {claims.issued_at.isoformat()}, in the "
            "future: is this node's clock right?"
        )
    return claims


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the JWT secret has {len(secret)} bytes; HS256 needs at least "
            f"{MIN_SECRET_BYTES}"
        )


def _decode(secret: bytes, token: str) -> dict[str, Any]:
    """Check the algorithm, the signature, and the presence, issuer and audience of
    the claims; map PyJWT's errors onto ours."""
    try:
        payload: dict[str, Any] = _JWT.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options=_DECODE_OPTIONS,
            audience=AUDIENCE,
            issuer=ISSUER,
        )
    except jwt.InvalidAlgorithmError as exc:
        raise TokenAlgorithmError(
            f"the access token is not signed with {ALGORITHM}, the only algorithm "
            "socmeth accepts"
        ) from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenSignatureError(
            "the access token's signature does not match: it was changed, or signed "
            "with another secret"
        ) from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenIssuerError(
            f"the access token was not issued by {ISSUER} (claim iss)"
        ) from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenAudienceError(
            f"the access token is not meant for {AUDIENCE} (claim aud)"
        ) from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenMalformedError(
            f"the access token has no {exc.claim} claim; socmeth requires "
            f"{', '.join(REQUIRED_CLAIMS)}"
        ) from exc
    except jwt.PyJWTError as exc:
        raise TokenMalformedError(f"the access token cannot be read: {exc}") from exc
    return payload


def _claims_of(payload: dict[str, Any]) -> AccessClaims:
    """Check the types of the claims a signed token carries, and return them."""
    subject, role, token_id = payload["sub"], payload["role"], payload["jti"]
    if not isinstance(subject, str) or not subject:
        raise TokenMalformedError("the access token's sub claim is not a user name")
    if not isinstance(role, str) or role not in {r.value for r in Role}:
        raise TokenMalformedError(
            f"the access token's role claim {role!r} is not one of "
            f"{', '.join(r.value for r in Role)}"
        )
    if not isinstance(token_id, str) or not token_id:
        raise TokenMalformedError("the access token's jti claim is not an id")
    issued_at = _instant(payload, "iat")
    expires_at = _instant(payload, "exp")
    if expires_at <= issued_at:
        raise TokenMalformedError("the access token expires before it was issued")
    return AccessClaims(subject, Role(role), issued_at, expires_at, token_id)


def _instant(payload: dict[str, Any], claim: str) -> datetime:
    value = payload[claim]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenMalformedError(
            f"the access token's {claim} claim is not a number of seconds"
        )
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise TokenMalformedError(
            f"the access token's {claim} claim is out of range"
        ) from exc
