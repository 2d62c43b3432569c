"""The logging set-up of every process: the ``batchop`` commands and the local Batch service.

Logs go to stderr: as JSON lines when stderr is not a terminal (or ``--log-format json``), as readable
text on a terminal. Every record passes through :func:`batchwire.redact.redact`, message and exception
alike, so no secret reaches a log whichever process wrote it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

from batchwire.redact import redact

LogFormat = Literal["auto", "json", "text"]

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
    | {"settings"}  # kopf attaches its whole OperatorSettings to every per-object record: kilobytes per line
)


class RedactingFilter(logging.Filter):
    """Render the message once, redact it, and freeze it into the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not kill logging
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def formatException(self, ei: object) -> str:
        return redact(super().formatException(ei))  # type: ignore[arg-type]


def configure(level: str | int = "INFO", fmt: LogFormat = "auto", *, logger: str = "") -> logging.Logger:
    """Send ``logger`` (the root logger by default) to stderr, redacted, in ``fmt``; idempotent.

    A named logger stops propagating, so a process that hosts another component's logger (the local Batch
    service inside a test) does not print its lines twice."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if use_json else TextFormatter())
    handler.addFilter(RedactingFilter())
    target = logging.getLogger(logger)
    for old in list(target.handlers):
        target.removeHandler(old)
    target.addHandler(handler)
    target.setLevel(level if isinstance(level, int) else level.upper())
    if logger:
        target.propagate = False
    return target
