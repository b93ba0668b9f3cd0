"""Set up the Jinja2 environment of the dashboard and the filters its templates use."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from fastapi.templating import Jinja2Templates
from jinja2 import StrictUndefined

from socmeth.models import Attempt, Run
from socmeth.ui.forms import env_text

TEMPLATE_DIR = Path(__file__).parent / "templates"


def iso(instant: datetime) -> str:
    """Write an instant as UTC ISO 8601 with a Z, the form <time datetime> takes."""
    return instant.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc_text(instant: datetime) -> str:
    """Write an instant for readers without JavaScript: UTC, to the second."""
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def segment(value: object) -> str:
    """Quote a value as one URL path segment, '/' included."""
    return quote(str(value), safe="")


# Words of the dashboard's paths under /jobs/ that a job may also be named: such a
# job's pages are addressed by its id instead.
RESERVED_NAMES = frozenset({"new"})


def job_path(name: str, job_id: int | None = None) -> str:
    """Return the path of a job's page: by name, or by id for a reserved name."""
    if name in RESERVED_NAMES and job_id is not None:
        return f"/jobs/{job_id}"
    return f"/jobs/{segment(name)}"


def input_id(name: str) -> str:
    """Turn a form input's name (an API field path) into an id part: no dots."""
    return name.replace(".", "-")


def seconds(value: float) -> str:
    """Write a number of seconds as given: 600 s, 2.5 s."""
    number = float(value)
    return f"{int(number) if number.is_integer() else number} s"


# Terminal control sequences: CSI (colours, cursor moves), OSC (titles, links,
# ended by BEL or ST), character set choices and the other two-character escapes.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    r"|\x1b[()*+][0-~]"  # character set choices: tput sgr0 writes ESC ( B
    r"|\x1b[@-Z\\-_]?"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def terminal_text(output: str) -> str:
    """Show command output as a terminal would leave it, as plain text.

    Escape sequences are dropped (their colours and cursor moves are not drawn),
    a carriage return starts its line over (progress bars keep their last state),
    and other control characters show as U+FFFD. The raw output stays available
    from the API.
    """
    lines = []
    for line in _ESCAPES.sub("", output).split("\n"):
        line = line.removesuffix("\r").rsplit("\r", 1)[-1]
        lines.append(_CONTROLS.sub("\ufffd", line))
    return "\n".join(lines)


def duration(span: timedelta | None) -> str:
    """Write a duration the short way: 450 ms, 12.3 s, 4 min 5 s, 2 h 3 min."""
    if span is None:
        return "—"
    seconds = span.total_seconds()
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def outcome(attempt: Attempt) -> str:
    """Say how an attempt stands or ended: state, exit code or HTTP status, error."""
    parts = [attempt.state.value]
    if attempt.exit_code is not None:
        parts.append(f"exit {attempt.exit_code}")
    if attempt.http_status is not None:
        parts.append(f"HTTP {attempt.http_status}")
    # An exit code or status says it already; the error then only restates it.
    if attempt.error and len(parts) == 1:
        parts.append(attempt.error)
    return ", ".join(parts)


def run_span(run: Run) -> timedelta | None:
    """Return how long an ended run took from its first attempt's start; else None."""
    started = run.attempts[0].started_at if run.attempts else None
    if started is None or run.finished_at is None:
        return None
    return run.finished_at - started


def build_templates() -> Jinja2Templates:
    """Return the templates with autoescaping on and the dashboard's filters."""
    templates = Jinja2Templates(directory=TEMPLATE_DIR)
    env = templates.env
    # Undefined names are template bugs; failing loudly keeps them out of pages.
    env.undefined = StrictUndefined
    env.trim_blocks = True
    env.lstrip_blocks = True
    env.filters.update(
        iso=iso,
        utc_text=utc_text,
        segment=segment,
        duration=duration,
        outcome=outcome,
        run_span=run_span,
        input_id=input_id,
        seconds=seconds,
        terminal_text=terminal_text,
        env_text=env_text,
    )
    env.globals["job_path"] = job_path
    return templates
