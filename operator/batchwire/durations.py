"""ISO-8601 durations as Azure Batch reads and writes them.

Batch stores durations as .NET ``TimeSpan`` values (100 ns ticks) and writes them back in the
shortest form (``PT1H``, ``P1D``, ``PT1H30M``, ``PT0S``), whatever form the client sent
(the Python SDK sends ``PT01H00M00S``). Comparing a desired spec with what Batch returns therefore
needs both sides normalised: :func:`normalize` does that.
"""

from __future__ import annotations

import re
from datetime import timedelta

TICKS_PER_SECOND = 10_000_000
TICKS_PER_MINUTE = 60 * TICKS_PER_SECOND
TICKS_PER_HOUR = 60 * TICKS_PER_MINUTE
TICKS_PER_DAY = 24 * TICKS_PER_HOUR
MAX_TICKS = 2**63 - 1  # TimeSpan.MaxValue: P10675199DT2H48M5.4775807S

_PATTERN = re.compile(
    r"^(?P<sign>-)?P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


class DurationError(ValueError):
    """A string that is not an ISO-8601 duration Batch accepts."""


def parse_ticks(text: str) -> int:
    """Parse an ISO-8601 duration into 100 ns ticks.

    Accepts weeks, days, hours, minutes and (fractional) seconds. Years and months are refused,
    as Batch refuses them: their length is not fixed.
    """
    if not isinstance(text, str):
        raise DurationError(f"expected an ISO-8601 duration string such as 'PT1H', got {text!r}")
    match = _PATTERN.match(text.strip().upper())
    if not match or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise DurationError(
            f"{text!r} is not an ISO-8601 duration; use a form such as 'PT4H', 'PT30M', 'P1D' or 'P1DT12H'"
        )
    parts = match.groupdict()
    seconds_text = parts["seconds"] or "0"
    whole, _, frac = seconds_text.partition(".")
    frac_ticks = int((frac + "0000000")[:7]) if frac else 0
    ticks = (
        int(parts["weeks"] or 0) * 7 * TICKS_PER_DAY
        + int(parts["days"] or 0) * TICKS_PER_DAY
        + int(parts["hours"] or 0) * TICKS_PER_HOUR
        + int(parts["minutes"] or 0) * TICKS_PER_MINUTE
        + int(whole) * TICKS_PER_SECOND
        + frac_ticks
    )
    if ticks > MAX_TICKS:
        raise DurationError(f"{text!r} is longer than the largest duration Batch accepts (P10675199DT2H48M5.4775807S)")
    return -ticks if parts["sign"] else ticks


def format_ticks(ticks: int) -> str:
    """Write ticks in Batch's normalised form (``PT1H``, ``P1DT2H``, ``PT0S``, ``PT0.5S``)."""
    sign = "-" if ticks < 0 else ""
    ticks = abs(ticks)
    days, rest = divmod(ticks, TICKS_PER_DAY)
    hours, rest = divmod(rest, TICKS_PER_HOUR)
    minutes, rest = divmod(rest, TICKS_PER_MINUTE)
    seconds, frac = divmod(rest, TICKS_PER_SECOND)
    out = f"{sign}P"
    if days:
        out += f"{days}D"
    time = ""
    if hours:
        time += f"{hours}H"
    if minutes:
        time += f"{minutes}M"
    if seconds or frac:
        time += f"{seconds}.{frac:07d}".rstrip("0") + "S" if frac else f"{seconds}S"
    if time:
        out += "T" + time
    elif not days:
        out += "T0S"
    return out


def parse(text: str) -> timedelta:
    """Parse an ISO-8601 duration into a :class:`~datetime.timedelta` (microsecond precision)."""
    ticks = parse_ticks(text)
    if ticks >= MAX_TICKS:
        return timedelta.max
    return timedelta(microseconds=ticks // 10)


def format(value: timedelta) -> str:
    """Write a :class:`~datetime.timedelta` in Batch's normalised form."""
    total_us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return format_ticks(total_us * 10)


def normalize(text: str) -> str:
    """Return ``text`` as Batch would write it back (``PT01H00M00S`` -> ``PT1H``)."""
    return format_ticks(parse_ticks(text))


def is_duration(text: object) -> bool:
    try:
        parse_ticks(text)  # type: ignore[arg-type]
    except DurationError:
        return False
    return True
