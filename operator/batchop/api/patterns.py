"""The string formats the CRD declares (``pattern`` values) and that validation explains in words.

One definition each: the CRD generator (:mod:`batchop.api.crd`, :mod:`batchop.api.sdkmodels`) writes them
into the schema, and :mod:`batchop.spec.validation` recognises them there to name the fix in its message.
All are RE2-compatible (what the Kubernetes API server evaluates): no lookarounds, no backreferences.
"""

from __future__ import annotations

from typing import Final

BLOB_CONTAINER_PATTERN: Final = r"^[a-z0-9](?:-?[a-z0-9])+$"
"""Blob container names: 3-63 lowercase letters, digits and single hyphens, starting and ending alphanumeric."""
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""Kubernetes object names (Secrets, the resource itself)."""
SCHEDULE_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
URL_PATTERN: Final = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
BATCH_ID_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
"""Batch task ids: letters, digits, hyphens and underscores."""
BATCH_ID_PREFIX_PATTERN: Final = r"^[A-Za-z0-9_-]*$"
"""A prefix of a Batch id (``autoPoolIdPrefix``): the same characters, possibly none."""

# ISO-8601 durations Batch accepts: weeks, days, hours, minutes, (fractional) seconds; at least one part,
# and a 'T' only before a time part.
_SECONDS = r"\d+(?:\.\d+)?S"
_TIME = rf"T(?:\d+H(?:\d+M)?(?:{_SECONDS})?|\d+M(?:{_SECONDS})?|{_SECONDS})"
DURATION_PATTERN: Final = rf"^P(?:(?:\d+W)?(?:\d+D)?{_TIME}|(?:\d+W)?\d+D|\d+W)$"
"""The ``pattern`` of every duration property (``PT4H``, ``P1D``, ``PT1H30M``, ``PT0.5S``)."""
DURATION_NOTE: Final = "An ISO-8601 duration such as PT30M, PT4H, P1D or P1DT12H (Batch writes it back normalised)."
"""Appended to the description of every duration property."""
