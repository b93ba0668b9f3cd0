"""Translate between the API's JSON and socmeth's plain values.

The pydantic models here are the edge: `JobIn` (the body of POST), `JobPatch` (PUT),
`JobOut`, `RunOut`, pages, the schedule preview and the error body. Per-field rules
(patterns, ranges, unknown fields) are pydantic's; rules that span fields (what each
job type needs or refuses) or need the configuration (default time zone and timeout,
the timeout cap) are checked by `to_definition`, which lists every bad field in one
`socmeth.errors.ValidationError`.

In the bodies a null means "the default", so that a client may send back any job it
read; PUT also takes and ignores the read-only fields a job is shown with. Numbers
and booleans must be JSON numbers and booleans (a timeout of `"5"` or `true` is
refused), and every value that reaches an executor is checked here for what it will
meet there: a process takes no NUL, a header is one line of printable ASCII, a URL
holds no whitespace. Instants go out as ISO 8601 in UTC with a `+00:00` offset.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    StrictBool,
    StrictInt,
)

from socmeth.config import Config
from socmeth.dependencies import MAX_DEPENDENCIES
from socmeth.errors import FieldError, ScheduleError, ValidationError
from socmeth.models import (
    Attempt,
    AttemptState,
    Concurrency,
    Job,
    JobDefinition,
    JobType,
    Misfire,
    RetryBackoff,
    Run,
    RunState,
    Trigger,
    UpstreamLink,
)
from socmeth.schedule import parse_schedule, validate_timezone
from socmeth.store.base import DependencyGraph

MASK = "********"
MAX_PAGE = 500
DEFAULT_PAGE = 50
# A leap year: the longest duration a job may give, far inside timedelta's range.
MAX_SECONDS = 366 * 24 * 3600
MAX_BACKOFF_S = 30 * 24 * 3600.0
# Linux refuses to start a process with one argument or variable over 128 KiB
# (MAX_ARG_STRLEN); half of it leaves room for a variable's name.
MAX_PROCESS_STRING_BYTES = 64 * 1024
READ_ONLY_FIELDS = ("id", "created_at", "updated_at", "next_fire_at")

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Framing headers: socmeth's HTTP client writes them from the url and the body, and a
# job's own would contradict them (RFC 9112, sections 3.2, 6 and 9.6).
_FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "host", "connection"}
)
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_HEADER_WORDS = ("token", "secret", "key", "password", "auth")
_SECRET_ENV_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD", "PASS", "AUTH", "CREDENTIAL")

# Which job types take each type-specific field (SPEC "Jobs").
TYPE_FIELDS: dict[str, frozenset[JobType]] = {
    "command": frozenset({JobType.COMMAND}),
    "url": frozenset({JobType.HTTP, JobType.WEBHOOK}),
    "method": frozenset({JobType.HTTP}),
    "headers": frozenset({JobType.HTTP, JobType.WEBHOOK}),
    "body": frozenset({JobType.HTTP}),
    "expect_status": frozenset({JobType.HTTP}),
    "secret": frozenset({JobType.WEBHOOK}),
}
_REQUIRED_FIELD = {
    JobType.COMMAND: "command",
    JobType.HTTP: "url",
    JobType.WEBHOOK: "url",
}


# Field types


def _matching(pattern: str, rule: str) -> AfterValidator:
    """Build a validator that refuses a string not matching `pattern`, saying `rule`."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} {rule}")
        return value

    return AfterValidator(check)


def _not_all_digits(name: str) -> str:
    if name.isdigit():
        raise ValueError(
            f"{name!r} is all digits, which the API reads as a job id; add a letter"
        )
    return name


_CHARACTERS = {
    " ": "a space",
    "\t": "a tab",
    "\n": "a line break (U+000A)",
    "\r": "a carriage return (U+000D)",
    "\0": "a NUL character (U+0000)",
}


def _character(char: str) -> str:
    """Name a character for a message without quoting the value around it."""
    return _CHARACTERS.get(char, f"the character U+{ord(char):04X}")


def _http_url(url: str) -> str:
    """Refuse a URL that the http executor could not send, as httpx reads it."""
    shown = mask_url(url)
    at = next((i for i, c in enumerate(url) if c.isspace() or not c.isprintable()), -1)
    if at >= 0:
        raise ValueError(
            f"{shown!r} has {_character(url[at])} at position {at}; a URL holds no "
            "whitespace or control characters: percent-encode them (a space is %20)"
        )
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{shown!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"{shown!r} must start with http:// or https://")
    if not parsed.host:
        raise ValueError(f"{shown!r} names no host; write it as http://host/path")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ValueError(f"{shown!r} has port {parsed.port}; a port is 1 to 65535")
    return url


def _header_name(name: str) -> str:
    if name.lower() in _FRAMING_HEADERS:
        raise ValueError(
            f"{name} is a header socmeth sets itself, from the url and the body, "
            "when it sends the request; leave it out"
        )
    return name


def _header_value(value: str) -> str:
    """Refuse what HTTP/1.1 cannot carry in a header value (RFC 9110, 5.5)."""
    at = next(
        (i for i, c in enumerate(value) if not (" " <= c <= "~" or c == "\t")), -1
    )
    if at >= 0:
        raise ValueError(
            f"has {_character(value[at])} at position {at}; a header value is one "
            "line of printable ASCII: encode anything else (percent-encoding or "
            "base64, as the receiver expects)"
        )
    if value != value.strip(" \t"):
        raise ValueError(
            "starts or ends with a space or a tab, which a header value cannot "
            "(RFC 9110, 5.5); remove them"
        )
    return value


def _no_nul(value: str) -> str:
    at = value.find("\0")
    if at >= 0:
        raise ValueError(
            f"has a NUL character (U+0000) at position {at}, which no process can be "
            "given; remove it"
        )
    return value


def _utf8_at_most(limit: int, advice: str) -> AfterValidator:
    """Build a validator that refuses a string over `limit` bytes in UTF-8."""

    def check(value: str) -> str:
        size = len(value.encode())
        if size > limit:
            raise ValueError(
                f"is {size} bytes in UTF-8, over the limit of {limit} bytes; {advice}"
            )
        return value

    return AfterValidator(check)


def _not_empty(advice: str) -> AfterValidator:
    """Build a validator that refuses an empty string, saying what to send instead."""

    def check(value: str) -> str:
        if not value:
            raise ValueError(f"is empty; {advice}")
        return value

    return AfterValidator(check)


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _listed(value: object) -> object:
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


def _instant_out(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat()


def _seconds_out(value: float) -> int | float:
    """Write whole seconds without a fraction, as they were most likely given."""
    return int(value) if value.is_integer() else value


def _seconds_text(value: float) -> str:
    """Write seconds for a message: as given, or in exponent form when huge."""
    return str(_seconds_out(value)) if value < 1e15 else f"{value:.6g}"


JobName = Annotated[
    str,
    Field(min_length=1, max_length=200),
    _matching(
        r"[a-z0-9][a-z0-9_.-]*",
        "is not a valid job name: use lowercase letters, digits, '_', '.' and '-', "
        "starting with a letter or a digit",
    ),
    AfterValidator(_not_all_digits),
]
Tag = Annotated[
    str,
    Field(min_length=1, max_length=64),
    _matching(
        r"[A-Za-z0-9][A-Za-z0-9_.:/-]*",
        "is not a valid tag: use letters, digits, '_', '.', ':', '/' and '-'",
    ),
]
EnvName = Annotated[
    str,
    Field(max_length=256),
    _matching(
        r"[A-Za-z_][A-Za-z0-9_]*",
        "is not a valid environment variable name: use letters, digits and '_', "
        "not starting with a digit",
    ),
]
_LONG_STRING = "keep long scripts and data in files that the command reads"
EnvValue = Annotated[
    str,
    AfterValidator(_no_nul),
    _utf8_at_most(MAX_PROCESS_STRING_BYTES, _LONG_STRING),
]
Command = Annotated[
    str,
    Field(max_length=65536),
    AfterValidator(_no_nul),
    _utf8_at_most(MAX_PROCESS_STRING_BYTES, _LONG_STRING),
]
HeaderName = Annotated[
    str,
    Field(max_length=256),
    _matching(
        r"[!#$%&'*+.^_`|~0-9A-Za-z-]+",
        "is not a valid HTTP header name (RFC 9110 token characters only)",
    ),
    AfterValidator(_header_name),
]
HeaderValue = Annotated[str, Field(max_length=8192), AfterValidator(_header_value)]
HttpUrl = Annotated[str, Field(max_length=8192), AfterValidator(_http_url)]
Timezone = Annotated[
    str,
    Field(max_length=100),
    _not_empty("leave it out or send null for the default, scheduler.timezone"),
]
Secret = Annotated[
    str,
    Field(max_length=1024),
    _not_empty("leave it out or send null for an unsigned webhook"),
]
HttpMethod = Annotated[
    Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    BeforeValidator(_upper),
]
StatusCode = Annotated[int, Strict(), Field(ge=100, le=599)]
ExpectStatus = Annotated[
    list[StatusCode],
    Field(min_length=1, max_length=100),
    BeforeValidator(_listed, json_schema_input_type=StatusCode | list[StatusCode]),
]
# Strict: a JSON number (an integer is one too), never a string or a boolean.
# Whole seconds go out as JSON integers (300, not 300.0), as docs/api.md shows them.
Seconds = Annotated[
    float, Strict(), PlainSerializer(_seconds_out, return_type=int | float)
]
Instant = Annotated[datetime, PlainSerializer(_instant_out, return_type=str)]


class RetryBackoffBody(BaseModel):
    """Shape the delays between attempts: min(max, initial * factor^(k-1)) seconds."""

    model_config = ConfigDict(extra="forbid")

    initial: Seconds = Field(10.0, ge=0, le=MAX_BACKOFF_S, allow_inf_nan=False)
    factor: Annotated[float, Strict()] = Field(2.0, ge=1, le=100, allow_inf_nan=False)
    max: Seconds = Field(3600.0, ge=0, le=MAX_BACKOFF_S, allow_inf_nan=False)
    jitter: StrictBool = False


# Job bodies


class _JobFields(BaseModel):
    """Hold the fields an operator sets on a job; None means the default."""

    model_config = ConfigDict(extra="forbid")

    name: JobName | None = Field(None, description="Unique; not all digits.")
    type: JobType | None = Field(None, description="Default command.")
    schedule: str | None = Field(
        None, max_length=1000, description="Cron or @every; null: unscheduled."
    )
    timezone: Timezone | None = Field(
        None, description="IANA name; default scheduler.timezone."
    )
    enabled: StrictBool | None = Field(None, description="False pauses; default true.")
    description: str | None = Field(None, max_length=4000)
    tags: list[Tag] | None = Field(None, max_length=50)
    env: dict[EnvName, EnvValue] | None = Field(None, max_length=200)
    command: Command | None = Field(
        None, description="Command jobs: run by /bin/sh -c."
    )
    url: HttpUrl | None = Field(None, description="HTTP and webhook jobs.")
    method: HttpMethod | None = Field(None, description="HTTP jobs; default GET.")
    headers: dict[HeaderName, HeaderValue] | None = Field(None, max_length=100)
    body: str | None = Field(None, max_length=1024 * 1024, description="HTTP jobs.")
    expect_status: ExpectStatus | None = Field(
        None, description="HTTP jobs; null: any 2xx."
    )
    secret: Secret | None = Field(None, description="Webhook jobs: HMAC key.")
    timeout: Seconds | None = Field(
        None, ge=1, allow_inf_nan=False, description="Seconds per attempt."
    )
    retries: StrictInt | None = Field(None, ge=0, le=100)
    retry_backoff: RetryBackoffBody | None = None
    concurrency: Concurrency | None = Field(None, description="Default forbid.")
    misfire: Misfire | None = Field(None, description="Default run_once.")
    misfire_grace: Seconds | None = Field(
        None, ge=0, le=MAX_SECONDS, allow_inf_nan=False
    )
    depends_on: list[JobName] | None = Field(
        None,
        max_length=MAX_DEPENDENCIES,
        description="Names of jobs whose success a run of this one waits for.",
    )
    dependency_timeout: Seconds | None = Field(
        None,
        ge=1,
        le=MAX_SECONDS,
        allow_inf_nan=False,
        description="Seconds a run waits for its dependencies; null: until the "
        "job's next fire.",
    )


class JobIn(_JobFields):
    """Describe a new job: the body of POST /api/jobs."""

    name: JobName = Field(description="Unique; not all digits.")


class JobPatch(_JobFields):
    """Change a job: the body of PUT; fields left out keep their stored values.

    The read-only fields of a shown job are taken and ignored, so that a job read
    from the API can be sent back as it is.
    """

    id: Any = Field(None, exclude=True, description="Read-only; ignored.")
    created_at: Any = Field(None, exclude=True, description="Read-only; ignored.")
    updated_at: Any = Field(None, exclude=True, description="Read-only; ignored.")
    next_fire_at: Any = Field(None, exclude=True, description="Read-only; ignored.")


class JobOut(BaseModel):
    """Show a stored job: every field with its defaults filled, secrets masked."""

    id: int
    name: str
    type: JobType
    schedule: str | None
    timezone: str
    enabled: bool
    description: str
    tags: list[str]
    env: dict[str, str]
    command: str | None
    url: str | None
    method: str | None
    headers: dict[str, str]
    body: str | None
    expect_status: list[int] | None
    secret: str | None
    timeout: Seconds
    retries: int
    retry_backoff: RetryBackoffBody
    concurrency: Concurrency
    misfire: Misfire
    misfire_grace: Seconds | None
    depends_on: list[str]
    dependency_timeout: Seconds | None
    created_at: Instant
    updated_at: Instant
    next_fire_at: Instant | None


def to_definition(job: JobIn, config: Config) -> JobDefinition:
    """Check the rules that span fields and fill the defaults; raise on every error."""
    job_type = job.type or JobType.COMMAND
    timezone = job.timezone or config.scheduler.timezone
    cap = config.scheduler.max_job_timeout
    # A configured default above the cap would refuse every job that leaves it out.
    timeout = job.timeout or float(min(config.scheduler.job_timeout, cap))

    errors = _zone_and_schedule_errors(job.schedule, timezone)
    errors += _type_errors(job, job_type)
    errors += _mask_errors(job)
    if timeout > cap:
        errors.append(_timeout_over_cap(timeout, cap))
    if errors:
        raise ValidationError(errors)

    return _definition(job, job_type, timezone, timeout)


def _definition(
    job: JobIn, job_type: JobType, timezone: str, timeout: float
) -> JobDefinition:
    backoff = job.retry_backoff or RetryBackoffBody()
    grace = job.misfire_grace
    wait = job.dependency_timeout
    method = job.method or ("GET" if job_type is JobType.HTTP else None)
    return JobDefinition(
        name=job.name,
        type=job_type,
        schedule=None if job.schedule is None else job.schedule.strip(),
        timezone=timezone,
        enabled=True if job.enabled is None else job.enabled,
        description=job.description or "",
        tags=tuple(dict.fromkeys(job.tags or ())),
        env=dict(job.env or {}),
        command=job.command,
        url=job.url,
        method=method,
        headers=dict(job.headers or {}),
        body=job.body,
        expect_status=tuple(job.expect_status or ()),
        secret=job.secret,
        timeout=timedelta(seconds=timeout),
        retries=job.retries or 0,
        retry_backoff=RetryBackoff(
            initial=timedelta(seconds=backoff.initial),
            factor=backoff.factor,
            max=timedelta(seconds=backoff.max),
            jitter=backoff.jitter,
        ),
        concurrency=job.concurrency or Concurrency.FORBID,
        misfire=job.misfire or Misfire.RUN_ONCE,
        misfire_grace=None if grace is None else timedelta(seconds=grace),
        depends_on=tuple(job.depends_on or ()),
        dependency_timeout=None if wait is None else timedelta(seconds=wait),
    )


def _zone_and_schedule_errors(schedule: str | None, timezone: str) -> list[FieldError]:
    """Check the time zone, and the schedule in it (in UTC when the zone is wrong,
    so that both errors are told at once)."""
    errors: list[FieldError] = []
    try:
        validate_timezone(timezone)
    except ScheduleError as exc:
        errors += exc.errors
        timezone = "UTC"
    if schedule is not None:
        try:
            parse_schedule(schedule, timezone)
        except ScheduleError as exc:
            errors += exc.errors
    return errors


def _type_errors(job: JobIn, job_type: JobType) -> list[FieldError]:
    errors = []
    required = _REQUIRED_FIELD[job_type]
    value = getattr(job, required)
    if value is None or not value.strip():
        errors.append(FieldError(required, f"is required for {job_type} jobs"))
    for name, types in TYPE_FIELDS.items():
        if job_type not in types and _is_set(getattr(job, name)):
            takers = " and ".join(sorted(types))
            errors.append(
                FieldError(
                    name, f"{job_type} jobs take no {name}; it is for {takers} jobs"
                )
            )
    return errors


def _is_set(value: object) -> bool:
    return value is not None and value != {} and value != []


def _mask_errors(job: JobIn) -> list[FieldError]:
    """Refuse a mask left in place of a secret: storing it would lose the secret."""
    problem = (
        f"{MASK!r} is the mask the API shows in place of a secret and there is no "
        "stored value for it to keep; send the real value"
    )
    fields = [("secret", job.secret), ("url", url_password(job.url or ""))]
    fields += [(f"headers.{k}", v) for k, v in (job.headers or {}).items()]
    fields += [(f"env.{k}", v) for k, v in (job.env or {}).items()]
    return [FieldError(name, problem) for name, value in fields if value == MASK]


def _timeout_over_cap(timeout: float, cap: int) -> FieldError:
    return FieldError(
        "timeout",
        f"{_seconds_text(timeout)} seconds is over the cap of {cap} seconds set by "
        "scheduler.max_job_timeout; lower the timeout or raise the cap",
    )


# PUT: merging a patch into a stored job


def apply_patch(
    definition: JobDefinition, patch: JobPatch, config: Config
) -> JobDefinition:
    """Merge the given fields of `patch` into a stored job and validate the result.

    A field given replaces the stored one (a whole object or list, not merged); a mask
    given for a secret (or for the password of the url) keeps the stored secret;
    changing the type drops the stored fields the new type does not take.
    """
    given = patch.model_dump(mode="json", exclude_unset=True)
    merged = fields_of(definition)
    if "type" in given:
        new_type = JobType(given["type"] or JobType.COMMAND)
        for name, types in TYPE_FIELDS.items():
            if new_type not in types:
                merged[name] = None
    merged.update(_keep_masked(given, definition))

    try:
        job = JobIn.model_validate(merged)
    except pydantic.ValidationError as exc:
        raise ValidationError(field_errors(exc.errors())) from exc
    return to_definition(job, config)


def _keep_masked(given: dict[str, Any], stored: JobDefinition) -> dict[str, Any]:
    """Replace masks in the patch by the stored secrets they stand for.

    A credential sent with requests (the url's password, a secret header) is
    not kept for a url that now points to another host: a mask left in place
    would send it somewhere new unasked, so it must be given again.
    """
    result = dict(given)
    moved = isinstance(given.get("url"), str) and _origin(given["url"]) != _origin(
        stored.url or ""
    )
    refused: list[FieldError] = []
    if result.get("secret") == MASK and stored.secret is not None:
        result["secret"] = stored.secret
    if isinstance(result.get("url"), str) and stored.url is not None:
        kept = _keep_url_password(result["url"], stored.url)
        if kept != result["url"] and moved:
            refused.append(FieldError("url", _MOVED_CREDENTIAL.format("password")))
        result["url"] = kept
    if result.get("headers"):
        by_lower = {k.lower(): v for k, v in stored.headers.items()}
        for name, value in result["headers"].items():
            if value == MASK and name.lower() in by_lower and moved:
                message = _MOVED_CREDENTIAL.format(f"{name} header")
                refused.append(FieldError(f"headers.{name}", message))
        result["headers"] = {
            k: by_lower.get(k.lower(), v) if v == MASK else v
            for k, v in result["headers"].items()
        }
    if refused:
        raise ValidationError(refused)
    if result.get("env"):
        result["env"] = {
            k: stored.env.get(k, v) if v == MASK else v
            for k, v in result["env"].items()
        }
    return result


_MOVED_CREDENTIAL = (
    "the {} is masked, but the url now points to another host; give the value "
    "again, so that a credential never goes somewhere new unasked"
)


def _origin(url: str) -> tuple[str, str, int | None]:
    """Return where a url sends its requests: scheme, host and port."""
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return ("", url, None)  # no valid origin: unlike any other


def _keep_url_password(given: str, stored: str) -> str:
    """Put the stored url's password in place of a mask in the given url's."""
    span, kept = _password_span(given), _password_span(stored)
    if span is None or kept is None or given[span[0] : span[1]] != MASK:
        return given
    return given[: span[0]] + stored[kept[0] : kept[1]] + given[span[1] :]


def fields_of(definition: JobDefinition) -> dict[str, Any]:
    """Return a job's fields as JSON values, secrets included."""
    backoff = definition.retry_backoff
    grace = definition.misfire_grace
    wait = definition.dependency_timeout
    return {
        "name": definition.name,
        "type": definition.type.value,
        "schedule": definition.schedule,
        "timezone": definition.timezone,
        "enabled": definition.enabled,
        "description": definition.description,
        "tags": list(definition.tags),
        "env": dict(definition.env),
        "command": definition.command,
        "url": definition.url,
        "method": definition.method,
        "headers": dict(definition.headers),
        "body": definition.body,
        "expect_status": list(definition.expect_status) or None,
        "secret": definition.secret,
        "timeout": definition.timeout.total_seconds(),
        "retries": definition.retries,
        "retry_backoff": {
            "initial": backoff.initial.total_seconds(),
            "factor": backoff.factor,
            "max": backoff.max.total_seconds(),
            "jitter": backoff.jitter,
        },
        "concurrency": definition.concurrency.value,
        "misfire": definition.misfire.value,
        "misfire_grace": None if grace is None else grace.total_seconds(),
        "depends_on": list(definition.depends_on),
        "dependency_timeout": None if wait is None else wait.total_seconds(),
    }


# Job out and masking


def job_out(job: Job) -> JobOut:
    """Show a stored job with its secrets masked."""
    fields = fields_of(job.definition)
    fields["env"] = _masked(fields["env"], is_secret_env)
    fields["headers"] = _masked(fields["headers"], is_secret_header)
    if fields["secret"] is not None:
        fields["secret"] = MASK
    if fields["url"] is not None:
        fields["url"] = mask_url(fields["url"])
    return JobOut(
        id=job.id,
        created_at=job.created_at,
        updated_at=job.updated_at,
        next_fire_at=job.next_fire_at,
        **fields,
    )


def is_secret_header(name: str) -> bool:
    """Tell whether a header's value is a credential the API must not echo."""
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(w in lowered for w in _SECRET_HEADER_WORDS)


def is_secret_env(name: str) -> bool:
    """Tell whether an environment variable's value looks like a credential."""
    upper = name.upper()
    return any(word in upper for word in _SECRET_ENV_WORDS)


def _masked(
    values: Mapping[str, str], is_secret: Callable[[str], bool]
) -> dict[str, str]:
    return {k: MASK if is_secret(k) else v for k, v in values.items()}


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _password_span(url: str) -> tuple[int, int] | None:
    """Return where the password of `url` starts and ends; None when it has none.

    The authority runs from `//` to the first `/`, `?` or `#`; its user info ends at
    its last `@`, as httpx and urllib read it, and the password follows the first
    `:` of the user info.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    start = scheme.end()
    ends = [i for i in (url.find(c, start) for c in "/?#") if i >= 0]
    at = url.rfind("@", start, min(ends, default=len(url)))
    colon = url.find(":", start, at) if at >= 0 else -1
    if colon < 0 or colon + 1 == at:
        return None
    return colon + 1, at


def url_password(url: str) -> str | None:
    """Return the password in a URL's user info, if it has one."""
    span = _password_span(url)
    return None if span is None else url[span[0] : span[1]]


def mask_url(url: str) -> str:
    """Show a URL with the password of its user info, if any, masked."""
    span = _password_span(url)
    return url if span is None else url[: span[0]] + MASK + url[span[1] :]


# Runs


class AttemptOut(BaseModel):
    """Show one attempt of a run."""

    number: int
    state: AttemptState
    node_id: str | None
    queued_at: Instant
    started_at: Instant | None
    finished_at: Instant | None
    exit_code: int | None
    http_status: int | None
    error: str | None
    output_truncated: bool


class UpstreamRunOut(BaseModel):
    """Name the run of a dependency that a run waits for, or was fed by."""

    job: str
    run_id: int
    state: RunState


class RunOut(BaseModel):
    """Show one firing of a job with its attempts, oldest first.

    `upstream_runs` names, for a job with dependencies, the run of each dependency
    that this run waits for (while `waiting`) or was fed by; `needed_by_run_id`, for
    a run with trigger `dependency`, the run whose demand made it.
    """

    id: int
    job_id: int
    job_name: str
    trigger: Trigger
    scheduled_at: Instant | None
    created_at: Instant
    finished_at: Instant | None
    state: RunState
    reason: str | None
    late: bool
    next_attempt_at: Instant | None
    needed_by_run_id: int | None
    upstream_runs: list[UpstreamRunOut]
    attempts: list[AttemptOut]


def attempt_out(attempt: Attempt) -> AttemptOut:
    """Show an attempt."""
    return AttemptOut(
        number=attempt.number,
        state=attempt.state,
        node_id=attempt.node_id,
        queued_at=attempt.queued_at,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        exit_code=attempt.exit_code,
        http_status=attempt.http_status,
        error=attempt.error,
        output_truncated=attempt.output_truncated,
    )


def run_out(run: Run, upstream: Sequence[UpstreamLink] = ()) -> RunOut:
    """Show a run with its attempts and the runs of dependencies it is linked to."""
    return RunOut(
        id=run.id,
        job_id=run.job_id,
        job_name=run.job_name,
        trigger=run.trigger,
        scheduled_at=run.scheduled_at,
        created_at=run.created_at,
        finished_at=run.finished_at,
        state=run.state,
        reason=run.reason,
        late=run.late,
        next_attempt_at=run.next_attempt_at,
        needed_by_run_id=run.needed_by_run_id,
        upstream_runs=[
            UpstreamRunOut(job=link.job_name, run_id=link.run_id, state=link.state)
            for link in upstream
        ],
        attempts=[attempt_out(attempt) for attempt in run.attempts],
    )


class GraphRunOut(BaseModel):
    """The latest run of a job in a dependency graph."""

    id: int
    state: RunState
    created_at: Instant
    finished_at: Instant | None


class GraphJobOut(BaseModel):
    """One job of a dependency graph."""

    id: int
    name: str
    enabled: bool
    schedule: str | None
    latest_run: GraphRunOut | None


class GraphEdgeOut(BaseModel):
    """`to` depends on `from`: a run of `to` waits for a success of `from`."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str


class DependencyGraphOut(BaseModel):
    """A job's upstream and downstream jobs, the edges among them, and their latest
    runs; `truncated` when the graph was cut at `limit` jobs."""

    job: str
    jobs: list[GraphJobOut]
    edges: list[GraphEdgeOut]
    truncated: bool


def graph_out(graph: DependencyGraph) -> DependencyGraphOut:
    """Show a dependency graph by job names."""
    names = {job.id: job.name for job in graph.jobs}
    return DependencyGraphOut(
        job=names[graph.job_id],
        jobs=[
            GraphJobOut(
                id=job.id,
                name=job.name,
                enabled=job.enabled,
                schedule=job.schedule,
                latest_run=None
                if job.latest_run is None
                else GraphRunOut(
                    id=job.latest_run.id,
                    state=job.latest_run.state,
                    created_at=job.latest_run.created_at,
                    finished_at=job.latest_run.finished_at,
                ),
            )
            for job in graph.jobs
        ],
        edges=[
            GraphEdgeOut(from_=names[a], to=names[b])
            for a, b in graph.edges
            if a in names and b in names
        ],
        truncated=graph.truncated,
    )


# Collections, preview and errors


class JobPage(BaseModel):
    """Hold one page of jobs, in the order the listing's `sort` asked for."""

    items: list[JobOut]
    next_cursor: str | None


class RunPage(BaseModel):
    """Hold one page of runs, newest first."""

    items: list[RunOut]
    next_cursor: str | None


class Preview(BaseModel):
    """List the next fires of a schedule, in its time zone, and say it in words."""

    fires: list[str]
    description: str


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    status: int
    message: str
    fields: list[FieldProblem] = []


class ErrorBody(BaseModel):
    """Describe a refused request; every error the API returns has this shape."""

    error: ErrorDetail


def error_body(
    status: int, message: str, fields: Iterable[FieldError] = ()
) -> dict[str, Any]:
    """Build the JSON of an error response."""
    problems = [FieldProblem(field=f.field, message=f.message) for f in fields]
    detail = ErrorDetail(status=status, message=message, fields=problems)
    return ErrorBody(error=detail).model_dump(mode="json")


# pydantic's errors, named by JSON field

# Where an unknown field is met, these are the names the client probably meant.
_KNOWN_FIELDS: dict[tuple[int | str, ...], tuple[str, ...]] = {
    (): tuple(JobIn.model_fields),
    ("retry_backoff",): tuple(RetryBackoffBody.model_fields),
}
_PRIVATE_FIELDS = frozenset({"secret", "headers", "env", "body", "command"})


def field_errors(errors: Sequence[Mapping[str, Any]]) -> list[FieldError]:
    """Turn pydantic's error list into FieldErrors named by JSON path."""
    return [_field_error(error) for error in errors]


def _field_error(error: Mapping[str, Any]) -> FieldError:
    loc = tuple(error["loc"])
    kind = error["type"]
    message = str(error["msg"])
    if kind == "missing":
        message = "is required"
    elif kind == "extra_forbidden":
        message = _unknown_field(loc)
    elif kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind in _EXPECTED_TYPES:
        message = _type_message(_EXPECTED_TYPES[kind], loc, error.get("input"))
    else:
        message = _with_value(message, loc, error.get("input"))
    return FieldError(field_path(loc), message)


def field_path(loc: Sequence[int | str]) -> str:
    """Write a pydantic location as a JSON path: `retry_backoff.initial`, `tags[2]`.

    An empty key, which a dot would hide, is written `env[""]`.
    """
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "":
            path += '[""]'
        elif part != "[key]":
            path = f"{path}.{part}" if path else part
    return path


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    if loc[:-1] == () and loc[-1] in READ_ONLY_FIELDS:
        return (
            "is set by socmeth, not by a client; leave it out of a POST "
            "(a PUT takes it and ignores it)"
        )
    known = _KNOWN_FIELDS.get(loc[:-1])
    if known is None:
        return "is not a known field"
    near = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if near:
        return f"is not a known field; did you mean {near[0]!r}?"
    return f"is not a known field; the fields are {', '.join(known)}"


# The JSON type each strict type error asks for.
_EXPECTED_TYPES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}


def _type_message(expected: str, loc: tuple[int | str, ...], value: object) -> str:
    """Say which JSON type a field takes and which one it got."""
    message = f"must be {expected}"
    if value is None:
        message += ", not null"
    elif isinstance(value, bool):
        message += ", not a boolean"
    elif isinstance(value, str):
        message += ", not a string"
    elif isinstance(value, list):
        message += ", not a list"
    elif isinstance(value, dict):
        message += ", not an object"
    elif isinstance(value, int | float) and expected not in ("an integer", "a number"):
        message += ", not a number"
    return _with_value(message, loc, value)


def _with_value(message: str, loc: tuple[int | str, ...], value: object) -> str:
    """Add the refused value to the message, unless it may be a secret or is long."""
    if loc and loc[0] in _PRIVATE_FIELDS:
        return message
    if isinstance(value, bool | int | float) or (
        isinstance(value, str) and len(value) <= 100
    ):
        return f"{message} (got {value!r})"
    return message
