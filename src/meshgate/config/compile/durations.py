"""Gateway API Duration strings (GEP-2257) to seconds.

The format is a strict subset of Go's ``time.ParseDuration``: one to four
``<1-5 digits><unit>`` groups, units ``h``, ``m``, ``s``, ``ms`` (``"10s"``, ``"500ms"``,
``"1h30m"``). Timeouts use ``"0s"`` to mean "no timeout", which ``parse_timeout`` maps to
``None``.
"""

from __future__ import annotations

import re

_DURATION_RE = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_PART_RE = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class DurationError(ValueError):
    """The string is not a Gateway API Duration."""


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``"1h30m"`` -> 5400.0); ``DurationError`` when malformed."""
    if not isinstance(text, str) or not _DURATION_RE.match(text):
        raise DurationError(
            f"{text!r} is not a Gateway API duration (examples: 10s, 500ms, 1h30m)"
        )
    total = 0.0
    for number, unit in _PART_RE.findall(text):
        total += int(number) * _UNIT_SECONDS[unit]
    # Round away binary noise from the ms factor: 0.1 + 0.2 style sums read badly in dumps.
    return round(total, 6)


def parse_timeout(text: str | None) -> float | None:
    """A timeout in seconds; ``None`` for unset or ``"0s"`` (the spec's "disabled")."""
    if text is None:
        return None
    seconds = parse_duration(text)
    return seconds if seconds > 0 else None
