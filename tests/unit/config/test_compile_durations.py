from __future__ import annotations

import pytest

from meshgate.config.compile.durations import (
    DurationError,
    parse_duration,
    parse_timeout,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("500ms", 0.5), ("1h30m", 5400.0), ("1h", 3600.0), ("2m3s4ms", 123.004),
     ("0s", 0.0), ("1h1m1s1ms", 3661.001)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1.5s", "-1s", "1d", "123456s", "1h1m1s1ms1h", "s"])
def test_malformed_durations(text):
    with pytest.raises(DurationError):
        parse_duration(text)


def test_zero_timeout_means_none():
    assert parse_timeout("0s") is None
    assert parse_timeout("0ms") is None
    assert parse_timeout(None) is None
    assert parse_timeout("250ms") == 0.25
