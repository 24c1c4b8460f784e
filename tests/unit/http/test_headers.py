"""Header lists: case-insensitive names, order kept, repeated fields, wire encoding."""

from __future__ import annotations

from meshgate.http.headers import Headers


def sample() -> Headers:
    return Headers.from_pairs(
        [("Host", "example.com"), ("Accept", "text/html"), ("X-Tag", "a"), ("x-tag", "b")]
    )


def test_names_are_case_insensitive_and_stored_lowercase():
    h = sample()
    assert h.get("HOST") == "example.com"
    assert h.get("host") == "example.com"
    assert "ACCEPT" in h
    assert [n for n, _ in h] == ["host", "accept", "x-tag", "x-tag"]


def test_get_returns_the_first_value_or_the_default():
    h = sample()
    assert h.get("x-tag") == "a"
    assert h.get("missing") is None
    assert h.get("missing", "fallback") == "fallback"


def test_get_all_keeps_every_value_in_order():
    h = sample()
    assert h.get_all("X-TAG") == ["a", "b"]
    assert h.get_all("missing") == []
    assert h.get_joined("x-tag") == "a, b"
    assert h.get_joined("missing") is None


def test_values_are_kept_as_received():
    h = Headers.from_pairs([("X-Case", "MiXeD  Value ")])
    assert h.get("x-case") == "MiXeD  Value "


def test_set_replaces_every_value_at_the_first_position():
    h = sample()
    h.set("X-Tag", "c")
    assert h.items() == [("host", "example.com"), ("accept", "text/html"), ("x-tag", "c")]
    h = Headers.from_pairs([("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")])
    h.set("A", "9")
    assert h.items() == [("a", "9"), ("b", "2"), ("c", "4")]


def test_set_appends_a_new_field():
    h = sample()
    h.set("X-New", "1")
    assert h.items()[-1] == ("x-new", "1")
    assert len(h) == 5


def test_add_appends_even_when_the_field_exists():
    h = sample()
    h.add("Accept", "application/json")
    assert h.get_all("accept") == ["text/html", "application/json"]
    assert h.items()[-1] == ("accept", "application/json")


def test_setdefault_only_adds_when_absent():
    h = sample()
    assert h.setdefault("Accept", "x") == "text/html"
    assert h.get_all("accept") == ["text/html"]
    assert h.setdefault("X-Request-Id", "r1") == "r1"
    assert h.get("x-request-id") == "r1"


def test_remove_drops_every_value_and_ignores_missing_fields():
    h = sample()
    h.remove("X-TAG")
    assert "x-tag" not in h
    assert [n for n, _ in h] == ["host", "accept"]
    h.remove("missing")
    assert len(h) == 2


def test_contains_only_answers_for_strings():
    h = sample()
    assert 1 not in h
    assert None not in h


def test_copy_is_independent():
    h = sample()
    c = h.copy()
    c.set("host", "other")
    c.add("x-more", "1")
    assert h.get("host") == "example.com"
    assert "x-more" not in h


def test_encode_gives_field_lines_in_order_with_crlf():
    h = Headers.from_pairs([("Host", "h"), ("X-A", "1"), ("x-a", "2")])
    assert h.encode() == b"host: h\r\nx-a: 1\r\nx-a: 2\r\n"
    assert Headers().encode() == b""


def test_encode_is_latin1():
    # Field values are octets; latin-1 maps each back to the byte it came from.
    h = Headers([("x-name", "caf\xe9")])
    assert h.encode() == b"x-name: caf\xe9\r\n"
