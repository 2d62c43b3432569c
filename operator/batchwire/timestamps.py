"""Timestamps as Azure Batch writes them: ISO-8601 UTC with 7 fractional digits and ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def format(value: datetime) -> str:
    """``2025-06-01T12:00:00.1234560Z`` (Batch writes 7 digits; Python has 6)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def parse(text: str) -> datetime:
    """Parse an ISO-8601 timestamp (any precision, ``Z`` or offset); naive values are taken as UTC."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    head, sep, tail = raw.partition(".")
    if sep:  # trim fractional digits beyond microseconds, which fromisoformat rejects before 3.11's rules
        digits = ""
        rest = ""
        for i, ch in enumerate(tail):
            if not ch.isdigit():
                rest = tail[i:]
                break
            digits += ch
        raw = f"{head}.{(digits + '000000')[:6]}{rest}"
    value = datetime.fromisoformat(raw)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def rfc1123(value: datetime) -> str:
    """``Mon, 01 Jun 2025 12:00:00 GMT`` for ``Last-Modified`` and ``ocp-date`` headers."""
    return value.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def seconds(value: datetime | None = None) -> str:
    """``2025-06-01T12:00:00Z``: second precision, as Kubernetes writes ``metav1.Time`` (conditions, Events)
    and as the SAS ``se=`` field takes it; ``value`` defaults to now."""
    value = datetime.now(UTC) if value is None else value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
