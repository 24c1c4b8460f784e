"""RFC 9111 behaviour of the cache filter, one rule per test, under a fake clock."""

from __future__ import annotations

from cache_driver import T0, make_driver

from meshgate.filters.cache.rfc9111 import (
    format_http_date,
    lifetime,
    parse_cache_control,
)


def cc(value: str, *more: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Cache-Control", value), *more]


async def test_a_fresh_response_is_served_from_the_cache_with_its_age(driver, origin, clock):
    origin.headers = cc("max-age=60")
    first = await driver.request()
    clock.advance(10)
    second = await driver.request()
    assert (first.x_cache, second.x_cache, origin.calls) == ("MISS", "HIT", 1)
    assert second.body == b"hello" and second.headers.get("age") == "10"


async def test_age_adds_the_upstream_age_and_the_time_since_date(driver, origin, clock):
    # Section 4.2.3: the origin said Age 5 and its Date is 3 s old on arrival.
    origin.headers = [("cache-control", "max-age=60"), ("date", format_http_date(T0 - 3)), ("age", "5")]
    await driver.request()
    clock.advance(2)
    assert (await driver.request()).headers.get("age") == "7"


async def test_an_expired_entry_goes_upstream_again(driver, origin, clock):
    origin.headers = cc("max-age=60")
    await driver.request()
    clock.advance(61)
    r = await driver.request()
    assert (r.x_cache, origin.calls) == ("EXPIRED", 2)


async def test_s_maxage_wins_over_max_age_in_a_shared_cache(driver, origin, clock):
    origin.headers = cc("max-age=600, s-maxage=5")
    await driver.request()
    clock.advance(6)
    assert (await driver.request()).x_cache == "EXPIRED"


async def test_expires_minus_date_is_the_lifetime_without_max_age(driver, origin, clock):
    origin.headers = [("date", format_http_date(T0)), ("expires", format_http_date(T0 + 30))]
    await driver.request()
    clock.advance(29)
    assert (await driver.request()).x_cache == "HIT"
    clock.advance(2)
    assert (await driver.request()).x_cache == "EXPIRED"


async def test_no_store_in_the_response_is_never_stored(driver, origin):
    origin.headers = cc("no-store, max-age=60")
    await driver.request()
    assert (await driver.request()).x_cache == "MISS" and origin.calls == 2


async def test_no_store_in_the_request_bypasses_the_cache(driver, origin):
    origin.headers = cc("max-age=60")
    r = await driver.request(headers=[("cache-control", "no-store")])
    assert r.x_cache == "BYPASS"
    assert (await driver.request()).x_cache == "MISS"


async def test_private_is_not_stored_by_a_shared_cache(driver, origin):
    origin.headers = cc("private, max-age=60")
    await driver.request()
    assert (await driver.request()).x_cache == "MISS"


async def test_no_cache_is_stored_but_revalidated_before_every_use(driver, origin):
    origin.headers = cc("no-cache, max-age=60", ("etag", '"v1"'))
    origin.answer = lambda h: (304, cc("no-cache, max-age=60", ("etag", '"v1"')), b"") if h.get("if-none-match") == '"v1"' else (200, origin.headers, b"hello")
    await driver.request()
    r = await driver.request()
    assert (r.status, r.x_cache, r.body, origin.calls) == (200, "REVALIDATED", b"hello", 2)
    assert r.upstream_headers.get("if-none-match") == '"v1"'


async def test_a_request_with_no_cache_goes_upstream(driver, origin):
    origin.headers = cc("max-age=60")
    await driver.request()
    r = await driver.request(headers=[("cache-control", "no-cache")])
    assert r.x_cache == "EXPIRED" and origin.calls == 2
    r = await driver.request(headers=[("pragma", "no-cache")])
    assert origin.calls == 3


async def test_request_max_age_and_min_fresh_limit_what_is_acceptable(driver, origin, clock):
    origin.headers = cc("max-age=60")
    await driver.request()
    clock.advance(20)
    assert (await driver.request(headers=[("cache-control", "max-age=10")])).x_cache == "EXPIRED"
    clock.advance(20)
    assert (await driver.request(headers=[("cache-control", "min-fresh=50")])).x_cache == "EXPIRED"
    assert (await driver.request(headers=[("cache-control", "min-fresh=30")])).x_cache == "HIT"


async def test_max_stale_accepts_a_stale_entry(driver, origin, clock):
    origin.headers = cc("max-age=10")
    await driver.request()
    clock.advance(15)
    r = await driver.request(headers=[("cache-control", "max-stale=10")])
    assert (r.x_cache, origin.calls) == ("STALE", 1)


async def test_only_if_cached_answers_504_when_nothing_is_stored(driver, origin):
    r = await driver.request(headers=[("cache-control", "only-if-cached")])
    assert (r.status, origin.calls) == (504, 0)


async def test_must_revalidate_forbids_serving_stale(driver, origin, clock):
    origin.headers = cc("max-age=10, must-revalidate")
    await driver.request()
    clock.advance(15)
    r = await driver.request(headers=[("cache-control", "max-stale=100")])
    assert r.x_cache == "EXPIRED"


async def test_authorization_requests_are_stored_only_when_the_response_allows(driver, origin):
    auth = [("authorization", "Bearer x")]
    origin.headers = cc("max-age=60")
    await driver.request("/a", headers=auth)
    assert (await driver.request("/a")).x_cache == "MISS"
    origin.headers = cc("public, max-age=60")
    await driver.request("/b", headers=auth)
    assert (await driver.request("/b")).x_cache == "HIT"
    origin.headers = cc("s-maxage=60")
    await driver.request("/c", headers=auth)
    assert (await driver.request("/c")).x_cache == "HIT"


async def test_only_cacheable_statuses_are_stored(driver, origin):
    origin.status, origin.headers = 500, cc("max-age=60")
    await driver.request("/e")
    assert (await driver.request("/e")).x_cache == "MISS"
    origin.status = 404
    await driver.request("/n")
    assert (await driver.request("/n")).x_cache == "HIT"
    origin.status, origin.headers = 302, [("date", format_http_date(T0))]
    await driver.request("/r")  # no explicit freshness: 302 is not heuristically cacheable
    assert (await driver.request("/r")).x_cache == "MISS"


async def test_post_is_not_cached_and_invalidates_the_url(driver, origin):
    origin.headers = cc("max-age=60")
    await driver.request("/a")
    r = await driver.request("/a", method="POST")
    assert r.x_cache is None
    assert (await driver.request("/a")).x_cache == "MISS"


async def test_head_is_answered_from_a_stored_get(driver, origin):
    origin.headers = cc("max-age=60")
    await driver.request()
    r = await driver.request(method="HEAD")
    assert (r.status, r.x_cache, origin.calls) == (200, "HIT", 1)


async def test_a_response_without_freshness_is_not_stored_unless_default_ttl(origin, clock):
    origin.headers = [("date", format_http_date(T0))]
    plain = make_driver(origin, clock)
    await plain.request()
    assert (await plain.request()).x_cache == "MISS"
    ttl = make_driver(origin, clock, default_ttl=30)
    await ttl.request()
    clock.advance(29)
    assert (await ttl.request()).x_cache == "HIT"


async def test_last_modified_heuristic_is_ten_percent_of_its_age(driver, origin, clock):
    origin.headers = [("date", format_http_date(T0)), ("last-modified", format_http_date(T0 - 1000))]
    await driver.request()
    clock.advance(99)
    assert (await driver.request()).x_cache == "HIT"
    clock.advance(2)
    assert (await driver.request()).x_cache == "EXPIRED"


async def test_max_ttl_caps_the_lifetime(origin, clock):
    origin.headers = cc("max-age=3600")
    d = make_driver(origin, clock, max_ttl=10)
    await d.request()
    clock.advance(11)
    assert (await d.request()).x_cache == "EXPIRED"


# -- conditional requests and revalidation -------------------------------------------


async def test_a_clients_conditional_request_to_a_fresh_entry_gets_304(driver, origin):
    origin.headers = cc("max-age=60", ("etag", '"v1"'), ("last-modified", format_http_date(T0 - 100)))
    await driver.request()
    r = await driver.request(headers=[("if-none-match", 'W/"v1"')])
    assert (r.status, r.body, r.headers.get("etag"), r.x_cache) == (304, b"", '"v1"', "HIT")
    r = await driver.request(headers=[("if-modified-since", format_http_date(T0))])
    assert r.status == 304
    r = await driver.request(headers=[("if-none-match", '"v0"')])
    assert (r.status, r.body) == (200, b"hello")


def revalidating_origin(origin, etag='"v1"'):
    def answer(h):
        if h.get("if-none-match") == etag:
            return 304, cc("max-age=60", ("etag", etag), ("x-refreshed", "yes")), b""
        return 200, cc("max-age=60", ("etag", etag)), b"hello"

    origin.answer = answer


async def test_a_stale_entry_is_revalidated_and_a_304_refreshes_it(driver, origin, clock):
    revalidating_origin(origin)
    await driver.request()
    clock.advance(61)
    r = await driver.request()
    assert r.upstream_headers.get("if-none-match") == '"v1"'
    assert (r.status, r.body, r.x_cache, r.headers.get("x-refreshed")) == (200, b"hello", "REVALIDATED", "yes")
    clock.advance(30)
    r = await driver.request()
    assert (r.x_cache, r.headers.get("age"), origin.calls) == ("HIT", "30", 2)


async def test_without_the_engine_passing_304s_a_stale_entry_is_fetched_whole(origin, clock):
    revalidating_origin(origin)
    d = make_driver(origin, clock, passes_304=False)
    await d.request()
    clock.advance(61)
    r = await d.request()
    assert (r.upstream_headers.get("if-none-match"), r.status, r.x_cache) == (None, 200, "EXPIRED")


async def test_a_clients_own_conditional_request_refreshes_a_stale_entry(origin, clock):
    revalidating_origin(origin)
    d = make_driver(origin, clock, passes_304=False)
    await d.request()
    clock.advance(61)
    r = await d.request(headers=[("if-none-match", '"v1"')])
    assert (r.status, r.x_cache) == (304, "REVALIDATED")
    assert (await d.request()).x_cache == "HIT"


# -- RFC 5861 --------------------------------------------------------------------------


async def test_stale_while_revalidate_serves_stale_while_one_request_refreshes(driver, origin, clock):
    origin.headers = cc("max-age=10, stale-while-revalidate=30")
    await driver.request()
    clock.advance(15)
    key = "example.com|/a?"
    driver.cache.flights[key] = __import__("asyncio").get_running_loop().create_future()  # a refresh underway
    r = await driver.request()
    assert (r.x_cache, origin.calls) == ("STALE", 1)
    del driver.cache.flights[key]
    r = await driver.request()  # no refresh underway: this one refreshes
    assert (r.x_cache, origin.calls) == ("EXPIRED", 2)
    assert (await driver.request()).x_cache == "HIT"


async def test_stale_if_error_serves_stale_on_a_5xx(driver, origin, clock):
    origin.headers = cc("max-age=10, stale-if-error=60")
    await driver.request()
    clock.advance(20)
    origin.status, origin.body = 503, b"down"
    r = await driver.request()
    assert (r.status, r.body, r.x_cache) == (200, b"hello", "STALE")
    clock.advance(60)
    r = await driver.request()
    assert (r.status, r.x_cache) == (503, "EXPIRED")


# -- Vary ------------------------------------------------------------------------------


async def test_vary_keeps_one_variant_per_request_value(driver, origin):
    origin.answer = lambda h: (200, cc("max-age=60", ("vary", "Accept-Language")), h.get("accept-language", "").encode())
    await driver.request(headers=[("accept-language", "en")])
    await driver.request(headers=[("accept-language", "fr")])
    en = await driver.request(headers=[("accept-language", "en")])
    fr = await driver.request(headers=[("accept-language", "fr")])
    none = await driver.request()
    assert (en.body, en.x_cache, fr.body, fr.x_cache, none.x_cache) == (b"en", "HIT", b"fr", "HIT", "MISS")


async def test_vary_star_never_matches(driver, origin):
    origin.headers = cc("max-age=60", ("vary", "*"))
    await driver.request()
    assert (await driver.request()).x_cache == "MISS"


# -- parsing ---------------------------------------------------------------------------


def test_cache_control_parsing():
    assert parse_cache_control('max-age="60", No-Cache, private="set-cookie, x"') == {
        "max-age": "60",
        "no-cache": None,
        "private": "set-cookie, x",
    }


def test_an_invalid_max_age_means_stale():
    assert lifetime(200, parse_cache_control("max-age=abc"), T0, None, None, None, None) == 0
