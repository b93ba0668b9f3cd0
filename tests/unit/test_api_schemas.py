"""Check the API's edge models: defaults, refusals named by field, masking, patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from socmeth.api.schemas import (
    MASK,
    JobIn,
    JobPatch,
    apply_patch,
    field_errors,
    field_path,
    fields_of,
    job_out,
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
        ((), ""),
    ],
    ids=["nested", "list-item", "dict-key", "whole-body"],
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
