"""Configure logging under the `socmeth` namespace, as text or as JSON lines.

Every record of ours carries an `event` key (`run.queued`, `attempt.ended`, ...) in
`extra`; the JSON format puts it and the other extra keys in the document, so
operators can filter on events rather than on prose.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD_KEYS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_KEYS and not key.startswith("_"):
                document[key] = value if _is_plain(value) else str(value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def _is_plain(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send socmeth's and uvicorn's records to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("socmeth", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(level.upper())
    # httpx logs every request's full URL at INFO, and URLs can carry tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Access lines would log every poll of the dashboard; keep them for debug.
    logging.getLogger("uvicorn.access").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )


class OutageLog:
    """Log a loop's failures of one kind as an outage: its start, then a reminder
    every `REMIND_S` while it lasts, and its end.

    A loop that retries each second would otherwise write a line each second for as
    long as the store is away; the failures between reminders go to DEBUG.
    """

    REMIND_S = 30.0

    def __init__(self, logger: logging.Logger, event: str, what: str) -> None:
        self._log = logger
        self._event = event
        self._what = what
        self._failures = 0
        self._reminded_at = 0.0

    def failed(self, exc: BaseException, monotonic: float) -> None:
        """Note one failure; log it when it starts an outage or is due a reminder."""
        self._failures += 1
        first = self._failures == 1
        if first or monotonic - self._reminded_at >= self.REMIND_S:
            self._reminded_at = monotonic
            self._log.warning(
                "%s failed (%s)%s",
                self._what,
                exc,
                "" if first else f"; {self._failures} failures in a row",
                extra={"event": self._event, "failures": self._failures},
            )
            return
        self._log.debug(
            "%s failed again (%s)",
            self._what,
            exc,
            extra={"event": self._event, "failures": self._failures},
        )

    def succeeded(self) -> None:
        """Note a success; log the end of an outage, if one was going on."""
        if not self._failures:
            return
        self._log.info(
            "%s works again after %s failures",
            self._what,
            self._failures,
            extra={"event": f"{self._event.rsplit('_', 1)[0]}_recovered"},
        )
        self._failures = 0
