"""Fixtures for the e2e tests: real meshgate processes and echo upstreams on 127.0.0.1."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import (
    CONFORMANCE_DIR,
    BackendPool,
    EchoServer,
    Gateway,
)


@pytest.fixture(scope="session")
def conformance_available():
    assert CONFORMANCE_DIR.is_dir(), f"conformance manifests missing at {CONFORMANCE_DIR}"
    return CONFORMANCE_DIR


@pytest.fixture(scope="session")
def backend_pool(conformance_available):
    """Echo servers for every HTTP Service of the conformance base.yaml."""
    pool = BackendPool().start()
    yield pool
    pool.stop()


@pytest.fixture
def echo():
    with EchoServer("echo-0", "default") as server:
        yield server


@pytest.fixture
def make_gateway():
    """Factory: make_gateway(config, **kwargs) -> started Gateway, cleaned up after the test."""
    started: list[Gateway] = []

    def factory(config, start: bool = True, **kwargs) -> Gateway:
        gw = Gateway(config, **kwargs)
        started.append(gw)
        return gw.start() if start else gw

    yield factory
    for gw in started:
        gw.cleanup()
