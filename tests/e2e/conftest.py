"""Fixtures for the e2e tests: real meshgate processes and echo upstreams on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import (  # noqa: E402
    CONFORMANCE_DIR,
    BackendPool,
    EchoServer,
    Gateway,
    meshgate_command,
)

_gateway_available: bool | None = None


def gateway_available() -> bool:
    """True once `meshgate gateway --help` works (the gateway command has landed)."""
    global _gateway_available
    if _gateway_available is None:
        try:
            proc = subprocess.run(
                [*meshgate_command(), "gateway", "--help"], capture_output=True, timeout=30
            )
            _gateway_available = proc.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _gateway_available = False
    return _gateway_available


def pytest_collection_modifyitems(config, items):
    needs = [i for i in items if "tests/e2e" in str(i.fspath) and "no_gateway" not in i.keywords]
    if needs and not gateway_available():
        skip = pytest.mark.skip(reason="`meshgate gateway` is not available yet")
        for item in needs:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "no_gateway: e2e test that does not need meshgate")


@pytest.fixture(scope="session")
def conformance_available():
    if not CONFORMANCE_DIR.exists():
        pytest.skip(f"conformance manifests not found at {CONFORMANCE_DIR}")
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
