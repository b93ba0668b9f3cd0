"""Read the path and query parameters that routes share, within what a store holds.

Ids are 64-bit signed integers in both stores (SQLite's rowid, PostgreSQL's
bigint) and attempt numbers 32-bit ones; a larger number overflows the database
driver instead of matching nothing. So a path naming an id beyond that range answers
404, like any id that names nothing, and a query parameter beyond it is refused with
a 422 that names the parameter. Instants in queries are kept between 1970 and 9999,
so that turning one into UTC or into a zone's local time cannot leave the range of
`datetime`.

Query parameters stay lax (`limit=5` is a string by nature); only what no store
could hold is refused here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Path, Query
from pydantic import AfterValidator, AwareDatetime

from socmeth.errors import NotFoundError, ValidationError
from socmeth.store.base import MAX_ID, fits_id

MAX_ATTEMPT_NUMBER = 2**31 - 1
EARLIEST_AT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_AT = datetime(9999, 1, 1, tzinfo=UTC)


def _shown(text: str) -> str:
    return text if len(text) <= 30 else f"{text[:20]}... ({len(text)} digits)"


# Jobs


def checked_job_ref(
    ref: Annotated[str, Path(description="A job id (all digits) or a job name.")],
) -> str:
    """Return the job reference of a path; one that can name no job is a 404.

    All digits is an id (`JobService.resolve`), but only ASCII digits of an id in
    range can name a stored job: `²` is a digit to Python, and no name is made of it.
    """
    if not ref.isdigit():
        return ref
    if not ref.isascii():
        raise NotFoundError(f"no job is named {ref!r}")
    if not fits_id(ref):
        raise NotFoundError(f"no job has id {_shown(ref)}")
    return ref


JobRef = Annotated[str, Depends(checked_job_ref)]


def checked_job_filter(
    job: Annotated[str | None, Query(description="A job id or name.")] = None,
) -> str | None:
    """Return the `job` of a run listing; an id beyond the stores' range is a 422."""
    if job is None or not job.isdigit():
        return job
    if not job.isascii():
        raise NotFoundError(f"no job is named {job!r}")
    if not fits_id(job):
        raise ValidationError.single(
            "job",
            f"{_shown(job)} is not a job id: ids are at most {MAX_ID}; "
            "give the id or the name of an existing job",
        )
    return job


JobFilterRef = Annotated[str | None, Depends(checked_job_filter)]


# Runs and attempts


def checked_run_id(
    run_id: Annotated[int, Path(description="A run id.")],
) -> int:
    """Return the run id of a path; one no store can hold is a 404."""
    if not 1 <= run_id <= MAX_ID:
        raise NotFoundError(f"no run has id {_shown(str(run_id))}")
    return run_id


RunId = Annotated[int, Depends(checked_run_id)]


def checked_attempt_number(
    run: RunId,
    number: Annotated[int, Path(description="The attempt's number, from 1.")],
) -> int:
    """Return the attempt number of a path; one no store can hold is a 404."""
    if not 1 <= number <= MAX_ATTEMPT_NUMBER:
        raise NotFoundError(f"run {run} has no attempt number {_shown(str(number))}")
    return number


AttemptNumber = Annotated[int, Depends(checked_attempt_number)]


# Text and instants


def _printable(value: str) -> str:
    bad = next((char for char in value if not char.isprintable()), None)
    if bad is not None:
        raise ValueError(
            f"contains the control character U+{ord(bad):04X}, which no job name, "
            "tag or id holds; remove it"
        )
    return value


QueryText = Annotated[str, AfterValidator(_printable)]


def _within_range(instant: datetime) -> datetime:
    if not EARLIEST_AT <= instant <= LATEST_AT:
        raise ValueError(
            f"{instant.isoformat()} is outside the instants socmeth handles, "
            f"{EARLIEST_AT.isoformat()} to {LATEST_AT.isoformat()}; "
            "give an instant between them"
        )
    return instant


QueryInstant = Annotated[AwareDatetime, AfterValidator(_within_range)]
