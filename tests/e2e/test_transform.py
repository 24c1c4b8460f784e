"""TransformPolicy end to end: a real ``meshgate gateway`` in front of a real echo
upstream (it answers with what it received: path with query, headers, body length
and SHA-256), with the policy from ``examples/transform/policy.yaml`` and a second one
that edits response bodies. What a client and the app notice: headers and query
parameters rewritten from templates, spoofed headers gone, JSON request bodies edited
before the app sees them, response bodies edited before the client does, non-JSON
request bodies refused with a problem+json."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from harness import (
    EchoServer,
    free_port,
    gateway_doc,
    prefix_rule,
    route_doc,
    service_docs,
    serving,
)

GROUP = "gateway.networking.k8s.io"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transform" / "policy.yaml"


def example_policy() -> dict:
    (policy,) = [
        d
        for d in yaml.safe_load_all(EXAMPLE.read_text())
        if d["kind"] == "TransformPolicy"
    ]
    return policy


def config(port: int, echo: EchoServer) -> list[dict]:
    return [
        gateway_doc(port),
        *service_docs("orders", [echo]),
        route_doc("orders", [prefix_rule("/orders", "orders")]),
        route_doc("shop", [prefix_rule("/shop", "orders")]),
        example_policy(),
        {
            "apiVersion": "meshgate.dev/v1alpha1",
            "kind": "TransformPolicy",
            "metadata": {"name": "shop", "namespace": "default"},
            "spec": {
                "targetRefs": [{"group": GROUP, "kind": "HTTPRoute", "name": "shop"}],
                "response": {
                    "body": {
                        "remove": ["pod", "namespace", "ingress", "service"],
                        "rename": [{"from": "path", "to": "request.target"}],
                        "set": [{"path": "request.via", "value": "{route}"}],
                    }
                },
            },
        },
    ]


@pytest.fixture(scope="module")
def served():
    port = free_port()
    with EchoServer() as echo, serving(config(port, echo), port, echo=echo) as gw:
        yield gw


def test_request_headers_and_query_are_rewritten_from_templates(served):
    r = httpx.get(
        served.base + "/orders/1?debug=1&page=2",
        headers={
            "x-tenant": "acme",
            "x-internal-user": "root",
            "x-consumer": "spoofed",
            "x-request-id": "r-42",
        },
    )
    assert r.status_code == 200
    seen = r.json()
    assert seen["path"] == "/orders/1?page=2&tenant=acme"
    assert seen["headers"]["X-Consumer"] == ["anonymous"]  # no one authenticated
    assert "X-Internal-User" not in seen["headers"]
    assert r.headers["x-request-id"] == seen["headers"]["X-Request-Id"][0]
    r = httpx.get(served.base + "/orders/1")
    assert r.json()["path"] == "/orders/1?tenant=public"


def test_response_headers_are_rewritten(served):
    r = httpx.get(
        served.base + "/orders/1", headers={"x-echo-set-header": "Server: app/1.0"}
    )
    assert "server" not in r.headers and r.headers["x-echo-pod"]


def test_a_json_request_body_is_edited_before_the_app_sees_it(served):
    body = {"items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]}
    r = httpx.post(served.base + "/orders", json=body)
    assert r.status_code == 200
    expected = orjson.dumps(
        {
            "items": [{"sku": "a", "quantity": 2}, {"sku": "b", "quantity": 1}],
            "source": "gateway",
        }
    )
    seen = r.json()
    assert (seen["body_len"], seen["body_sha256"]) == (
        len(expected),
        hashlib.sha256(expected).hexdigest(),
    )


def test_a_request_body_that_is_not_json_is_refused(served):
    served.echo.mark()
    r = httpx.post(
        served.base + "/orders",
        content=b"{oops",
        headers={"content-type": "application/json"},
    )
    assert (
        r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    )
    r = httpx.post(
        served.base + "/orders", content=b"a,b", headers={"content-type": "text/csv"}
    )
    assert r.status_code == 415
    assert served.echo.count() == 0


def test_a_json_response_body_is_edited(served):
    r = httpx.get(served.base + "/shop/item?x=1")
    assert r.status_code == 200
    doc = r.json()
    assert "pod" not in doc and "path" not in doc
    assert doc["request"] == {"target": "/shop/item?x=1", "via": "default/shop"}
    assert r.headers["content-length"] == str(len(r.content))
