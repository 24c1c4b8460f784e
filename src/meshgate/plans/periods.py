"""Fixed periods in UTC: sans-IO, the time (Unix seconds) is an argument.

Rate-limit windows (Second, Minute, Hour, Day) and the Day quota are aligned to the
Unix epoch, so a Day is 00:00 to 24:00 UTC. A Month is the calendar month in UTC, of
28 to 31 days, so its bounds are computed from the date, and cached: they change once
a month, and a request must not pay for a datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime

SECONDS = {"Second": 1, "Minute": 60, "Hour": 3600, "Day": 86400}


def month_bounds(now: float) -> tuple[int, int]:
    """(start, end) of the calendar month (UTC) that holds ``now``, in Unix seconds."""
    t = datetime.fromtimestamp(now, UTC)
    start = datetime(t.year, t.month, 1, tzinfo=UTC)
    end = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()), int(end.timestamp())


class Period:
    """One kind of period: ``bounds(now)`` is (start, end) of the one holding ``now``."""

    __slots__ = ("_end", "_start", "name", "seconds")

    def __init__(self, name: str) -> None:
        self.name = name
        self.seconds = SECONDS.get(name, 0)  # 0: a calendar month
        self._start = self._end = 0

    def bounds(self, now: float) -> tuple[int, int]:
        seconds = self.seconds
        if seconds:
            start = int(now) - int(now) % seconds
            return start, start + seconds
        if not self._start <= now < self._end:
            self._start, self._end = month_bounds(now)
        return self._start, self._end


def iso(ts: int) -> str:
    """``ts`` as an RFC 3339 UTC time, for the admin API."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
