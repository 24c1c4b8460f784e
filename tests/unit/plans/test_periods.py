"""Periods in UTC: epoch-aligned windows and days, calendar months (December into
January, February in leap and common years), the month cache moving on."""

from __future__ import annotations

from datetime import UTC, datetime

from meshgate.plans.periods import Period, iso, month_bounds


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_a_day_runs_from_midnight_to_midnight_utc():
    day = Period("Day")
    assert day.bounds(ts(2025, 6, 14, 23, 59, 59)) == (int(ts(2025, 6, 14)), int(ts(2025, 6, 15)))
    assert day.bounds(ts(2025, 6, 15)) == (int(ts(2025, 6, 15)), int(ts(2025, 6, 16)))


def test_windows_are_aligned_to_the_epoch():
    assert Period("Minute").bounds(ts(2025, 6, 14, 10, 7, 31) + 0.5) == (
        int(ts(2025, 6, 14, 10, 7)), int(ts(2025, 6, 14, 10, 8))
    )
    assert Period("Second").bounds(100.9) == (100, 101)
    assert Period("Hour").bounds(ts(2025, 6, 14, 10, 59, 59)) == (
        int(ts(2025, 6, 14, 10)), int(ts(2025, 6, 14, 11))
    )


def test_months_are_calendar_months():
    assert month_bounds(ts(2025, 12, 31, 23, 59, 59)) == (int(ts(2025, 12, 1)), int(ts(2026, 1, 1)))
    assert month_bounds(ts(2026, 1, 1)) == (int(ts(2026, 1, 1)), int(ts(2026, 2, 1)))
    start, end = month_bounds(ts(2024, 2, 10))
    assert (end - start) // 86400 == 29  # leap year
    start, end = month_bounds(ts(2025, 2, 10))
    assert (end - start) // 86400 == 28


def test_the_month_cache_moves_to_the_next_month_at_its_first_second():
    month = Period("Month")
    assert month.bounds(ts(2025, 1, 31, 23, 59, 59)) == (int(ts(2025, 1, 1)), int(ts(2025, 2, 1)))
    assert month.bounds(ts(2025, 2, 1)) == (int(ts(2025, 2, 1)), int(ts(2025, 3, 1)))
    # and back (a clock set back): recomputed, not stuck
    assert month.bounds(ts(2025, 1, 15)) == (int(ts(2025, 1, 1)), int(ts(2025, 2, 1)))


def test_iso():
    assert iso(int(ts(2025, 7, 1))) == "2025-07-01T00:00:00Z"
