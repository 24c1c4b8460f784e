"""The traffic-management examples in examples/traffic/, run for real: each example's
YAML (with its fixed ports swapped for free ones) served by a meshgate process in front
of echo upstreams, checked for what a user of that example would notice.

Route edits (promote, switch, roll back) are made on route.yaml's text, exactly as the
docs in docs/traffic/ tell a user to make them, and applied by hot reload.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
import yaml
from harness import (
    REPO_ROOT,
    EchoServer,
    Gateway,
    free_port,
    start_echo_servers,
    wait_until,
)

TRAFFIC = REPO_ROOT / "examples" / "traffic"
WATCH = ["--watch-interval", "0.1"]


class Example:
    """One folder of examples/traffic: gateway.yaml (Gateway, Services, EndpointSlices)
    and route.yaml (the HTTPRoute a user edits)."""

    def __init__(self, name: str) -> None:
        self.dir = TRAFFIC / name
        self.gateway_docs = [d for d in yaml.safe_load_all((self.dir / "gateway.yaml").read_text()) if d]
        self.route_text = (self.dir / "route.yaml").read_text()
        self.services = [d["metadata"]["name"] for d in self.gateway_docs if d["kind"] == "Service"]

    def config(self, listener_port: int, upstreams: dict[str, EchoServer], route_text: str | None = None) -> list[dict]:
        """The example's docs with its listener on `listener_port` and each Service's
        endpoints on the port of the echo server named after it."""
        assert set(upstreams) == set(self.services), "one echo server per Service of the example"
        docs = yaml.safe_load_all(yaml.safe_dump_all(self.gateway_docs))  # deep copy
        out = []
        for doc in docs:
            kind = doc["kind"]
            if kind == "Gateway":
                (listener,) = doc["spec"]["listeners"]
                listener["port"] = listener_port
            elif kind == "Service":
                for port in doc["spec"]["ports"]:
                    port["targetPort"] = upstreams[doc["metadata"]["name"]].port
            elif kind == "EndpointSlice":
                server = upstreams[doc["metadata"]["labels"]["kubernetes.io/service-name"]]
                for port in doc["ports"]:
                    port["port"] = server.port
                assert all(a == "127.0.0.1" for e in doc["endpoints"] for a in e["addresses"])
            else:
                raise AssertionError(f"{self.dir.name}/gateway.yaml: unexpected kind {kind}")
            out.append(doc)
        route = route_text if route_text is not None else self.route_text
        return out + [d for d in yaml.safe_load_all(route) if d]

    def edited_route(self, *replacements: tuple[str, str], base: str | None = None) -> str:
        """route.yaml with each `old` (which must occur exactly once) replaced by `new`."""
        text = base if base is not None else self.route_text
        for old, new in replacements:
            assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {self.dir.name}/route.yaml"
            text = text.replace(old, new)
        return text


@contextlib.contextmanager
def _served(example: Example):
    """Start one echo server per Service (pod name = Service name) and a gateway on the
    example's config; yields (gateway, listener URL, {service: server})."""
    servers = start_echo_servers((name, "default") for name in example.services)
    upstreams = dict(zip(example.services, servers))
    port = free_port()
    try:
        with Gateway(example.config(port, upstreams), extra_args=WATCH) as gw:
            gw.listener_port = port
            gw.upstreams = upstreams
            yield gw, gw.url(port), upstreams
    finally:
        for server in servers:
            server.stop()


def _pods(client: httpx.Client, url: str, n: int, **kwargs) -> Counter:
    """Send `n` GETs; every one must succeed. Counts the answering pods."""
    pods: Counter = Counter()
    for _ in range(n):
        resp = client.get(url, **kwargs)
        assert resp.status_code == 200, resp.text
        pods[resp.json()["pod"]] += 1
    return pods


# --------------------------------------------------------------------------- canary


@pytest.fixture
def canary():
    with _served(Example("canary")) as served:
        yield served


def test_canary_splits_90_10_then_rolls_back_and_promotes(canary) -> None:
    gw, base, _ = canary
    example = Example("canary")
    n, p = 1000, 0.10
    with httpx.Client(timeout=10) as client:
        pods = _pods(client, f"{base}/cart", n)
        # Binomial(1000, 0.1): mean 100, sigma ~9.5; 4 sigma either side.
        sigma = math.sqrt(n * p * (1 - p))
        low, high = n * p - 4 * sigma, n * p + 4 * sigma
        assert set(pods) == {"shop-stable", "shop-canary"}
        assert low <= pods["shop-canary"] <= high, f"canary got {pods['shop-canary']}/{n}, expected {low:.0f}..{high:.0f}"

        # Roll back: the canary's weight to 0.
        gw.reload(example.config(gw.listener_port, gw.upstreams, example.edited_route(("weight: 10", "weight: 0"))))
        assert _pods(client, f"{base}/cart", 100) == {"shop-stable": 100}

        # Promote: stable 0, canary 100.
        promoted = example.edited_route(("weight: 90", "weight: 0"), ("weight: 10", "weight: 100"))
        gw.reload(example.config(gw.listener_port, gw.upstreams, promoted))
        assert _pods(client, f"{base}/cart", 100) == {"shop-canary": 100}


# --------------------------------------------------------------------------- blue-green


class ClientLoop(threading.Thread):
    """A client that sends requests until stopped: mostly on one keep-alive connection,
    every third on a new one. Records (start time, status or error, pod)."""

    def __init__(self, url: str, max_seconds: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.max_seconds = max_seconds
        self.results: list[tuple[float, object, str | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=10) as keep_alive:
            i = 0
            while not self.stopping.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    if i % 3 == 2:
                        resp = httpx.get(self.url, timeout=10, headers={"connection": "close"})
                    else:
                        resp = keep_alive.get(self.url)
                    pod = resp.json().get("pod") if resp.status_code == 200 else None
                    self.results.append((started, resp.status_code, pod))
                except httpx.HTTPError as exc:
                    self.results.append((started, repr(exc), None))
                i += 1

    def wait_for(self, more: int) -> None:
        target = len(self.results) + more
        wait_until(lambda: len(self.results) >= target or not self.is_alive(), 20, what=f"{more} more requests")


def test_blue_green_switches_and_rolls_back_with_no_failed_request() -> None:
    example = Example("blue-green")
    with _served(example) as (gw, base, upstreams), httpx.Client(timeout=10) as client:
        assert _pods(client, f"{base}/", 20) == {"shop-blue": 20}
        to_green = example.edited_route(("name: shop-blue", "name: shop-green"))
        loop = ClientLoop(f"{base}/checkout")
        loop.start()
        switches: list[tuple[float, float, str]] = []  # (written, visible, pod)
        try:
            loop.wait_for(50)
            for route, pod in ((to_green, "shop-green"), (example.route_text, "shop-blue")):
                written = time.monotonic()
                gw.reload(example.config(gw.listener_port, upstreams, route))
                switches.append((written, time.monotonic(), pod))
                loop.wait_for(100)
        finally:
            loop.stopping.set()
            loop.join(30)

        results = loop.results
        failed = [r for r in results if r[1] != 200]
        assert failed == [], f"{len(failed)}/{len(results)} requests failed during the switch: {failed[:5]}"
        before = [r for r in results if r[0] < switches[0][0]]
        assert before and {r[2] for r in before} == {"shop-blue"}
        # Once a switch is visible in /config_dump, every request started after it (until
        # the next edit is written) goes to the new environment. The 50 ms either side
        # allow for a client thread that took its start time, then lost the CPU.
        for n, (_, visible, pod) in enumerate(switches):
            until = switches[n + 1][0] if n + 1 < len(switches) else float("inf")
            after = [r for r in results if visible + 0.05 < r[0] < until - 0.05]
            assert len(after) >= 30, f"only {len(after)} requests after switch {n}"
            wrong = [(round(r[0] - visible, 3), r[2]) for r in after if r[2] != pod]
            assert not wrong, f"after switch {n} to {pod}: {len(wrong)}/{len(after)} elsewhere (s after, pod): {wrong[:5]}"


# --------------------------------------------------------------------------- A/B


@pytest.fixture(scope="module")
def ab():
    with _served(Example("ab-testing")) as served:
        yield served


@pytest.mark.parametrize(
    ("headers", "pod"),
    [
        ({}, "shop-a"),
        ({"x-variant": "b"}, "shop-b"),
        ({"X-Variant": "b"}, "shop-b"),  # header names are case-insensitive
        ({"x-variant": "B"}, "shop-a"),  # values are not
        ({"x-variant": "a"}, "shop-a"),
        ({"cookie": "variant=b"}, "shop-b"),
        ({"cookie": "session=42; variant=b"}, "shop-b"),
        ({"cookie": "variant=b; session=42"}, "shop-b"),
        ({"cookie": "session=42;variant=b;theme=dark"}, "shop-b"),
        ({"cookie": "variant=a; session=42"}, "shop-a"),
        ({"cookie": "variant=bb"}, "shop-a"),
        ({"cookie": "myvariant=b"}, "shop-a"),
        ({"cookie": "session=variant=b"}, "shop-a"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v,
)
def test_ab_routes_by_header_and_cookie(ab, headers: dict, pod: str) -> None:
    _, base, _ = ab
    with httpx.Client(timeout=10) as client:
        assert _pods(client, f"{base}/product/7", 3, headers=headers) == {pod: 3}


def test_ab_cookie_keeps_a_browser_in_its_variant(ab) -> None:
    _, base, _ = ab
    # A client with a cookie jar, as a browser after the app set `variant=b`.
    with httpx.Client(timeout=10, cookies={"session": "42", "variant": "b"}) as b_user:
        assert _pods(b_user, f"{base}/product/7", 20) == {"shop-b": 20}
    with httpx.Client(timeout=10, cookies={"session": "43", "variant": "a"}) as a_user:
        assert _pods(a_user, f"{base}/product/7", 20) == {"shop-a": 20}


# --------------------------------------------------------------------------- shadow


def test_shadow_receives_a_copy_of_each_request_and_the_client_only_the_primary() -> None:
    with _served(Example("shadow")) as (_, base, upstreams):
        primary, shadow = upstreams["orders"], upstreams["orders-next"]
        primary.mark()
        shadow.mark()
        sent = []
        with httpx.Client(timeout=10) as client:
            for i in range(20):
                path = f"/orders/{uuid.uuid4().hex}"
                if i % 2:
                    resp = client.post(f"{base}{path}", content=b"x" * (100 + i))
                else:
                    resp = client.get(f"{base}{path}?page={i}")
                sent.append((resp.request.method, resp.request.url.raw_path.decode()))
                # The client gets the primary's answer, and nothing of the shadow's.
                assert resp.status_code == 200
                assert resp.headers["x-echo-pod"] == "orders"
                assert resp.json()["pod"] == "orders"
        assert [(r["method"], r["path"]) for r in primary.requests()] == sent

        # Copies are fire-and-forget: they land shortly after the answers.
        wait_until(lambda: len(shadow.requests()) >= len(sent), 5, what="every copy at the shadow")
        copies = shadow.requests()
        assert sorted((r["method"], r["path"]) for r in copies) == sorted(sent)
        assert all(r["host"].endswith("-shadow") for r in copies), [r["host"] for r in copies]
        wait_until(lambda: len(shadow.completed()) >= len(sent), 5, what="copies with their bodies")
        bodies = {r["path"]: r["body_len"] for r in shadow.completed()}
        for i, (method, path) in enumerate(sent):
            assert bodies[path] == (100 + i if method == "POST" else 0)

        # A shadow that is down changes nothing for users.
        shadow.stop()
        with httpx.Client(timeout=10) as client:
            assert _pods(client, f"{base}/orders/after-shadow-died", 20) == {"orders": 20}
