"""ValidationPolicy end to end: a real ``meshgate gateway`` in front of a real echo
upstream, checking requests against the pet store's OpenAPI document from
``examples/validation`` (served from a ConfigMap). What a client notices: valid
requests reach the app; invalid ones get a 400 ``application/problem+json`` naming
each field and never reach it; unknown operations, wrong media types and oversized
bodies get 400/405, 415 and 413; a broken document is refused at load time."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from harness import (
    EchoServer,
    free_port,
    gateway_doc,
    prefix_rule,
    route_doc,
    service_docs,
    serving,
    wait_until,
)

GROUP = "gateway.networking.k8s.io"
DOCUMENT = (
    Path(__file__).resolve().parents[2]
    / "examples"
    / "validation"
    / "openapi"
    / "petstore.yaml"
)


def config(port: int, echo: EchoServer, document: str) -> list[dict]:
    return [
        gateway_doc(port),
        *service_docs("petstore", [echo]),
        route_doc("petstore", [prefix_rule("/v1", "petstore")]),
        route_doc("open", [prefix_rule("/open", "petstore")]),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "petstore-openapi", "namespace": "default"},
            "data": {"openapi.yaml": document},
        },
        {
            "apiVersion": "meshgate.dev/v1alpha1",
            "kind": "ValidationPolicy",
            "metadata": {"name": "petstore", "namespace": "default"},
            "spec": {
                "targetRefs": [
                    {"group": GROUP, "kind": "HTTPRoute", "name": "petstore"}
                ],
                "openapi": {
                    "configMapRef": {"name": "petstore-openapi"},
                    "basePath": "/v1",
                },
                "maxBodyBytes": 4096,
            },
        },
    ]


@pytest.fixture(scope="module")
def served():
    port = free_port()
    with EchoServer() as echo:
        docs = config(port, echo, DOCUMENT.read_text())
        with serving(docs, port, "--watch-interval", "0.1", echo=echo) as gw:
            gw.port = port
            yield gw


def refused(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["status"] == status and doc["type"] == "about:blank"
    return doc


def test_valid_requests_reach_the_app(served):
    served.echo.mark()
    assert (
        httpx.get(
            served.base + "/v1/pets", params={"limit": 5, "tag": ["a", "b"]}
        ).status_code
        == 200
    )
    r = httpx.post(
        served.base + "/v1/pets",
        json={"name": "Rex", "status": "available", "tags": ["dog"]},
    )
    assert r.status_code == 200 and r.json()["method"] == "POST"
    assert httpx.get(served.base + "/v1/pets/7").status_code == 200
    assert served.echo.count() == 3


def test_an_invalid_body_is_refused_naming_each_field_and_not_forwarded(served):
    served.echo.mark()
    r = httpx.post(
        served.base + "/v1/pets",
        json={
            "name": "",
            "status": "eaten",
            "owner": {"email": "not-an-email"},
            "colour": "red",
        },
    )
    doc = refused(r, 400)
    assert doc["detail"] == "request body does not match POST /pets"
    assert sorted(e["pointer"] for e in doc["errors"]) == [
        "#",
        "#/name",
        "#/owner/email",
        "#/status",
    ]
    assert served.echo.count() == 0


def test_parameters_are_checked(served):
    served.echo.mark()
    doc = refused(
        httpx.get(served.base + "/v1/pets", params={"limit": "lots", "status": "x"}),
        400,
    )
    assert [(e["in"], e["name"]) for e in doc["errors"]] == [
        ("query", "limit"),
        ("query", "status"),
    ]
    doc = refused(httpx.get(served.base + "/v1/pets/abc"), 400)
    assert doc["errors"] == [
        {"in": "path", "name": "petId", "detail": '"abc" is not of type "integer"'}
    ]
    doc = refused(httpx.delete(served.base + "/v1/pets/7"), 400)
    assert doc["errors"][0] == {
        "in": "header",
        "name": "x-reason",
        "detail": "required parameter is missing",
    }
    assert (
        httpx.delete(
            served.base + "/v1/pets/7", headers={"x-reason": "adopted"}
        ).status_code
        == 200
    )
    assert served.echo.count() == 1


def test_unknown_operations_wrong_media_types_and_big_bodies(served):
    served.echo.mark()
    refused(httpx.get(served.base + "/v1/owners"), 400)
    r = httpx.put(served.base + "/v1/pets", json={})
    refused(r, 405)
    assert r.headers["allow"] == "GET, POST"
    r = httpx.post(
        served.base + "/v1/pets",
        content=b"name=Rex",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    refused(r, 415)
    assert r.headers["accept-post"] == "application/json"
    refused(
        httpx.post(
            served.base + "/v1/pets",
            content=b"{oops",
            headers={"content-type": "application/json"},
        ),
        400,
    )
    big = {"name": "Rex", "status": "sold", "tags": ["x" * 100] * 50}
    assert httpx.post(served.base + "/v1/pets", json=big).status_code == 413
    assert served.echo.count() == 0


def test_routes_without_the_policy_are_not_validated(served):
    served.echo.mark()
    assert (
        httpx.post(served.base + "/open/anything", content=b"not json").status_code
        == 200
    )
    assert served.echo.count() == 1


def test_a_broken_document_is_refused_at_load_and_the_last_good_config_serves(served):
    broken = DOCUMENT.read_text().replace(
        '"#/components/schemas/Pet"', '"#/components/schemas/Pett"'
    )
    before = served.config_version()
    served.write_config(config(served.port, served.echo, broken))
    wait_until(
        lambda: "Pett" in served.stderr_text(), 10.0, what="the rejection in the log"
    )
    assert served.config_version() == before
    assert httpx.get(served.base + "/v1/pets/abc").status_code == 400
