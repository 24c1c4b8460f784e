"""RFC 9111 rules for a shared cache, sans-IO: header values and times in, decisions out.

No clock is read here: every function takes ``now`` (seconds since the epoch), so the
rules are tested under a fake clock. The filter (``filter.py``) applies them.

- Storing (section 3): method, status, ``no-store``, ``private``, Authorization (3.5).
- Freshness lifetime (4.2.1): ``s-maxage`` > ``max-age`` > ``Expires - Date``; else the
  policy's ``defaultTTL``, else 10% of ``Date - Last-Modified`` (4.2.2), for
  heuristically cacheable statuses only; capped by ``maxTTL``.
- Age (4.2.3), validators and conditional requests (4.3), staleness extensions of
  RFC 5861 (``stale-while-revalidate``, ``stale-if-error``).
"""

from __future__ import annotations

from email.utils import formatdate, mktime_tz, parsedate_tz

#: statuses a cache may store with a heuristic (or ``defaultTTL``) lifetime (4.2.2;
#: 206 left out: meshgate does not combine partial content).
HEURISTIC_STATUSES = frozenset((200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501))
#: statuses stored when the response says how long they are fresh
EXPLICIT_STATUSES = HEURISTIC_STATUSES | frozenset((302, 303, 307))
HEURISTIC_FRACTION = 0.1
#: fields never stored: connection-specific or recomputed when served
UNSTORED_FIELDS = frozenset(
    ("connection", "keep-alive", "transfer-encoding", "content-length", "age", "x-cache", "te", "trailer", "upgrade", "proxy-connection")
)
#: fields a 304 must not change in the stored response (4.3.4)
NOT_FRESHENED = frozenset(("content-length", "content-encoding", "content-range", "transfer-encoding", "x-cache", "age"))
#: fields a 304 from the cache carries (RFC 9110 section 15.4.5)
NOT_MODIFIED_FIELDS = frozenset(("cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"))

EMPTY: dict[str, str | None] = {}


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Directives by lowercase name; an argument without its quotes, or None."""
    if not value:
        return EMPTY
    out: dict[str, str | None] = {}
    for part in _split_commas(value):
        name, eq, arg = part.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if eq:
            arg = arg.strip()
            if len(arg) >= 2 and arg[0] == '"' and arg[-1] == '"':
                arg = arg[1:-1]
            out.setdefault(name, arg)
        else:
            out.setdefault(name, None)
    return out


def _split_commas(value: str) -> list[str]:
    if '"' not in value:
        return value.split(",")
    parts, start, quoted = [], 0, False
    for i, c in enumerate(value):
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def seconds(directives: dict[str, str | None], name: str) -> int | None:
    """A delta-seconds argument (section 1.2.2); invalid values count as absent, as the
    RFC asks for max-age (a cache must treat an invalid one as stale: see ``lifetime``)."""
    arg = directives.get(name)
    if arg is None or not arg.isdigit():
        return None
    return int(arg)


def http_date(value: str | None) -> float | None:
    """Seconds since the epoch of an HTTP-date, None if absent or invalid."""
    if not value:
        return None
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        return float(mktime_tz(parsed))
    except (OverflowError, ValueError):
        return None


def format_http_date(t: float) -> str:
    return formatdate(t, usegmt=True)


def storable(method: str, status: int, request_cc: dict, response_cc: dict, has_authorization: bool, has_set_cookie: bool) -> str | None:
    """Why a response must not be stored (a short reason), or None when it may be (the
    freshness check in ``lifetime`` still applies)."""
    if method != "GET":
        return "method"
    if status not in EXPLICIT_STATUSES:
        return "status"
    if "no-store" in request_cc or "no-store" in response_cc:
        return "no-store"
    if "private" in response_cc:
        return "private"
    if has_authorization and not (
        "public" in response_cc or "s-maxage" in response_cc or "must-revalidate" in response_cc
    ):
        return "authorization"
    if has_set_cookie and "public" not in response_cc:
        # Not forbidden by the RFC, but one client's cookie served to everyone is a
        # classic leak: only an origin that says ``public`` gets it stored.
        return "set-cookie"
    return None


def lifetime(
    status: int,
    response_cc: dict,
    date: float,
    expires: str | None,
    last_modified: float | None,
    default_ttl: float | None,
    max_ttl: float | None,
) -> float | None:
    """Freshness lifetime in seconds (4.2.1), or None when the response carries no
    freshness information and none may be assumed (it is then not stored)."""
    value = seconds(response_cc, "s-maxage")
    if value is None:
        value = seconds(response_cc, "max-age")
    if value is None and ("max-age" in response_cc or "s-maxage" in response_cc):
        value = 0  # present but invalid: stale (4.2.1)
    if value is None and expires is not None:
        t = http_date(expires)
        value = max(0.0, t - date) if t is not None else 0  # invalid Expires: already expired
    if value is None:
        if status not in HEURISTIC_STATUSES:
            return None
        if default_ttl is not None:
            value = default_ttl
        elif last_modified is not None and last_modified < date:
            value = HEURISTIC_FRACTION * (date - last_modified)
        elif "public" in response_cc or "no-cache" in response_cc:
            value = 0  # storable, but has to be revalidated before every use
        else:
            return None
    if max_ttl is not None and value > max_ttl:
        value = max_ttl
    return float(value)


def initial_age(age_field: str | None, date: float, request_time: float, response_time: float) -> float:
    """``corrected_initial_age`` of section 4.2.3."""
    age_value = int(age_field) if age_field and age_field.strip().isdigit() else 0
    apparent_age = max(0.0, response_time - date)
    response_delay = response_time - request_time
    return max(apparent_age, age_value + response_delay)


def strong_etag(tag: str) -> str:
    return tag.removeprefix("W/")


def etag_matches(if_none_match: str, etag: str | None) -> bool:
    """Weak comparison (RFC 9110 section 13.1.2), as If-None-Match uses."""
    if etag is None:
        return False
    if if_none_match.strip() == "*":
        return True
    mine = strong_etag(etag.strip())
    return any(strong_etag(t.strip()) == mine for t in _split_commas(if_none_match))


def not_modified_for(if_none_match: str | None, if_modified_since: str | None, etag: str | None, last_modified: str | None) -> bool:
    """Is a stored response with these validators "not modified" for a client's
    conditional GET (RFC 9110 section 13.2.2: If-None-Match wins over If-Modified-Since)?"""
    if if_none_match is not None:
        return etag_matches(if_none_match, etag)
    if if_modified_since is not None:
        since = http_date(if_modified_since)
        modified = http_date(last_modified)
        return since is not None and modified is not None and modified <= since
    return False
