"""The operator's logging: :func:`batchwire.logs.configure` plus what only a kopf operator needs.

kopf logs every handler's success at INFO; :class:`KopfRoutineFilter` turns those lines into DEBUG.
Client libraries that log each request (the Azure SDK's HTTP policy, azure-identity, urllib3) are
kept at WARNING.
"""

from __future__ import annotations

import logging

from batchwire import logs

NOISY = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity", "urllib3")


class KopfRoutineFilter(logging.Filter):
    """kopf logs every handler's success at INFO, several lines per object per change (thousands of JSON
    lines when 1,000 resources are applied, and CPU spent formatting them). They are routine: logged as
    DEBUG, so only ``--log-level DEBUG`` shows them. Failures and retries keep their level."""

    ROUTINE = ("succeeded.", " is processed: ")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and any(part in str(record.msg) for part in self.ROUTINE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def configure(level: str | int = "INFO", fmt: logs.LogFormat = "auto") -> None:
    """Configure the root logger for a ``batchop`` command (idempotent)."""
    logs.configure(level, fmt)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    objects = logging.getLogger("kopf.objects")
    for old_filter in [f for f in objects.filters if isinstance(f, KopfRoutineFilter)]:
        objects.removeFilter(old_filter)
    objects.addFilter(KopfRoutineFilter())
