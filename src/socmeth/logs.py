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
