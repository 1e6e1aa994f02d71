"""The flag values that choose jobs: times as a duration ago or an ISO time, and labels."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import pytest

from worker_plugins.cli.job.filters import LABEL, WHEN, parse_duration, parse_when

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("7d", 7 * 86400),
        ("1w", 7 * 86400),
        ("1h30m", 5400),
        ("1.5h", 5400),
        (" 2H ", 7200),
        ("0s", 0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_when(text, now=NOW) == NOW - seconds


@pytest.mark.parametrize("text", ["", "7", "7x", "d7", "-1d", "1d 2h", "1,5h", "h"])
def test_not_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_iso_times() -> None:
    assert (
        parse_when("2024-05-01T12:00:00+00:00") == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    )
    assert parse_when("2024-05-01T12:00:00Z") == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    # Without an offset: local time, as the user means it.
    assert parse_when("2024-05-01T12:00") == datetime(2024, 5, 1, 12).timestamp()
    assert parse_when("2024-05-01") == datetime(2024, 5, 1).timestamp()


def test_longer_ago_than_1970_is_1970() -> None:
    assert parse_when("100000w", now=NOW) == 0.0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("yesterday", "neither a duration ago"),
        ("2024-13-01", "neither a duration ago"),
        ("1900-01-01T00:00:00+00:00", "before 1970"),
    ],
)
def test_bad_times(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_when(text)
    with pytest.raises(click.BadParameter, match=problem):
        WHEN.convert(text, None, None)


def test_labels() -> None:
    assert LABEL.convert("team=data", None, None) == ("team", "data")
    assert LABEL.convert("empty=", None, None) == ("empty", "")
    assert LABEL.convert("a=b=c", None, None) == ("a", "b=c")  # the first '=' separates
    for bad, problem in (("novalue", "no '='"), ("=v", "the label key is empty")):
        with pytest.raises(click.BadParameter, match=problem):
            LABEL.convert(bad, None, None)
