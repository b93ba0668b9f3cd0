"""Check the API's edge models: defaults, refusals named by field, masking, patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from socmeth.api.schemas import (
    MASK,
    MAX_SECONDS,
    JobIn,
    JobPatch,
    apply_patch,
    field_errors,
    field_path,
    fields_of,
    job_out,
    mask_url,
    to_definition,
)
from socmeth.config import Config, load_config
from socmeth.errors import ValidationError
from socmeth.models import Concurrency, Job, JobDefinition, JobType, Misfire

README_JOB = {
    "name": "backup-database",
    "schedule": "0 2 * * *",
    "command": "pg_dump -h db.example.com mydb > backup.sql",
    "timeout": 300,
    "retries": 3,
}
CREATED_AT = datetime(2026, 1, 5, 8, 30, tzinfo=UTC)


@pytest.fixture
def config() -> Config:
    return load_config(
        environ={},
        overrides={"scheduler.timezone": "Europe/Berlin", "scheduler.job_timeout": 120},
    )


def definition(data: dict[str, Any], config: Config) -> JobDefinition:
    """Validate a POST body the way the API does and return the definition."""
    try:
        body = JobIn.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(field_errors(exc.errors())) from exc
    return to_definition(body, config)


def refusals(data: dict[str, Any], config: Config) -> dict[str, str]:
    """Return the field errors a POST body gets, by field name."""
    with pytest.raises(ValidationError) as caught:
        definition(data, config)
    return {error.field: error.message for error in caught.value.errors}


def stored(definition: JobDefinition) -> Job:
    return Job(1, definition, CREATED_AT, CREATED_AT, None)


def test_readme_example_gets_every_default(config: Config) -> None:
    job = definition(README_JOB, config)

    assert job.type is JobType.COMMAND
    assert job.timeout == timedelta(seconds=300)
    assert job.retries == 3
    assert job.timezone == "Europe/Berlin"
    assert job.enabled is True
    assert job.concurrency is Concurrency.FORBID
    assert job.misfire is Misfire.RUN_ONCE
    assert job.retry_backoff.initial == timedelta(seconds=10)
    assert job.retry_backoff.factor == 2
    assert job.retry_backoff.max == timedelta(hours=1)
    assert job.retry_backoff.jitter is False


def test_timeout_defaults_to_the_configured_one(config: Config) -> None:
    data = {"name": "nightly", "command": "true"}

    assert definition(data, config).timeout == timedelta(seconds=120)


def test_http_job_defaults_to_get(config: Config) -> None:
    data = {"name": "ping", "type": "http", "url": "https://example.com/"}

    job = definition(data, config)

    assert job.method == "GET"
    assert job.expect_status == ()


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"name": "x", "command": "true", "schedule": "0 25 * * *"}, "schedule", "25"),
        ({"name": "x", "command": "true", "timezone": "Mars/Base"}, "timezone", "Mars"),
        ({"name": "x", "type": "ftp", "url": "ftp://h"}, "type", "'ftp'"),
        ({"name": "x"}, "command", "required for command jobs"),
        ({"name": "x", "type": "http"}, "url", "required for http jobs"),
        ({"name": "x", "command": "true", "timeout": 7200}, "timeout", "3600"),
        ({"name": "x", "command": "true", "timeout": 0}, "timeout", "1"),
        ({"name": "12345", "command": "true"}, "name", "all digits"),
        ({"name": "Backup", "command": "true"}, "name", "lowercase"),
        ({"name": "x" * 201, "command": "true"}, "name", "200"),
        ({"name": "x", "command": "true", "colour": "red"}, "colour", "not a known"),
        ({"name": "x", "command": "true", "retries": 101}, "retries", "100"),
        ({"name": "x", "command": "true", "url": "https://h/"}, "url", "command jobs"),
        ({"name": "x", "type": "http", "url": "ftp://h/"}, "url", "https://"),
        (
            {"name": "x", "type": "webhook", "url": "https://h", "body": "b"},
            "body",
            "no body",
        ),
        ({"name": "x", "command": "true", "env": {"1X": "v"}}, "env.1X", "variable"),
        (
            {"name": "x", "command": "true", "concurrency": "queue"},
            "concurrency",
            "queue",
        ),
    ],
    ids=[
        "invalid-cron",
        "unknown-zone",
        "unknown-type",
        "missing-command",
        "missing-url",
        "timeout-over-cap",
        "timeout-zero",
        "all-digit-name",
        "uppercase-name",
        "long-name",
        "unknown-field",
        "too-many-retries",
        "url-on-command-job",
        "ftp-url",
        "body-on-webhook",
        "bad-env-name",
        "unknown-concurrency",
    ],
)
def test_refusal_names_its_field(
    data: dict[str, Any], field: str, words: str, config: Config
) -> None:
    found = refusals(data, config)

    assert field in found, found
    assert words in found[field]


def test_dependencies_pass_the_edge_for_the_service_to_judge(config: Config) -> None:
    data = {"name": "x", "command": "true", "depends_on": ["a"]}

    assert definition(data, config).depends_on == ("a",)


def test_unknown_field_suggests_the_near_name(config: Config) -> None:
    found = refusals({"name": "x", "command": "true", "retires": 3}, config)

    assert "did you mean 'retries'" in found["retires"]


def test_nested_field_is_named_by_its_path(config: Config) -> None:
    data = {"name": "x", "command": "true", "retry_backoff": {"initial": -1}}

    assert "retry_backoff.initial" in refusals(data, config)


def test_every_refusal_is_listed_at_once(config: Config) -> None:
    data = {"name": "x", "type": "http", "timezone": "Nowhere", "timeout": 9999}

    assert set(refusals(data, config)) == {"url", "timezone", "timeout"}


def test_expect_status_takes_a_single_code(config: Config) -> None:
    data = {"name": "x", "type": "http", "url": "http://h", "expect_status": 204}

    assert definition(data, config).expect_status == (204,)


def test_expect_status_out_of_range_names_the_item(config: Config) -> None:
    data = {"name": "x", "type": "http", "url": "http://h", "expect_status": [200, 9]}

    assert "expect_status[1]" in refusals(data, config)


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("retry_backoff", "initial"), "retry_backoff.initial"),
        (("tags", 2), "tags[2]"),
        (("headers", "X Y", "[key]"), "headers.X Y"),
        (("env", "", "[key]"), 'env[""]'),
        ((), ""),
    ],
    ids=["nested", "list-item", "dict-key", "empty-key", "whole-body"],
)
def test_field_path_reads_like_json(loc: tuple[int | str, ...], path: str) -> None:
    assert field_path(loc) == path


def test_read_job_round_trips(config: Config) -> None:
    data = {
        "name": "ping",
        "type": "http",
        "url": "https://example.com/",
        "method": "post",
        "headers": {"Authorization": "Bearer abc"},
        "expect_status": [200, 201],
        "misfire_grace": 30,
        "tags": ["a", "b", "a"],
    }
    job = definition(data, config)

    assert definition(fields_of(job), config) == job
    assert job.tags == ("a", "b")
    assert job.method == "POST"


def test_secrets_are_masked_in_output(config: Config) -> None:
    data = {
        "name": "hook",
        "type": "webhook",
        "url": "https://hooks.example.com/x",
        "secret": "s3cret",
        "headers": {"X-Api-Key": "k", "Cookie": "c", "Accept": "text/plain"},
    }
    command = {
        "name": "env",
        "command": "true",
        "env": {"DB_PASSWORD": "p", "GITHUB_TOKEN": "t", "REGION": "eu"},
    }

    hook = job_out(stored(definition(data, config)))
    env = job_out(stored(definition(command, config)))

    assert hook.secret == MASK
    assert hook.headers == {"X-Api-Key": MASK, "Cookie": MASK, "Accept": "text/plain"}
    assert env.env == {"DB_PASSWORD": MASK, "GITHUB_TOKEN": MASK, "REGION": "eu"}


def test_mask_on_post_is_refused(config: Config) -> None:
    data = {"name": "x", "command": "true", "env": {"API_TOKEN": MASK}}

    assert "env.API_TOKEN" in refusals(data, config)


def test_patch_keeps_what_it_does_not_name(config: Config) -> None:
    job = definition(README_JOB, config)

    patched = apply_patch(job, JobPatch(retries=1, name="backup-db"), config)

    assert patched.retries == 1
    assert patched.name == "backup-db"
    assert patched.command == job.command
    assert patched.schedule == job.schedule
    assert patched.timeout == job.timeout


def test_patch_with_masks_keeps_the_stored_secrets(config: Config) -> None:
    data = {
        "name": "ping",
        "type": "http",
        "url": "https://example.com/",
        "headers": {"Authorization": "Bearer abc"},
    }
    job = definition(data, config)
    shown = job_out(stored(job)).model_dump(mode="json")
    patch = {k: v for k, v in shown.items() if k in JobPatch.model_fields}

    patched = apply_patch(job, JobPatch.model_validate(patch), config)

    assert patched.headers == {"Authorization": "Bearer abc"}
    assert patched == job


def test_patch_with_a_mask_for_a_new_secret_is_refused(config: Config) -> None:
    job = definition({"name": "x", "command": "true"}, config)
    patch = JobPatch.model_validate({"env": {"NEW_SECRET": MASK}})

    with pytest.raises(ValidationError) as caught:
        apply_patch(job, patch, config)

    assert caught.value.errors[0].field == "env.NEW_SECRET"


def test_patch_changing_the_type_drops_fields_of_the_old_one(config: Config) -> None:
    job = definition(README_JOB, config)
    patch = JobPatch.model_validate({"type": "http", "url": "https://example.com/"})

    patched = apply_patch(job, patch, config)

    assert patched.type is JobType.HTTP
    assert patched.command is None
    assert patched.method == "GET"


def test_patch_null_unschedules(config: Config) -> None:
    job = definition(README_JOB, config)

    patched = apply_patch(job, JobPatch.model_validate({"schedule": None}), config)

    assert patched.schedule is None


def test_patch_is_validated_like_a_post(config: Config) -> None:
    job = definition(README_JOB, config)
    patch = JobPatch.model_validate({"schedule": "61 * * * *"})

    with pytest.raises(ValidationError) as caught:
        apply_patch(job, patch, config)

    assert caught.value.errors[0].field == "schedule"


def test_patch_refuses_a_null_name(config: Config) -> None:
    job = definition(README_JOB, config)

    with pytest.raises(ValidationError) as caught:
        apply_patch(job, JobPatch.model_validate({"name": None}), config)

    assert caught.value.errors[0].field == "name"


# Bounds: values that would overflow timedelta or the store


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"misfire_grace": 1e15}, "misfire_grace"),
        ({"misfire_grace": 1e20}, "misfire_grace"),
        ({"misfire_grace": 1e308}, "misfire_grace"),
        ({"misfire_grace": MAX_SECONDS + 1}, "misfire_grace"),
        ({"misfire_grace": -1}, "misfire_grace"),
        ({"retry_backoff": {"initial": 1e308}}, "retry_backoff.initial"),
        ({"retry_backoff": {"max": 1e20}}, "retry_backoff.max"),
        ({"retry_backoff": {"factor": 0.5}}, "retry_backoff.factor"),
        ({"retry_backoff": {"factor": 101}}, "retry_backoff.factor"),
        ({"retry_backoff": {"factor": float("inf")}}, "retry_backoff.factor"),
        ({"retry_backoff": {"factor": float("nan")}}, "retry_backoff.factor"),
    ],
    ids=[
        "grace-1e15",
        "grace-1e20",
        "grace-1e308",
        "grace-over-a-leap-year",
        "grace-negative",
        "backoff-initial-huge",
        "backoff-max-huge",
        "factor-below-1",
        "factor-over-100",
        "factor-infinite",
        "factor-nan",
    ],
)
def test_out_of_range_seconds_are_refused_by_field(
    data: dict[str, Any], field: str, config: Config
) -> None:
    assert field in refusals({"name": "x", "command": "true", **data}, config)


def test_misfire_grace_may_be_a_leap_year(config: Config) -> None:
    data = {"name": "x", "command": "true", "misfire_grace": MAX_SECONDS}

    assert definition(data, config).misfire_grace == timedelta(days=366)


def test_huge_timeout_is_refused_with_a_short_message(config: Config) -> None:
    found = refusals({"name": "x", "command": "true", "timeout": 1e308}, config)

    assert found["timeout"].startswith("1e+308 seconds is over the cap of 3600")


# Strict JSON types


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"timeout": "5"}, "timeout", "must be a number, not a string"),
        ({"timeout": True}, "timeout", "must be a number, not a boolean"),
        ({"retries": True}, "retries", "must be an integer, not a boolean"),
        ({"retries": "3"}, "retries", "must be an integer, not a string"),
        ({"retries": 3.0}, "retries", "must be an integer"),
        ({"enabled": "yes"}, "enabled", "must be true or false, not a string"),
        ({"enabled": 1}, "enabled", "must be true or false, not a number"),
        ({"misfire_grace": "10"}, "misfire_grace", "not a string"),
        ({"misfire_grace": False}, "misfire_grace", "not a boolean"),
        ({"retry_backoff": {"jitter": "yes"}}, "retry_backoff.jitter", "true or"),
        ({"retry_backoff": {"factor": True}}, "retry_backoff.factor", "boolean"),
        ({"retry_backoff": {"initial": "1"}}, "retry_backoff.initial", "string"),
        ({"retry_backoff": {"initial": None}}, "retry_backoff.initial", "not null"),
        ({"tags": "db"}, "tags", "must be a list, not a string"),
        ({"env": ["A"]}, "env", "must be an object, not a list"),
        ({"description": 5}, "description", "must be a string, not a number"),
    ],
    ids=[
        "timeout-string",
        "timeout-bool",
        "retries-bool",
        "retries-string",
        "retries-float",
        "enabled-string",
        "enabled-int",
        "grace-string",
        "grace-bool",
        "jitter-string",
        "factor-bool",
        "initial-string",
        "initial-null",
        "tags-string",
        "env-list",
        "description-int",
    ],
)
def test_fields_take_json_types_only(
    data: dict[str, Any], field: str, words: str, config: Config
) -> None:
    found = refusals({"name": "x", "command": "true", **data}, config)

    assert field in found, found
    assert words in found[field]


def test_status_codes_take_integers_only(config: Config) -> None:
    data = {"name": "x", "type": "http", "url": "http://h/"}

    for status in ("200", True, 200.0):
        found = refusals({**data, "expect_status": [status]}, config)
        assert "expect_status[0]" in found, status


def test_integers_are_numbers_of_seconds(config: Config) -> None:
    data = {
        "name": "x",
        "command": "true",
        "timeout": 30,
        "misfire_grace": 0,
        "retry_backoff": {"initial": 1, "factor": 3, "max": 60},
    }

    job = definition(data, config)

    assert job.timeout == timedelta(seconds=30)
    assert job.misfire_grace == timedelta(0)
    assert job.retry_backoff.factor == 3


# What executors would fail on at run time


HTTP = {"name": "x", "type": "http"}
URL = "http://127.0.0.1:8080/"


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"command": "echo a\0b"}, "command", "NUL"),
        ({"command": "é" * 40000}, "command", "80000 bytes"),
        ({"env": {"A": "x\0"}}, "env.A", "NUL"),
        ({"env": {"A": "x" * (64 * 1024 + 1)}}, "env.A", "over the limit"),
        ({"env": {"A-B": "x"}}, "env.A-B", "environment variable name"),
        ({"env": {"": "x"}}, 'env[""]', "environment variable name"),
        ({"timezone": ""}, "timezone", "send null for the default"),
        ({**HTTP, "url": "http://127.0.0.1:99999/"}, "url", "port 99999"),
        ({**HTTP, "url": "http://127.0.0.1:0/"}, "url", "port 0"),
        ({**HTTP, "url": " http://h/"}, "url", "a space at position 0"),
        ({**HTTP, "url": "http://h/ "}, "url", "a space at position 9"),
        ({**HTTP, "url": "http://h/a b"}, "url", "%20"),
        ({**HTTP, "url": "http://h/\n"}, "url", "a line break"),
        ({**HTTP, "url": "http://h/\x7f"}, "url", "U+007F"),
        ({**HTTP, "url": "http:///x"}, "url", "names no host"),
        ({**HTTP, "url": "http://h:port/"}, "url", "not a valid URL"),
        ({**HTTP, "url": "mailto:ops@example.com"}, "url", "http://"),
        ({**HTTP, "url": URL, "headers": {"X-A": "é"}}, "headers.X-A", "ASCII"),
        (
            {**HTTP, "url": URL, "headers": {"X-A": "a\r\nB: c"}},
            "headers.X-A",
            "U+000D",
        ),
        ({**HTTP, "url": URL, "headers": {"X-A": "a\nb"}}, "headers.X-A", "line break"),
        ({**HTTP, "url": URL, "headers": {"X-A": "\x7f"}}, "headers.X-A", "U+007F"),
        ({**HTTP, "url": URL, "headers": {"X-A": " a"}}, "headers.X-A", "starts or"),
        ({**HTTP, "url": URL, "headers": {"X-A": "a\t"}}, "headers.X-A", "ends with"),
        ({**HTTP, "url": URL, "headers": {"X Y": "a"}}, "headers.X Y", "RFC 9110"),
        (
            {**HTTP, "url": URL, "headers": {"Content-Length": "5"}},
            "headers.Content-Length",
            "socmeth sets itself",
        ),
        (
            {**HTTP, "url": URL, "headers": {"transfer-encoding": "chunked"}},
            "headers.transfer-encoding",
            "socmeth sets itself",
        ),
        ({**HTTP, "url": URL, "headers": {"HOST": "h"}}, "headers.HOST", "sets"),
        (
            {**HTTP, "url": URL, "headers": {"Connection": "close"}},
            "headers.Connection",
            "sets",
        ),
        (
            {"name": "x", "type": "webhook", "url": URL, "secret": ""},
            "secret",
            "send null for an unsigned webhook",
        ),
    ],
    ids=[
        "command-nul",
        "command-too-many-bytes",
        "env-nul",
        "env-too-long",
        "env-name-dash",
        "env-name-empty",
        "empty-timezone",
        "port-too-big",
        "port-zero",
        "url-leading-space",
        "url-trailing-space",
        "url-inner-space",
        "url-line-break",
        "url-control",
        "url-no-host",
        "url-bad-port",
        "url-other-scheme",
        "header-non-ascii",
        "header-crlf",
        "header-lf",
        "header-del",
        "header-leading-space",
        "header-trailing-tab",
        "header-name-space",
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "empty-secret",
    ],
)
def test_what_would_fail_at_run_time_is_refused(
    data: dict[str, Any], field: str, words: str, config: Config
) -> None:
    body = {"name": "x", "command": "true", **data}
    if body.get("type") in ("http", "webhook"):
        del body["command"]

    found = refusals(body, config)

    assert field in found, found
    assert words in found[field]


def test_header_refusals_do_not_quote_the_value(config: Config) -> None:
    data = {**HTTP, "url": URL, "headers": {"X-Token": "s3cr\u00e9t"}}

    assert "s3cr" not in refusals(data, config)["headers.X-Token"]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/",
        "HTTPS://Example.com:443/a%20b?q=1#f",
        "http://[::1]:8080/",
        "http://münchen.example/",
        "http://u:p@h/",
    ],
    ids=["plain", "upper-scheme", "ipv6", "unicode-host", "credentials"],
)
def test_sendable_urls_are_kept_as_given(url: str, config: Config) -> None:
    assert definition({**HTTP, "url": url}, config).url == url


def test_header_values_may_hold_tabs_and_be_empty(config: Config) -> None:
    headers = {"X-A": "a\tb", "X-B": "", "Accept": "text/plain; q=0.9"}

    job = definition({**HTTP, "url": URL, "headers": headers}, config)

    assert job.headers == headers


# Credentials in URLs


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@h/x", f"https://user:{MASK}@h/x"),
        ("https://user:p:w@h:8443", f"https://user:{MASK}@h:8443"),
        ("https://u:a@b@h/x?y=@z", f"https://u:{MASK}@h/x?y=@z"),
        ("https://:pw@h/", f"https://:{MASK}@h/"),
        ("https://token@h/", "https://token@h/"),
        ("https://user:@h/", "https://user:@h/"),
        ("https://h/a:b@c", "https://h/a:b@c"),
        ("https://h/?u=a:b@c", "https://h/?u=a:b@c"),
        ("not a url", "not a url"),
    ],
    ids=[
        "password",
        "colon-in-password",
        "last-at-sign",
        "no-user",
        "user-only",
        "empty-password",
        "at-in-path",
        "at-in-query",
        "not-a-url",
    ],
)
def test_mask_url_hides_the_password_only(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_url_password_is_masked_in_output(config: Config) -> None:
    job = definition({**HTTP, "url": "https://ops:hunter2@h/x"}, config)

    assert job_out(stored(job)).url == f"https://ops:{MASK}@h/x"


def test_patch_with_the_masked_url_keeps_the_stored_password(config: Config) -> None:
    job = definition({**HTTP, "url": "https://ops:hunter2@h/x"}, config)
    patch = JobPatch.model_validate({"url": f"https://ops:{MASK}@h/y", "retries": 2})

    patched = apply_patch(job, patch, config)

    assert patched.url == "https://ops:hunter2@h/y"
    assert patched.retries == 2


def test_patch_with_a_new_url_password_replaces_it(config: Config) -> None:
    job = definition({**HTTP, "url": "https://ops:hunter2@h/x"}, config)
    patch = JobPatch.model_validate({"url": "https://ops:swordfish@h/x"})

    assert apply_patch(job, patch, config).url == "https://ops:swordfish@h/x"


@pytest.mark.parametrize(
    "url",
    [
        f"https://ops:{MASK}@elsewhere.example/x",
        f"http://ops:{MASK}@h/x",
        f"https://ops:{MASK}@h:8443/x",
    ],
)
def test_a_masked_credential_is_not_kept_for_another_host(
    config: Config, url: str
) -> None:
    job = definition(
        {
            **HTTP,
            "url": "https://ops:hunter2@h/x",
            "headers": {"Authorization": "Bearer abc", "X-Team": "ops"},
        },
        config,
    )
    patch = JobPatch.model_validate(
        {"url": url, "headers": {"Authorization": MASK, "X-Team": "ops"}}
    )

    with pytest.raises(ValidationError) as caught:
        apply_patch(job, patch, config)

    assert [error.field for error in caught.value.errors] == [
        "url",
        "headers.Authorization",
    ]
    assert "another host" in caught.value.errors[0].message


def test_credentials_given_again_for_another_host_are_taken(config: Config) -> None:
    job = definition(
        {**HTTP, "url": "https://ops:hunter2@h/x", "headers": {"Authorization": "a"}},
        config,
    )
    patch = JobPatch.model_validate(
        {"url": "https://ops:new@other/x", "headers": {"Authorization": "b"}}
    )

    patched = apply_patch(job, patch, config)

    assert (patched.url, dict(patched.headers)) == (
        "https://ops:new@other/x",
        {"Authorization": "b"},
    )


def test_masked_url_password_with_nothing_stored_is_refused(config: Config) -> None:
    job = definition({**HTTP, "url": "https://h/x"}, config)
    patch = JobPatch.model_validate({"url": f"https://ops:{MASK}@h/x"})

    with pytest.raises(ValidationError) as caught:
        apply_patch(job, patch, config)

    assert [error.field for error in caught.value.errors] == ["url"]


def test_masked_url_password_on_post_is_refused(config: Config) -> None:
    assert "url" in refusals({**HTTP, "url": f"https://ops:{MASK}@h/"}, config)


def test_url_refusals_mask_the_password(config: Config) -> None:
    found = refusals({**HTTP, "url": "https://ops:hunter2@h:99999/"}, config)

    assert "hunter2" not in found["url"]
    assert MASK in found["url"]


# Read-only fields


def test_patch_ignores_the_read_only_fields(config: Config) -> None:
    job = definition(README_JOB, config)
    patch = JobPatch.model_validate(
        {
            "id": 99,
            "created_at": "2020-01-01T00:00:00+00:00",
            "updated_at": None,
            "next_fire_at": "whenever",
            "retries": 1,
        }
    )

    patched = apply_patch(job, patch, config)

    assert patched == definition({**README_JOB, "retries": 1}, config)


@pytest.mark.parametrize("field", ["id", "created_at", "updated_at", "next_fire_at"])
def test_post_refuses_the_read_only_fields(field: str, config: Config) -> None:
    found = refusals({**README_JOB, field: None}, config)

    assert "is set by socmeth" in found[field]
