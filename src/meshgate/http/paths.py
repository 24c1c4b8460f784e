"""Request-target parsing and path normalization, done before any route matches.

Policy (documented in docs/routing.md), the same as Envoy's normalize_path plus
merge_slashes with escaped slashes kept:
- percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are decoded, other
  escapes are kept with uppercase hex;
- ``%2F`` and ``%5C`` are kept encoded and never act as separators, so ``/a%2Fb`` does
  not match a route for ``/a/b``;
- dot segments are removed (RFC 3986 5.2.4): ``/public/../private`` is ``/private``,
  and nothing climbs above ``/``;
- runs of ``/`` are merged;
- a malformed escape, a fragment, a control character or a non-ASCII byte is an error
  (400).
"""

from __future__ import annotations

import re

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# RFC 3986 pchar plus "/" and "%" (escapes are checked separately).
_PATH_OK = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
# The query is passed on as received; only bytes that cannot appear in a request line
# (controls, space, DEL, non-ASCII) are refused.
_QUERY_OK = re.compile(r"[\x21-\x7e]*")


class InvalidTarget(ValueError):
    """The request-target cannot be forwarded safely (400)."""


def _decode_escapes(path: str) -> str:
    out: list[str] = []
    i = 0
    n = len(path)
    while i < n:
        c = path[i]
        if c == "%":
            h = path[i + 1 : i + 3]
            if len(h) != 2 or not all(ord(x) in _HEX for x in h):
                raise InvalidTarget("invalid percent-encoding")
            code = int(h, 16)
            if code in _UNRESERVED:
                out.append(chr(code))
            else:
                out.append("%" + h.upper())
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    # Segment-wise: "." dropped, ".." pops, empty segments (from "//") dropped.
    segments = path.split("/")
    out: list[str] = []
    for seg in segments[1:]:
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    normalized = "/" + "/".join(out)
    # Keep a trailing slash (and the one a trailing "." or ".." implies).
    last = segments[-1]
    if (last == "" or last == "." or last == "..") and normalized != "/":
        normalized += "/"
    return normalized


def normalize_path(path: str) -> str:
    """Normalize an origin-form path (no query). Raises InvalidTarget."""
    if not path.startswith("/"):
        raise InvalidTarget("path must start with /")
    if _PATH_OK.fullmatch(path) is None:
        raise InvalidTarget("invalid character in path")
    if "%" in path:
        path = _decode_escapes(path)
    if "/." in path or "//" in path:
        path = _remove_dot_segments(path)
    return path


def split_target(target: str) -> tuple[str, str, str | None]:
    """Split a request-target into (path, query, authority).

    Origin-form ``/p?q`` gives authority None; absolute-form ``http://h/p?q`` gives the
    authority, which replaces Host (RFC 9112 3.2.2). Asterisk-form and authority-form
    are refused here; the caller handles OPTIONS * and CONNECT before calling.
    """
    authority = None
    if not target.startswith("/"):
        lower = target[:8].lower()
        if lower.startswith("http://"):
            rest = target[7:]
        elif lower.startswith("https://"):
            rest = target[8:]
        else:
            raise InvalidTarget("unsupported request-target form")
        slash = rest.find("/")
        qmark = rest.find("?")
        end = len(rest)
        if slash != -1:
            end = slash
        if qmark != -1 and qmark < end:
            end = qmark
        authority = rest[:end]
        target = rest[end:]
        if not target:
            target = "/"
        elif target.startswith("?"):
            target = "/" + target
        if not authority or "@" in authority:
            raise InvalidTarget("invalid authority in absolute-form target")
    if "#" in target:
        raise InvalidTarget("fragment in request-target")
    q = target.find("?")
    if q == -1:
        return target, "", authority
    query = target[q + 1 :]
    if _QUERY_OK.fullmatch(query) is None:
        raise InvalidTarget("invalid character in query")
    return target[:q], query, authority


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%")


_host_cache: dict[str, str | None] = {}


def parse_host(authority: str) -> str | None:
    """Lowercase host without port from a Host value, or None when invalid.

    Memoized: a gateway sees few distinct Host values, and this runs per request. The
    cache stops growing at 4096 entries (a client inventing hosts gets no memory)."""
    try:
        return _host_cache[authority]
    except KeyError:
        pass
    host = _parse_host(authority)
    if len(_host_cache) < 4096:
        _host_cache[authority] = host
    return host


def _parse_host(authority: str) -> str | None:
    if not authority:
        return None
    if authority[0] == "[":  # IPv6 literal
        end = authority.find("]")
        if end == -1:
            return None
        host = authority[: end + 1]
        rest = authority[end + 1 :]
        if rest and (rest[0] != ":" or not rest[1:].isdigit()):
            return None
        return host.lower()
    host, sep, port = authority.partition(":")
    if sep and (not port.isdigit() or len(port) > 5):
        if port != "":
            return None
    if not host:
        return None
    for ch in host:
        if ch not in _HOST_CHARS:
            return None
    return host.lower()


_target_cache: dict[str, tuple[str, str, str | None]] = {}


def parse_target(target: str) -> tuple[str, str, str | None]:
    """(normalized path, query, authority or None) of a request-target, memoized like
    ``parse_host`` (invalid targets raise InvalidTarget and are not remembered)."""
    try:
        return _target_cache[target]
    except KeyError:
        pass
    raw_path, query, authority = split_target(target)
    parsed = (normalize_path(raw_path), query, authority)
    if len(_target_cache) < 8192:
        _target_cache[target] = parsed
    return parsed
