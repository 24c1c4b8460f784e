"""TransformPolicy: templates, JSON paths, the model's checks, each filter, and whole
requests through a real Engine."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from meshgate.config.models.transform_policy import TransformPolicySpec
from meshgate.filters.base import overrides
from meshgate.filters.transform import build
from meshgate.filters.transform.jsonpath import parse_path, remove, rename, set_value
from meshgate.filters.transform.template import MISSING, TemplateError, parse
from meshgate.http.headers import Headers
from meshgate.proxy.context import RequestContext, ResponseHead


class REFS:
    key = "default/transform"


TARGET = {
    "targetRefs": [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api"}
    ]
}


def spec(**fields) -> TransformPolicySpec:
    return TransformPolicySpec.model_validate({**TARGET, **fields})


def ctx(
    method="GET", path="/p", query="", headers=(), claims=None, consumer=None
) -> RequestContext:
    c = RequestContext(
        method,
        path,
        path,
        query,
        Headers.from_pairs(headers),
        "h",
        "h",
        "http",
        "1.1",
        "10.0.0.1",
        1,
        80,
        "rid-1",
        0.0,
    )
    c.claims, c.consumer = claims, consumer
    return c


# --- templates ---------------------------------------------------------------------------


def test_templates_render_values_and_escapes():
    c = ctx(
        query="x=a%20b&y=2",
        headers=[("X-Foo", "foo")],
        claims={"sub": "u1", "org": {"id": 7}, "roles": ["a", "b"], "ok": True},
        consumer="acme",
    )
    assert (
        parse("{header.x-foo}/{claim.sub}/{consumer}/{query.x}").render(c)
        == "foo/u1/acme/a b"
    )
    assert (
        parse("{claim.org.id} {claim.roles} {claim.ok} {claim.org}").render(c)
        == '7 a,b true {"id":7}'
    )
    assert parse("{{literal}} {{{claim.sub}}}").render(c) == "{literal} {u1}"
    assert (
        parse("{method} {path} {client_ip} {request_id}").render(c)
        == "GET /p 10.0.0.1 rid-1"
    )


def test_a_missing_value_skips_unless_defaulted():
    c = ctx()
    assert parse("user={claim.sub}").render(c) is MISSING
    assert parse("user={claim.sub|anonymous}").render(c) == "user=anonymous"
    assert parse("{header.x-none|}").render(c) == ""
    assert parse("{claim.roles}").value(ctx(claims={"roles": ["a"]})) == [
        "a"
    ]  # keeps its type


def test_control_characters_never_reach_a_header():
    assert parse("{claim.sub}").render(ctx(claims={"sub": "a\r\nx-evil: 1"})) is MISSING


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{nope}", "unknown value {nope}"),
        ("{header.}", "not a valid header name"),
        ("a } b", "unmatched '}'"),
        ("{claim.sub", "unmatched '{'"),
        ("{status}", "only available in a response section"),
        ("{response_header.etag}", "only available in a response section"),
        ("{claim..x}", "dotted path"),
    ],
)
def test_template_errors(text, message):
    with pytest.raises(TemplateError, match=message):
        parse(text)


# --- JSON paths --------------------------------------------------------------------------


def test_paths_set_remove_rename_nested_and_arrays():
    doc = {
        "a": {"b": 1},
        "items": [{"id": 1, "secret": "s"}, {"id": 2, "secret": "t"}],
        "k.dot": 1,
    }
    remove(doc, parse_path("items.*.secret"))
    remove(doc, parse_path("/k.dot"))
    rename(doc, parse_path("items.*.id"), parse_path("items.*.sku"))
    rename(doc, parse_path("a.b"), parse_path("/c/d"))
    set_value(doc, parse_path("meta.tags.-", allow_append=True), "x")
    set_value(doc, parse_path("items.0.first"), True)
    set_value(doc, parse_path("items.9.never"), 1)  # past the end: skipped
    set_value(doc, parse_path("c.d.deeper"), 1)  # c.d is a number: not replaced
    assert doc == {
        "a": {},
        "items": [{"sku": 1, "first": True}, {"sku": 2}],
        "c": {"d": 1},
        "meta": {"tags": ["x"]},
    }


def test_path_errors():
    for text, allow_append in (
        ("", False),
        ("a..b", False),
        ("a.-.b", True),
        ("a.-", False),
        ("/a/~2", False),
    ):
        with pytest.raises(ValueError):
            parse_path(text, allow_append=allow_append)


# --- the model ---------------------------------------------------------------------------


def test_model_errors_name_the_field():
    with pytest.raises(ValueError, match="at least one of request or response"):
        spec(request={})
    with pytest.raises(ValueError, match="managed by the proxy"):
        spec(request={"headers": {"set": [{"name": "Content-Length", "value": "1"}]}})
    with pytest.raises(ValidationError) as info:
        spec(request={"headers": {"set": [{"name": "x", "value": "{status}"}]}})
    (error,) = info.value.errors()
    assert error["loc"] == ("request",)
    assert error["ctx"]["error"].subpath == ("headers", "set", 0, "value")
    with pytest.raises(ValueError, match="same path with another last segment"):
        spec(request={"body": {"rename": [{"from": "a.*.b", "to": "c.d"}]}})
    with pytest.raises(ValueError, match="unknown value"):
        spec(response={"body": {"set": [{"path": "a", "value": {"x": ["{bogus}"]}}]}})


def test_header_only_policies_do_not_buffer():
    filters = build(
        spec(
            request={"headers": {"set": [{"name": "x-a", "value": "1"}]}},
            response={"headers": {"remove": ["server"]}},
        ),
        REFS,
    )
    assert [f.name for f in filters] == [
        "transform-request",
        "transform-response-headers",
    ]
    assert not any(
        overrides(f, "on_request_body") or overrides(f, "on_response_body")
        for f in filters
    )
    filters = build(
        spec(
            request={"body": {"remove": ["a"]}},
            response={"body": {"remove": ["b"]}},
            maxBodyBytes=100,
        ),
        REFS,
    )
    assert [f.body_limit for f in filters] == [100, 100]


# --- filters -----------------------------------------------------------------------------


def test_request_headers_and_query():
    (f,) = build(
        spec(
            request={
                "headers": {
                    "remove": ["x-internal"],
                    "set": [{"name": "x-user", "value": "{claim.sub}"}],
                    "add": [{"name": "x-via", "value": "gw {route|none}"}],
                },
                "queryParams": {
                    "remove": ["debug"],
                    "set": [{"name": "tenant", "value": "{claim.org.id}"}],
                    "add": [{"name": "from", "value": "a&b"}],
                },
            }
        ),
        REFS,
    )
    c = ctx(
        query="debug=1&keep=a+b&tenant=evil",
        headers=[("x-internal", "1"), ("x-user", "spoofed")],
        claims={"sub": "u1", "org": {"id": 9}},
    )
    assert f.on_request(c) is None
    assert c.headers.items() == [("x-user", "u1"), ("x-via", "gw none")]
    assert c.target() == "/p?keep=a+b&tenant=9&from=a%26b"
    c = ctx(
        query="tenant=evil", headers=[("x-user", "spoofed")]
    )  # no claims: nothing of the client's stands in
    f.on_request(c)
    assert "x-user" not in c.headers and c.target() == "/p?from=a%26b"


def test_query_edits_follow_an_earlier_rewrite():
    (f,) = build(
        spec(request={"queryParams": {"add": [{"name": "v", "value": "2"}]}}), REFS
    )
    c = ctx(query="a=1")
    c.upstream_path = "/rewritten?a=1"
    f.on_request(c)
    assert c.target() == "/rewritten?a=1&v=2"


def test_request_body_edits_and_refusals():
    (f,) = build(
        spec(
            request={
                "body": {
                    "remove": ["password"],
                    "rename": [{"from": "user", "to": "account.name"}],
                    "set": [
                        {
                            "path": "meta",
                            "value": {
                                "by": "{claim.sub}",
                                "roles": "{claim.roles}",
                                "n": 1,
                            },
                        }
                    ],
                }
            }
        ),
        REFS,
    )
    c = ctx(
        "POST",
        headers=[("content-type", "application/json")],
        claims={"sub": "u1", "roles": ["r"]},
    )
    out = f.on_request_body(c, b'{"user": "bob", "password": "pw"}')
    assert json.loads(out) == {
        "account": {"name": "bob"},
        "meta": {"by": "u1", "roles": ["r"], "n": 1},
    }
    assert f.on_request_body(c, b"") is None
    assert f.on_request_body(c, b"{oops").status == 400
    reply = f.on_request_body(
        ctx("POST", headers=[("content-type", "text/plain")]), b"hi"
    )
    assert reply.status == 415 and json.loads(reply.body)["status"] == 415
    # a value missing: that one edit is skipped, the rest applies
    assert json.loads(f.on_request_body(ctx("POST"), b'{"password": 1}')) == {}


def test_response_headers_and_body():
    filters = build(
        spec(
            response={
                "headers": {
                    "set": [
                        {"name": "x-status", "value": "{status}"},
                        {"name": "x-etag", "value": "{response_header.etag}"},
                    ]
                },
                "body": {
                    "remove": ["internal"],
                    "set": [{"path": "requestId", "value": "{request_id}"}],
                },
            }
        ),
        REFS,
    )
    head = ResponseHead(
        200,
        "OK",
        Headers(
            [("content-type", "application/json; charset=utf-8"), ("etag", '"v1"')]
        ),
    )
    c = ctx()
    filters[0].on_response(c, head)
    assert (head.headers.get("x-status"), head.headers.get("x-etag")) == ("200", '"v1"')
    assert json.loads(
        filters[1].on_response_body(c, head, b'{"internal": 1, "a": 2}')
    ) == {"a": 2, "requestId": "rid-1"}
    assert (
        filters[1].on_response_body(c, head, b"not json") is None
    )  # passed on, logged
    html = ResponseHead(200, "OK", Headers([("content-type", "text/html")]))
    assert filters[1].on_response_body(c, html, b"<p>") is None


async def test_through_the_engine(gateway_with):
    filters = build(
        spec(
            request={
                "headers": {"set": [{"name": "x-route", "value": "{route}"}]},
                "queryParams": {"add": [{"name": "v", "value": "2"}]},
                "body": {"set": [{"path": "added", "value": True}]},
            },
            response={
                "headers": {
                    "add": [{"name": "x-seen", "value": "{header.x-client|none}"}]
                },
                "body": {"remove": ["headers"]},
            },
        ),
        REFS,
    )
    async with gateway_with(filters) as (client, upstream):
        r = await client.post("/echo?a=1", json={"x": 1}, headers={"x-client": "c1"})
        assert r.status_code == 200 and r.headers["x-seen"] == "c1"
        got = r.json()
        assert "headers" not in got and got["target"] == "/echo?a=1&v=2"
        assert json.loads(got["body"]) == {"x": 1, "added": True}
        sent = {k.lower(): v for k, v in upstream.seen[0].fields}
        assert sent["x-route"] == "default/r" and sent["content-length"] == str(
            len(got["body"])
        )
        r = await client.post(
            "/echo", content=b"{bad", headers={"content-type": "application/json"}
        )
        assert (
            r.status_code == 400
            and r.headers["content-type"] == "application/problem+json"
        )
        r = await client.post(
            "/raw", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400  # the request transform refused it first
        assert len(upstream.seen) == 1


async def test_response_body_over_the_limit_is_502(gateway_with):
    filters = build(spec(response={"body": {"remove": ["a"]}}, maxBodyBytes=64), REFS)
    async with gateway_with(filters) as (client, _):
        assert (
            await client.post(
                "/raw",
                content=b'{"a": 1, "b": 2}',
                headers={"content-type": "application/json"},
            )
        ).json() == {"b": 2}
        r = await client.post(
            "/raw",
            content=b'{"a": "' + b"x" * 100 + b'"}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 502
        r = await client.post(
            "/raw", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert (r.status_code, r.content) == (200, b"{not json")


def test_the_docs_show_the_example_policy():
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[4]
    shown = yaml.safe_load(
        re.search(
            r"```yaml\n(.*?)```",
            (root / "docs" / "transform.md").read_text(),
            re.DOTALL,
        ).group(1)
    )
    docs = yaml.safe_load_all(
        (root / "examples" / "transform" / "policy.yaml").read_text()
    )
    assert shown == next(d for d in docs if d["kind"] == "TransformPolicy")
