"""Hash and verify passwords with argon2id (argon2-cffi), and state the password rule.

The rule: 12 to 1024 characters, no control characters. The upper bound keeps a
login from costing more than the hash parameters say; the lower one is NIST SP
800-63B's advice for passwords that are the only factor, rounded up. Nothing else
is demanded (no character classes): length is what makes a password hard to guess.

Hashing costs about 0.1 s of CPU and 64 MiB by default (RFC 9106's second
recommended option); it blocks, so async callers run it in a thread. A login for a
name that does not exist still verifies one hash (`verify_dummy`), so its answer
takes as long as a wrong password's and does not tell which names exist.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import unicodedata

from argon2 import Parameters, PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from socmeth.errors import ValidationError

logger = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
DEFAULT_PARAMETERS = profiles.RFC_9106_LOW_MEMORY


def check_password(password: str, field: str = "password") -> str:
    """Return `password` if it follows the rule; ValidationError naming `field` if not.

    The messages say the rule and the length, never the password.
    """
    if not password:
        raise ValidationError.single(
            field, f"is empty: give at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError.single(
            field,
            f"has {len(password)} characters; a password has at least "
            f"{MIN_PASSWORD_LENGTH} (a few words make a long one easy to remember)",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError.single(
            field,
            f"has {len(password)} characters; a password has at most "
            f"{MAX_PASSWORD_LENGTH}",
        )
    at = next(
        (i for i, c in enumerate(password) if unicodedata.category(c) == "Cc"), -1
    )
    if at >= 0:
        raise ValidationError.single(
            field,
            f"has the control character U+{ord(password[at]):04X} at position {at}; "
            "a password holds none (a stray carriage return from a Windows file?)",
        )
    return password


class Passwords:
    """Hash passwords and verify them, with one set of argon2id parameters.

    `verify` compares in constant time (libargon2 does); `needs_rehash` tells when a
    stored hash was made with other parameters, so that a login can store a new one.
    """

    def __init__(self, parameters: Parameters = DEFAULT_PARAMETERS) -> None:
        """Use `parameters` (argon2.profiles); tests pass `profiles.CHEAPEST`."""
        if parameters.type is not profiles.RFC_9106_LOW_MEMORY.type:
            raise ValueError(f"passwords are hashed with argon2id, not {parameters}")
        self._hasher = PasswordHasher.from_parameters(parameters)
        self._dummy_hash: str | None = None

    def hash(self, password: str) -> str:
        """Return the argon2id hash (PHC string, with its own salt) of a password.

        The password must follow the rule (`check_password`).
        """
        check_password(password)
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """Tell whether `password` is the one `password_hash` was made from.

        A password beyond the rule's length is refused without hashing it. A
        stored hash that cannot be read counts as a mismatch, and is logged (never
        the hash itself).
        """
        if not password or len(password) > MAX_PASSWORD_LENGTH:
            self.verify_dummy(password[:MAX_PASSWORD_LENGTH])
            return False
        try:
            return self._hasher.verify(password_hash, password)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError) as exc:
            logger.error(
                "a stored password hash cannot be verified: %s",
                type(exc).__name__,
                extra={"event": "auth.bad_password_hash"},
            )
            return False

    def verify_dummy(self, password: str) -> None:
        """Verify a password against a hash of a random one: as slow as `verify`,
        and never true. For logins of names that do not exist."""
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(24))
        with contextlib.suppress(VerificationError):
            self._hasher.verify(self._dummy_hash, password or "-")

    def needs_rehash(self, password_hash: str) -> bool:
        """Tell whether a stored hash was made with other parameters than these."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True
