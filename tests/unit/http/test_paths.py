"""Request-target parsing and path normalization: what routes see, and what is refused
with 400 before any route matches."""

from __future__ import annotations

import pytest

from meshgate.http.paths import InvalidTarget, normalize_path, parse_host, split_target

# --- normalize_path -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),  # a trailing slash is kept: /a/ and /a are different routes
        # dot segments (RFC 3986 5.2.4); nothing climbs above /
        ("/a/./b/../c", "/a/c"),
        ("/public/../private", "/private"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/..", "/"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/a/.b/..c", "/a/.b/..c"),  # only whole segments are dot segments
        # runs of / merge
        ("//", "/"),
        ("/a//b///c", "/a/b/c"),
        ("//a/b//", "/a/b/"),
    ],
)
def test_dot_segments_and_slashes(raw, normalized):
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        # unreserved characters (ALPHA DIGIT - . _ ~) are decoded
        ("/%7Euser/%61%62%2D%5F", "/~user/ab-_"),
        ("/%41%42", "/AB"),
        # an encoded dot is a dot: it cannot be used to hide a dot segment
        ("/a/%2e%2E/b", "/b"),
        ("/a/%2e/b", "/a/b"),
        # other escapes stay encoded, with uppercase hex
        ("/a%3ab", "/a%3Ab"),
        ("/a%25b", "/a%25b"),  # %25 is "%": decoding it would create a new escape
        ("/caf%c3%a9", "/caf%C3%A9"),
        # escaped slash and backslash never act as separators
        ("/a%2fb", "/a%2Fb"),
        ("/a%2Fb", "/a%2Fb"),
        ("/a%5cb", "/a%5Cb"),
        ("/a%2Fb/../c", "/c"),  # "a%2Fb" is one segment, popped whole
    ],
)
def test_percent_encoding(raw, normalized):
    assert normalize_path(raw) == normalized


def test_escaped_slash_does_not_reach_a_route_for_the_unescaped_path():
    assert normalize_path("/api%2Fadmin") != normalize_path("/api/admin")


def test_normalizing_twice_changes_nothing():
    for raw in ("/a/./b/../c//d/", "/%7e%2f%5c/x", "/a%2Fb/.."):
        once = normalize_path(raw)
        assert normalize_path(once) == once


@pytest.mark.parametrize(
    "raw",
    [
        "/a%",  # truncated escapes
        "/a%2",
        "/a%zz",  # not hex
        "/a%g1",
        "/a b",  # space
        "/a\x00b",  # controls
        "/a\tb",
        "/a\x7fb",
        "/caf\u00e9",  # non-ASCII
        "/\u2215etc",
        "/a<b",  # not pchar
        '/a"b',
        "/a\\b",
        "/a#frag",
        "a/b",  # not origin-form
        "",
    ],
)
def test_invalid_paths_are_refused(raw):
    with pytest.raises(InvalidTarget):
        normalize_path(raw)


def test_invalid_target_is_a_value_error():
    # Callers that only know ValueError still see the refusal.
    with pytest.raises(ValueError):
        normalize_path("/%")


# --- split_target ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        ("/p", ("/p", "", None)),
        ("/p?q=1&r=2", ("/p", "q=1&r=2", None)),
        ("/p?", ("/p", "", None)),
        ("/p?a=b?c", ("/p", "a=b?c", None)),  # only the first ? separates
        ("/p?a=[]{}|^`", ("/p", "a=[]{}|^`", None)),  # passed on as received
        ("/a/../b?x", ("/a/../b", "x", None)),  # split only; normalizing is separate
    ],
)
def test_origin_form(target, parts):
    assert split_target(target) == parts


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        ("http://example.com/p?q", ("/p", "q", "example.com")),
        ("http://Example.com:8080/p", ("/p", "", "Example.com:8080")),
        ("HTTP://h/a", ("/a", "", "h")),
        ("https://h/a", ("/a", "", "h")),
        ("http://h", ("/", "", "h")),  # empty path is /
        ("http://h?x=1", ("/", "x=1", "h")),
        ("http://[::1]:8080/p", ("/p", "", "[::1]:8080")),
    ],
)
def test_absolute_form_gives_the_authority(target, parts):
    assert split_target(target) == parts


@pytest.mark.parametrize(
    "target",
    [
        "/p#frag",  # fragments are never sent by a client (RFC 9112 3.2)
        "/p?q#frag",
        "http://h/p#frag",
        "http://user@h/p",  # userinfo is refused
        "http:///p",  # empty authority
        "ftp://h/p",  # other schemes
        "h:443",  # authority-form (CONNECT) is handled before
        "*",  # asterisk-form (OPTIONS *) is handled before
        "p",
        "/p?a b",  # space, controls, DEL, non-ASCII in the query
        "/p?a=\x01",
        "/p?a=\x7f",
        "/p?caf\u00e9",
    ],
)
def test_refused_targets(target):
    with pytest.raises(InvalidTarget):
        split_target(target)


# --- parse_host -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),  # lowercase
        ("example.com:8080", "example.com"),  # port dropped
        ("example.com:", "example.com"),  # empty port (RFC 3986 3.2.3)
        ("1.2.3.4:80", "1.2.3.4"),
        ("localhost", "localhost"),
        ("[::1]", "[::1]"),  # IPv6 literal keeps its brackets
        ("[::1]:8080", "[::1]"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
    ],
)
def test_valid_hosts(authority, host):
    assert parse_host(authority) == host


@pytest.mark.parametrize(
    "authority",
    [
        "",
        ":80",  # no host
        "example.com:abc",  # port not a number
        "example.com:123456",  # port longer than 5 digits
        "example.com:80:90",
        "a b",
        "exa/mple.com",
        "user@example.com",
        "[::1",  # unterminated IPv6 literal
        "[::1]x",
        "[::1]:x",
    ],
)
def test_invalid_hosts(authority):
    assert parse_host(authority) is None


def test_repeated_lookups_give_the_same_answer():
    # parse_host runs per request; whatever it caches must not change the answer.
    for _ in range(3):
        assert parse_host("A.example:1") == "a.example"
        assert parse_host("bad host") is None
