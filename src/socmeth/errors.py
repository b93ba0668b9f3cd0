"""Define the one error hierarchy of socmeth.

    SocmethError
    ├── ConfigError          a config key or value is wrong (names the key)
    ├── ValidationError      input refused; carries one or more FieldErrors
    │   └── ScheduleError    a schedule or time zone is refused (names the field)
    ├── NotFoundError        a job, run or attempt does not exist
    ├── ConflictError        the request clashes with stored state (duplicate name)
    │   └── ChangedError     the job changed after it was read for this change
    ├── LimitError           a size or count limit was exceeded
    ├── StoreError           the store failed or is unreachable
    └── FencedError          a leader's write came after another node took the lease

The API maps ValidationError to 422, NotFoundError to 404, ConflictError to 409 and
LimitError to 413; the CLI prints the message without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class SocmethError(Exception):
    """Base of every error socmeth raises on purpose."""


class ConfigError(SocmethError):
    """Report a config key or value that stops the server from starting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config {key}: {message}")
        self.key = key


@dataclass(frozen=True)
class FieldError:
    """Name one bad input field, the rule it broke and, when known, the bad value."""

    field: str
    message: str


class ValidationError(SocmethError):
    """Refuse input; each FieldError names a field and why it is wrong."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors

    @classmethod
    def single(cls, field: str, message: str) -> ValidationError:
        """Build the error for one bad field."""
        return cls([FieldError(field, message)])


class ScheduleError(ValidationError):
    """Refuse a schedule expression or time zone, naming the field and the value."""

    def __init__(self, message: str, field: str = "schedule") -> None:
        super().__init__([FieldError(field, message)])
        self.field = field
        self.reason = message


class NotFoundError(SocmethError):
    """Report that a job, run or attempt does not exist."""


class ConflictError(SocmethError):
    """Report a clash with stored state, such as a duplicate job name."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ChangedError(ConflictError):
    """Report that a job changed between the read and the write of an update.

    Callers that re-apply their change to the job as it is now may try again.
    """


class LimitError(SocmethError):
    """Report input over a size or count limit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StoreError(SocmethError):
    """Report that the store failed or cannot be reached."""


class FencedError(SocmethError):
    """Refuse a leader's write made in a term that is over: another node leads now."""
