"""ValidationPolicy: the model, the OpenAPI compile (config errors with pointers), each
rule on a RequestContext, and whole requests through a real Engine."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import yaml

from meshgate.config.models.validation_policy import ValidationPolicySpec
from meshgate.filters.base import overrides
from meshgate.filters.validation import build
from meshgate.filters.validation.filters import OPERATION_VAR
from meshgate.http.headers import Headers
from meshgate.proxy.context import RequestContext

EXAMPLE = (
    Path(__file__).resolve().parents[4]
    / "examples"
    / "validation"
    / "openapi"
    / "petstore.yaml"
)
TARGET = {
    "targetRefs": [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api"}
    ]
}


def spec(**fields) -> ValidationPolicySpec:
    return ValidationPolicySpec.model_validate({**TARGET, **fields})


def petstore(fake_refs, **openapi):
    refs = fake_refs({"petstore": {"openapi.yaml": EXAMPLE.read_text()}})
    filters = build(
        spec(
            openapi={"configMapRef": {"name": "petstore"}, "basePath": "/v1", **openapi}
        ),
        refs,
    )
    assert refs.errors == []
    return filters


def ctx(method: str, path: str, query: str = "", headers=()) -> RequestContext:
    return RequestContext(
        method,
        path,
        path,
        query,
        Headers.from_pairs(headers),
        "h",
        "h",
        "http",
        "1.1",
        "127.0.0.1",
        1,
        80,
        "rid",
        0.0,
    )


def run(filters, c: RequestContext, body: bytes | None = None):
    """on_request, then (with a body) on_request_body: the reply or None."""
    reply = filters[0].on_request(c)
    if reply is not None or body is None:
        return reply
    for f in filters[1:]:
        reply = f.on_request_body(c, body)
        if reply is not None:
            return reply
    return None


def problem(reply) -> dict:
    assert ("content-type", "application/problem+json") in reply.headers
    doc = json.loads(reply.body)
    assert doc["status"] == reply.status and doc["type"] == "about:blank"
    return doc


JSON = [("content-type", "application/json"), ("content-length", "1")]


# --- the model -----------------------------------------------------------------------


def test_exactly_one_source_is_required():
    with pytest.raises(ValueError, match="exactly one of openapi or jsonSchema"):
        spec()
    with pytest.raises(ValueError, match="exactly one of inline or configMapRef"):
        spec(openapi={"basePath": "/v1"})
    with pytest.raises(ValueError, match="basePath"):
        spec(openapi={"inline": {}, "basePath": "v1/"})


# --- compile errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"swagger": "2.0", "paths": {}},
            "OpenAPI 3.0.x or 3.1.x is required, found swagger 2.0",
        ),
        ({"openapi": "3.0.3"}, "at /paths: the document has no paths"),
        (
            {
                "openapi": "3.1.0",
                "paths": {
                    "/a": {
                        "get": {
                            "parameters": [{"$ref": "#/components/parameters/Nope"}]
                        }
                    }
                },
            },
            "at /paths/~1a/get/parameters/0: $ref '#/components/parameters/Nope' does not resolve",
        ),
        (
            {
                "openapi": "3.1.0",
                "paths": {
                    "/a": {
                        "post": {
                            "requestBody": {
                                "content": {
                                    "application/json": {
                                        "schema": {"$ref": "other.yaml#/X"}
                                    }
                                }
                            }
                        }
                    }
                },
            },
            "only references inside the document",
        ),
        (
            {
                "openapi": "3.1.0",
                "paths": {
                    "/a": {
                        "get": {
                            "parameters": [
                                {
                                    "name": "n",
                                    "in": "query",
                                    "schema": {"type": "integr"},
                                }
                            ]
                        }
                    }
                },
            },
            "at /paths/~1a/get/parameters/0/schema: invalid schema at /type",
        ),
        (
            {
                "openapi": "3.1.0",
                "paths": {
                    "/a/{id}": {
                        "get": {
                            "parameters": [
                                {"name": "x", "in": "path", "required": True}
                            ]
                        }
                    }
                },
            },
            "path parameter 'x' is not in the path template",
        ),
    ],
)
def test_a_document_that_does_not_compile_is_a_config_error_with_its_pointer(
    fake_refs, document, message
):
    refs = fake_refs()
    assert build(spec(openapi={"inline": document}), refs) == ()
    ((path, text),) = refs.errors
    assert path == ("spec", "openapi", "inline")
    assert message in text


def test_a_missing_configmap_or_key_is_a_config_error(fake_refs):
    refs = fake_refs({"petstore": {"other": ""}})
    assert build(spec(openapi={"configMapRef": {"name": "nope"}}), refs) == ()
    assert build(spec(openapi={"configMapRef": {"name": "petstore"}}), refs) == ()
    assert [p for p, _ in refs.errors] == [
        ("spec", "openapi", "configMapRef"),
        ("spec", "openapi", "configMapRef", "key"),
    ]
    assert "no key 'openapi.yaml'" in refs.errors[1][1]


def test_an_invalid_json_schema_is_a_config_error(fake_refs):
    refs = fake_refs()
    assert build(spec(jsonSchema={"schema": {"type": "objekt"}}), refs) == ()
    assert refs.errors[0][0] == ("spec", "jsonSchema", "schema")


def test_only_operations_with_bodies_add_a_body_hook(fake_refs):
    refs = fake_refs()
    doc = {"openapi": "3.1.0", "paths": {"/a": {"get": {}}}}
    (only,) = build(spec(openapi={"inline": doc}), refs)
    assert overrides(only, "on_request") and not overrides(only, "on_request_body")
    _first, body = petstore(fake_refs, rejectUnknownOperations=True)
    assert overrides(body, "on_request_body") and not overrides(body, "on_request")


def test_inline_text_documents_and_dates_stay_strings(fake_refs):
    doc = "openapi: 3.1.0\npaths:\n  /d:\n    get:\n      parameters:\n        - {name: day, in: query, schema: {enum: [2024-01-01]}}\n"
    (f,) = build(spec(openapi={"inline": doc}), fake_refs())
    assert f.on_request(ctx("GET", "/d", "day=2024-01-01")) is None
    assert f.on_request(ctx("GET", "/d", "day=2024-01-02")).status == 400


# --- operations ---------------------------------------------------------------------------


def test_unknown_paths_are_400_or_404_and_known_paths_with_another_method_405(
    fake_refs,
):
    filters = petstore(fake_refs)
    doc = problem(run(filters, ctx("GET", "/v1/owners")))
    assert doc["status"] == 400 and "GET /v1/owners" in doc["detail"]
    assert run(filters, ctx("GET", "/elsewhere/pets")).status == 400  # outside basePath
    reply = run(filters, ctx("PUT", "/v1/pets"))
    assert reply.status == 405 and ("allow", "GET, POST") in reply.headers
    assert (
        run(
            petstore(fake_refs, unknownOperationStatus=404), ctx("GET", "/v1/owners")
        ).status
        == 404
    )


def test_unknown_operations_pass_when_not_rejected(fake_refs):
    filters = petstore(fake_refs, rejectUnknownOperations=False)
    assert run(filters, ctx("GET", "/v1/owners")) is None
    assert run(filters, ctx("PUT", "/v1/pets")) is None


def test_concrete_paths_win_and_head_is_get():
    from meshgate.filters.validation.openapi import compile_document

    table = compile_document(
        {
            "openapi": "3.1.0",
            "paths": {
                "/p/{id}": {"get": {}},
                "/p/mine": {"post": {}},
                "/p/{id}/x.{ext}": {"get": {}},
            },
        }
    )
    assert table.match("/p/mine")[0].template == "/p/mine"
    assert table.match("/p/7") == (table.templated[-1], {"id": "7"})
    assert table.match("/p/a%20b/x.json")[1] == {"id": "a b", "ext": "json"}
    assert table.match("/p/7/") is None


# --- parameters ---------------------------------------------------------------------------


def test_path_parameters_are_typed_and_bounded(fake_refs):
    filters = petstore(fake_refs)
    assert run(filters, ctx("GET", "/v1/pets/42")) is None
    for value, detail in (
        ("abc", '"abc" is not of type "integer"'),
        ("0", "0 is less than the minimum of 1"),
    ):
        doc = problem(run(filters, ctx("GET", f"/v1/pets/{value}")))
        assert doc["errors"] == [{"in": "path", "name": "petId", "detail": detail}]
    # int64: the format bounds the integer
    assert run(filters, ctx("GET", f"/v1/pets/{2**63}")).status == 400


def test_query_parameters_each_failure_named(fake_refs):
    filters = petstore(fake_refs)
    assert (
        run(filters, ctx("GET", "/v1/pets", "limit=5&status=sold&tag=a&tag=b")) is None
    )
    doc = problem(run(filters, ctx("GET", "/v1/pets", "limit=500&status=lost&tag=")))
    assert [(e["in"], e["name"]) for e in doc["errors"]] == [
        ("query", "limit"),
        ("query", "status"),
        ("query", "tag"),
    ]
    assert doc["errors"][2]["pointer"] == "#/0"  # the first tag is empty
    assert "100" in doc["errors"][0]["detail"]


def test_query_styles_arrays_and_deep_objects():
    from meshgate.filters.validation.filters import OperationValidation
    from meshgate.filters.validation.openapi import compile_document

    doc = {
        "openapi": "3.1.0",
        "paths": {
            "/s": {
                "get": {
                    "parameters": [
                        {
                            "name": "ids",
                            "in": "query",
                            "explode": False,
                            "schema": {"type": "array", "items": {"type": "integer"}},
                        },
                        {
                            "name": "f",
                            "in": "query",
                            "style": "deepObject",
                            "schema": {
                                "type": "object",
                                "properties": {"min": {"type": "number"}},
                                "additionalProperties": False,
                            },
                        },
                        {
                            "name": "q",
                            "in": "query",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "object", "required": ["a"]}
                                }
                            },
                        },
                        {
                            "name": "flag",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "boolean"},
                        },
                    ]
                }
            }
        },
    }
    f = OperationValidation(compile_document(doc), "", True, 400, 10, False)
    assert (
        f.on_request(
            ctx("GET", "/s", "ids=1,2,3&f[min]=1.5&q=%7B%22a%22%3A1%7D&flag=true")
        )
        is None
    )
    errors = problem(f.on_request(ctx("GET", "/s", "ids=1,x&f[max]=1&q=%7B%7D")))[
        "errors"
    ]
    assert {(e["name"], e.get("pointer")) for e in errors} == {
        ("ids", "#/1"),
        ("f", None),
        ("q", None),
        ("flag", None),
    }
    assert {
        "in": "query",
        "name": "flag",
        "detail": "required parameter is missing",
    } in errors


def test_header_and_cookie_parameters(fake_refs):
    filters = petstore(fake_refs)
    doc = problem(run(filters, ctx("DELETE", "/v1/pets/1")))
    assert doc["errors"] == [
        {"in": "header", "name": "x-reason", "detail": "required parameter is missing"}
    ]
    assert (
        run(filters, ctx("DELETE", "/v1/pets/1", headers=[("X-Reason", "sold out")]))
        is None
    )
    c = ctx("POST", "/v1/pets", headers=[*JSON, ("idempotency-key", "not-a-uuid")])
    assert problem(run(filters, c))["errors"][0]["name"] == "idempotency-key"

    from meshgate.filters.validation.filters import OperationValidation
    from meshgate.filters.validation.openapi import compile_document

    table = compile_document(
        {
            "openapi": "3.1.0",
            "paths": {
                "/c": {
                    "get": {
                        "parameters": [
                            {
                                "name": "session",
                                "in": "cookie",
                                "required": True,
                                "schema": {
                                    "type": "string",
                                    "pattern": "^[a-f0-9]{8}$",
                                },
                            }
                        ]
                    }
                }
            },
        }
    )
    f = OperationValidation(table, "", True, 400, 10, False)
    assert (
        f.on_request(ctx("GET", "/c", headers=[("cookie", "a=1; session=deadbeef")]))
        is None
    )
    assert (
        f.on_request(ctx("GET", "/c", headers=[("cookie", "session=nope")])).status
        == 400
    )


# --- bodies --------------------------------------------------------------------------------


def test_a_valid_body_passes_and_read_only_fields_are_not_required(fake_refs):
    filters = petstore(fake_refs)
    c = ctx("POST", "/v1/pets", headers=JSON)
    assert (
        run(filters, c, b'{"name": "Rex", "status": "available", "owner": null}')
        is None
    )
    assert c.vars[OPERATION_VAR].label == "POST /pets"


def test_body_failures_name_each_field_by_json_pointer(fake_refs):
    filters = petstore(fake_refs)
    body = b'{"name": "", "status": "lost", "tags": ["ok", ""], "owner": {"email": "nope"}, "extra": 1}'
    doc = problem(run(filters, ctx("POST", "/v1/pets", headers=JSON), body))
    assert doc["detail"] == "request body does not match POST /pets"
    pointers = sorted(e["pointer"] for e in doc["errors"])
    assert pointers == ["#", "#/name", "#/owner/email", "#/status", "#/tags/1"]
    assert all(e["in"] == "body" for e in doc["errors"])


def test_missing_required_field_and_nullable(fake_refs):
    filters = petstore(fake_refs)
    doc = problem(
        run(
            filters,
            ctx("POST", "/v1/pets", headers=JSON),
            b'{"name": "Rex", "status": null}',
        )
    )
    assert {e["pointer"] for e in doc["errors"]} == {"#/status"}  # type and enum
    doc = problem(
        run(filters, ctx("POST", "/v1/pets", headers=JSON), b'{"name": "Rex"}')
    )
    assert "status" in doc["errors"][0]["detail"]


def test_not_json_empty_and_wrong_media_type(fake_refs):
    filters = petstore(fake_refs)
    doc = problem(run(filters, ctx("POST", "/v1/pets", headers=JSON), b"{nope"))
    assert doc["status"] == 400 and doc["detail"].startswith(
        "request body is not valid JSON"
    )
    doc = problem(run(filters, ctx("POST", "/v1/pets", headers=JSON), b""))
    assert doc["detail"] == "POST /pets requires a request body"
    reply = run(
        filters,
        ctx(
            "POST",
            "/v1/pets",
            headers=[("content-type", "text/plain"), ("content-length", "3")],
        ),
        b"abc",
    )
    assert reply.status == 415 and ("accept-post", "application/json") in reply.headers
    # +json media types and declared non-JSON media types
    patch = [("content-type", "application/merge-patch+json"), ("content-length", "1")]
    assert (
        run(filters, ctx("PATCH", "/v1/pets/1", headers=patch), b'{"name": "Max"}')
        is None
    )
    assert run(filters, ctx("PATCH", "/v1/pets/1", headers=patch), b"{}").status == 400
    png = [("content-type", "image/png"), ("content-length", "4")]
    assert run(filters, ctx("PUT", "/v1/pets/1/photo", headers=png), b"\x89PNG") is None


def test_errors_are_capped(fake_refs):
    doc = {
        "openapi": "3.1.0",
        "paths": {
            "/b": {
                "post": {
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {"type": "integer"},
                                }
                            }
                        }
                    }
                }
            }
        },
    }
    filters = build(spec(openapi={"inline": doc}, maxErrors=3), fake_refs())
    out = problem(
        run(filters, ctx("POST", "/b", headers=JSON), orjson.dumps(["x" * 5000] * 50))
    )
    assert len(out["errors"]) == 3 and out["omittedErrors"] == 1
    assert all(len(e["detail"]) <= 200 for e in out["errors"])


def test_openapi_30_exclusive_bounds_and_31_type_lists(fake_refs):
    for version, schema in (
        ("3.0.3", {"type": "number", "minimum": 0, "exclusiveMinimum": True}),
        ("3.1.0", {"type": ["number", "null"], "exclusiveMinimum": 0}),
    ):
        doc = {
            "openapi": version,
            "paths": {
                "/n": {
                    "get": {
                        "parameters": [{"name": "x", "in": "query", "schema": schema}]
                    }
                }
            },
        }
        (f,) = build(spec(openapi={"inline": doc}), fake_refs())
        assert f.on_request(ctx("GET", "/n", "x=0.5")) is None
        assert f.on_request(ctx("GET", "/n", "x=0")).status == 400


def test_plain_json_schema_for_bodies(fake_refs):
    (f,) = build(
        spec(jsonSchema={"schema": {"type": "object", "required": ["sku"]}}),
        fake_refs(),
    )
    assert f.on_request_body(ctx("GET", "/any"), b"") is None  # GET is not in methods
    assert f.on_request_body(ctx("POST", "/any", headers=JSON), b'{"sku": "a"}') is None
    assert (
        problem(f.on_request_body(ctx("POST", "/any", headers=JSON), b"{}"))["errors"][
            0
        ]["pointer"]
        == "#"
    )
    assert f.on_request_body(ctx("PUT", "/any", headers=JSON), b"").status == 400
    assert (
        f.on_request_body(
            ctx("POST", "/any", headers=[("content-type", "text/csv")]), b"a,b"
        ).status
        == 415
    )


# --- through a real Engine ---------------------------------------------------------------


async def test_through_the_engine_failures_are_not_forwarded(fake_refs, gateway_with):
    async with gateway_with(petstore(fake_refs)) as (client, upstream):
        r = await client.post("/v1/pets", json={"name": "Rex", "status": "sold"})
        assert r.status_code == 200 and json.loads(r.json()["body"]) == {
            "name": "Rex",
            "status": "sold",
        }
        r = await client.post("/v1/pets", json={"name": "Rex", "status": "eaten"})
        assert (
            r.status_code == 400
            and r.headers["content-type"] == "application/problem+json"
        )
        assert r.json()["errors"][0]["pointer"] == "#/status"
        r = await client.get("/v1/pets", params={"limit": "x"})
        assert r.status_code == 400
        r = await client.post(
            "/v1/pets",
            content=b"x" * (1024 * 1024 + 1),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        r = await client.get("/v1/pets/7")
        assert r.status_code == 200
        assert [s.target for s in upstream.seen] == ["/v1/pets", "/v1/pets/7"]


async def test_the_body_limit_comes_from_max_body_bytes(fake_refs, gateway_with):
    filters = build(spec(jsonSchema={"schema": True}, maxBodyBytes=16), fake_refs())
    async with gateway_with(filters) as (client, upstream):
        assert (await client.post("/", json={"a": 1})).status_code == 200
        assert (await client.post("/", json={"a": "x" * 20})).status_code == 413
        assert len(upstream.seen) == 1


def test_example_configmap_holds_the_example_document():
    docs = list(yaml.safe_load_all((EXAMPLE.parent.parent / "policy.yaml").read_text()))
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["data"]["openapi.yaml"] == EXAMPLE.read_text()


def test_the_docs_show_the_example_policy():
    import re

    root = EXAMPLE.parents[3]
    shown = yaml.safe_load(
        re.search(
            r"```yaml\n(.*?)```",
            (root / "docs" / "validation.md").read_text(),
            re.DOTALL,
        ).group(1)
    )
    docs = yaml.safe_load_all(
        (root / "examples" / "validation" / "policy.yaml").read_text()
    )
    assert shown == next(d for d in docs if d["kind"] == "ValidationPolicy")
