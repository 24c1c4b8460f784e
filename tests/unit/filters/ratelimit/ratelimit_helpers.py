"""Shared by the rate-limit unit tests: a request and a policy compiled from YAML."""

from __future__ import annotations

import yaml

from meshgate.config.compile.traffic import rate_limit
from meshgate.config.models.traffic_policy import RateLimitSpec
from meshgate.http.headers import Headers
from meshgate.proxy.context import RequestContext


def request(
    method: str = "GET",
    path: str = "/",
    headers: dict | None = None,
    client_ip: str = "10.0.0.1",
    consumer: str | None = None,
) -> RequestContext:
    ctx = RequestContext(
        method, path, path, "", Headers.from_pairs((headers or {}).items()), "gw", "gw",
        "http", "1.1", client_ip, 40000, 80, "req-1", 0.0,
    )
    ctx.consumer = consumer
    return ctx


def policy(text: str, key: str = "default/limits"):
    """The RateLimitPolicy of a ``rateLimit`` written as YAML."""
    return rate_limit(key, RateLimitSpec.model_validate(yaml.safe_load(text)))
