"""batchwire: durations and timestamps as Batch writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchwire import durations, timestamps


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("PT01H00M00S", "PT1H"),
        ("PT1H", "PT1H"),
        ("PT4H", "PT4H"),
        ("P1D", "P1D"),
        ("PT24H", "P1D"),
        ("PT90M", "PT1H30M"),
        ("P1W", "P7D"),
        ("PT0S", "PT0S"),
        ("PT0.5S", "PT0.5S"),
        ("P10675199DT2H48M5.4775807S", "P10675199DT2H48M5.4775807S"),
        ("P1DT02H00M00S", "P1DT2H"),
    ],
)
def test_normalize(sent: str, stored: str) -> None:
    assert durations.normalize(sent) == stored


@pytest.mark.parametrize("bad", ["", "P", "PT", "1H", "PT1X", "P1Y", "P1M", "hello", "P1DT"])
def test_bad_durations_refused(bad: str) -> None:
    with pytest.raises(durations.DurationError):
        durations.parse_ticks(bad)


def test_timedelta_round_trip() -> None:
    assert durations.parse("PT4H") == timedelta(hours=4)
    assert durations.format(timedelta(hours=4, minutes=30)) == "PT4H30M"
    assert durations.parse("P10675199DT2H48M5.4775807S") == timedelta.max


def test_timestamps() -> None:
    t = datetime(2016, 4, 29, 5, 30, tzinfo=UTC)
    assert timestamps.format(t) == "2016-04-29T05:30:00.0000000Z"
    assert timestamps.parse("2016-04-29T05:30:00.0000000Z") == t
    assert timestamps.parse("2016-04-29T05:30:00.000Z") == t
    assert timestamps.parse("2016-04-29T05:30:00Z") == t
    assert timestamps.rfc1123(t) == "Fri, 29 Apr 2016 05:30:00 GMT"
