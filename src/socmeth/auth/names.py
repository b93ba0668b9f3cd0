"""Check the names of users and API tokens.

The rule: 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter
or a digit. Lower case only, like job names, so that `Alice` and `alice` can never be
two users; no ':', so that audit actors (`token:ci`, `cli:root`) never read as a user.
"""

from __future__ import annotations

import re

from socmeth.auth.models import ANONYMOUS_ACTOR
from socmeth.errors import ValidationError

MAX_NAME_LENGTH = 64
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Audit records name callers without auth this way; no user may be named so.
RESERVED_NAMES = frozenset({ANONYMOUS_ACTOR})


def check_name(name: str, field: str = "name") -> str:
    """Return `name` if it follows the rule; ValidationError naming `field` if not."""
    if not name:
        raise ValidationError.single(field, "is empty: give a name")
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError.single(
            field,
            f"{name[:MAX_NAME_LENGTH]!r}... has {len(name)} characters; a name has "
            f"at most {MAX_NAME_LENGTH}",
        )
    if not NAME.fullmatch(name):
        raise ValidationError.single(
            field,
            f"{name!r} is not a valid name: use lower-case letters, digits, '.', '_' "
            "and '-', starting with a letter or a digit",
        )
    if name in RESERVED_NAMES:
        raise ValidationError.single(
            field, f"{name!r} is reserved for callers when auth is off: choose another"
        )
    return name
