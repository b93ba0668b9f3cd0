"""Define the errors of authentication, under socmeth.errors.SocmethError.

    SocmethError
    └── AuthError                  credentials refused (HTTP 401)
        ├── CredentialsError       wrong name or password, or no such user
        ├── TokenError             a bearer token is refused
        │   ├── TokenMalformedError    not a token at all, or a bad claim
        │   ├── TokenAlgorithmError    `alg` is not HS256 (`none`, RS256, ...)
        │   ├── TokenSignatureError    forged, or signed with another secret
        │   ├── TokenExpiredError      past its `exp`
        │   ├── TokenIssuerError       `iss` is not socmeth
        │   ├── TokenAudienceError     `aud` is not socmeth-api
        │   └── TokenRevokedError      an API token revoked, or a JWT older than
        │                              its user's last change, or of a removed user
        ├── RateLimitedError       too many failed logins (HTTP 429)
        └── ForbiddenError         authenticated, but the role may not (HTTP 403)

The messages say what was refused and why, but never echo the credential. Callers
that answer anonymous clients may prefer one generic message for every AuthError
(the type stays for logs and metrics).
"""

from __future__ import annotations

from datetime import timedelta

from socmeth.errors import SocmethError


class AuthError(SocmethError):
    """Refuse credentials."""


class CredentialsError(AuthError):
    """Refuse a name and password: wrong password, or no user of that name.

    One message for both, so that an answer never tells which names exist.
    """

    def __init__(self) -> None:
        super().__init__("the user name or the password is wrong")


class TokenError(AuthError):
    """Refuse a bearer token."""


class TokenMalformedError(TokenError):
    """Refuse what is not a well-formed token, or a token with a bad claim."""


class TokenAlgorithmError(TokenError):
    """Refuse a token signed with another algorithm than HS256, or unsigned."""


class TokenSignatureError(TokenError):
    """Refuse a token whose signature does not match its content."""


class TokenExpiredError(TokenError):
    """Refuse a token past its expiry."""


class TokenIssuerError(TokenError):
    """Refuse a token that socmeth did not issue."""


class TokenAudienceError(TokenError):
    """Refuse a token meant for another audience than socmeth's API."""


class TokenRevokedError(TokenError):
    """Refuse a token revoked, or made before its user's password or role changed."""


class RateLimitedError(AuthError):
    """Refuse a login attempt after too many failures; `retry_after` says when."""

    def __init__(self, message: str, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ForbiddenError(AuthError):
    """Refuse an action the caller's role does not include."""
