"""Turn credentials into a Principal: a login's name and password, HTTP Basic, or a
bearer token (an access token or an API token).

The HTTP layer calls these and maps the errors (socmeth.auth.errors): AuthError to
401, RateLimitedError to 429 with Retry-After, ForbiddenError to 403. Each call reads
the injected clock once.

What a password check does, in order:

1. Refuses at once, without hashing, when the name or the client address has
   failed too often (`LoginLimiter`).
2. Verifies the password in a thread, at most `max_hashing` at a time (each takes
   ~0.1 s of CPU and 64 MiB). A name that is not a user's still costs one verify
   against a dummy hash, so the answer's timing does not tell which names exist.
3. Counts a failure for the name and the address, or clears the name's failures.
4. On success, stores a new hash when the stored one was made with other
   parameters (`needs_rehash`).

A bearer access token is valid only while its user exists and has not changed
since the token was issued: changing a password or a role moves the user's
`updated_at`, and tokens issued before that second are refused. The role used is
the stored one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from socmeth.auth.access_tokens import (
    IssuedAccessToken,
    issue_access_token,
    verify_access_token,
)
from socmeth.auth.api_tokens import authenticate_api_token, looks_like_api_token
from socmeth.auth.errors import (
    CredentialsError,
    RateLimitedError,
    TokenRevokedError,
)
from socmeth.auth.models import Principal, PrincipalKind, User
from socmeth.auth.names import NAME
from socmeth.auth.passwords import Passwords, check_password
from socmeth.auth.ratelimit import LoginLimiter, LoginLimits
from socmeth.auth.secret import jwt_secret
from socmeth.clock import Clock
from socmeth.config import Config
from socmeth.errors import NotFoundError, StoreError, ValidationError
from socmeth.store.base import AuthStore

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_TTL = timedelta(hours=1)
MAX_HASHING = 4


class Authenticator:
    """Check logins, HTTP Basic and bearer credentials against the store."""

    def __init__(
        self,
        store: AuthStore,
        clock: Clock,
        secret: bytes,
        *,
        token_ttl: timedelta = DEFAULT_TOKEN_TTL,
        limiter: LoginLimiter | None = None,
        passwords: Passwords | None = None,
        max_hashing: int = MAX_HASHING,
    ) -> None:
        """Check against `store`, sign and verify access tokens with `secret`."""
        self._store = store
        self._clock = clock
        self._secret = secret
        self._token_ttl = token_ttl
        self._limiter = limiter or LoginLimiter()
        self._passwords = passwords or Passwords()
        self._hashing = asyncio.Semaphore(max_hashing)

    @classmethod
    def from_config(
        cls, config: Config, store: AuthStore, clock: Clock
    ) -> Authenticator:
        """Build the authenticator a node's config describes.

        ConfigError (`auth.jwt_secret`) in cluster mode without a shared secret;
        see socmeth.auth.secret.jwt_secret.
        """
        auth = config.auth
        limits = LoginLimits(
            max_per_user=auth.login_failures_per_user,
            max_per_address=auth.login_failures_per_address,
            window=timedelta(seconds=auth.login_window),
        )
        return cls(
            store,
            clock,
            jwt_secret(config),
            token_ttl=timedelta(seconds=auth.token_ttl),
            limiter=LoginLimiter(limits),
        )

    @property
    def token_ttl(self) -> timedelta:
        """Return how long the access tokens of a login live."""
        return self._token_ttl

    async def login(
        self, name: str, password: str, address: str
    ) -> tuple[Principal, IssuedAccessToken]:
        """Check a name and password from `address`; return the user and a new
        access token. CredentialsError or RateLimitedError otherwise."""
        now = self._clock.now()
        user = await self._check_password(name, password, address, now)
        issued = issue_access_token(
            self._secret, user.name, user.role, now, self._token_ttl
        )
        logger.info(
            "user %s logged in from %s",
            user.name,
            address,
            extra={"event": "auth.logged_in"},
        )
        return _principal(user), issued

    async def authenticate_password(
        self, name: str, password: str, address: str
    ) -> Principal:
        """Check HTTP Basic credentials, as a login does, without issuing a token."""
        now = self._clock.now()
        return _principal(await self._check_password(name, password, address, now))

    async def authenticate_bearer(self, token: str) -> Principal:
        """Check a bearer credential: an API token (`smt_...`) or an access token.

        TokenError subclasses name each refusal (socmeth.auth.errors).
        """
        now = self._clock.now()
        if looks_like_api_token(token):
            found = await authenticate_api_token(self._store, token, now)
            return Principal(PrincipalKind.API_TOKEN, found.name, found.role)

        claims = verify_access_token(self._secret, token, now)
        try:
            user = await self._store.get_user(claims.subject)
        except NotFoundError:
            raise TokenRevokedError(
                f"the access token's user {claims.subject} no longer exists"
            ) from None
        # Claims are whole seconds: a token of the second the password or role
        # changed is refused too, since it may have come just before the change.
        if claims.issued_at < _next_second(user.updated_at):
            raise TokenRevokedError(
                f"the password or role of {user.name} changed after this access "
                "token was issued: log in again"
            )
        return _principal(user)

    async def _check_password(
        self, name: str, password: str, address: str, now: datetime
    ) -> User:
        """Return the user whose name and password these are (see the module)."""
        try:
            self._limiter.check(name, address, now)
        except RateLimitedError:
            logger.warning(
                "login refused from %s: too many failures",
                address,
                extra={"event": "auth.login_limited"},
            )
            raise

        # Counted as a failure before the password is checked, and taken back if it
        # matches: attempts sent all at once cannot pass the check while earlier
        # ones are still being hashed.
        self._limiter.failed(name, address, now)
        user = await self._find(name)
        async with self._hashing:
            if user is None:
                await asyncio.to_thread(self._passwords.verify_dummy, password)
                matched = False
            else:
                matched = await asyncio.to_thread(
                    self._passwords.verify, user.password_hash, password
                )
        if user is None or not matched:
            # The name typed is logged only when it is a user's: a wrong one is
            # sometimes the password, typed in the wrong field.
            logger.info(
                "login of %s refused from %s: wrong password",
                user.name if user else "an unknown name",
                address,
                extra={"event": "auth.login_refused"},
            )
            raise CredentialsError()

        self._limiter.succeeded(name, address, now)
        await self._rehash_if_needed(user, password)
        return user

    async def _find(self, name: str) -> User | None:
        if not NAME.fullmatch(name):
            return None
        try:
            return await self._store.get_user(name)
        except NotFoundError:
            return None

    async def _rehash_if_needed(self, user: User, password: str) -> None:
        if not self._passwords.needs_rehash(user.password_hash):
            return
        try:
            check_password(password)  # set before the rule: renewed at its change
        except ValidationError:
            return
        async with self._hashing:
            password_hash = await asyncio.to_thread(self._passwords.hash, password)
        try:
            # The same password, hashed anew: its `updated_at` stays, so that the
            # tokens issued before (and the one this login issues) stay good.
            await self._store.update_user(
                user.name, user.updated_at, password_hash=password_hash
            )
        except NotFoundError:
            raise CredentialsError() from None  # removed while logging in
        except StoreError as exc:
            logger.warning(
                "the password hash of %s was not renewed: %s",
                user.name,
                exc,
                extra={"event": "auth.rehash_failed"},
            )
            return
        logger.info(
            "the password hash of %s was renewed with the current parameters",
            user.name,
            extra={"event": "auth.rehashed"},
        )


def _next_second(instant: datetime) -> datetime:
    """Return `instant` rounded up to a whole second."""
    whole = instant.replace(microsecond=0)
    return whole if whole == instant else whole + timedelta(seconds=1)


def _principal(user: User) -> Principal:
    return Principal(PrincipalKind.USER, user.name, user.role)
