"""Fixtures of the policy filter tests (transform, validation): a PolicyRefs stand-in
that serves ConfigMaps from a dict and records errors, and the in-process gateway of
``inprocess.serve`` (echo upstream by default)."""

from __future__ import annotations

import pytest
from inprocess import serve


class FakeRefs:
    def __init__(self, configmaps: dict | None = None) -> None:
        self.configmaps = configmaps or {}
        self.errors: list[tuple[tuple, str]] = []
        self.key = "default/policy"

    def error(self, path, message):
        self.errors.append((("spec", *path), message))

    def configmap(self, name, path, namespace=None):
        if name not in self.configmaps:
            self.error(path, f"ConfigMap default/{name} not found")
            return None
        return self.configmaps[name]


@pytest.fixture
def fake_refs():
    return FakeRefs


@pytest.fixture
def gateway_with():
    """``async with gateway_with(filters) as (client, upstream): ...``"""
    return serve
