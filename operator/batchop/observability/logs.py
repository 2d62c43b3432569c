"""The operator's logging: :func:`batchwire.logs.configure` plus what only a kopf operator needs.

kopf logs every handler's success at INFO. Below DEBUG its per-object logger is held to warnings; at DEBUG,
:class:`KopfRoutineFilter` turns those lines into DEBUG.
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
    """Configure the root logger for a ``batchop`` command (idempotent).

    ``kopf.objects``, kopf's logger for each object, is held to warnings unless the operator logs at DEBUG.
    With batchop's handlers its INFO lines are all routine: a handler's success and "is processed" on every
    watch event, and "Throttling is over" after a throttling warning. A filter (:class:`KopfRoutineFilter`)
    dropped them only after each record was made: 8.1 microseconds per watch event for the two lines kopf logs
    around the handler, 1.6 with the logger held to warnings (``bench/object_logger.py``; docs/performance.md,
    eleventh pass). Warnings and errors (a handler that failed, throttling) are shown as before."""
    logs.configure(level, fmt)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    objects = logging.getLogger("kopf.objects")
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    objects.setLevel(logging.NOTSET if debug else logging.WARNING)
    for old_filter in [f for f in objects.filters if isinstance(f, KopfRoutineFilter)]:
        objects.removeFilter(old_filter)
    objects.addFilter(KopfRoutineFilter())
