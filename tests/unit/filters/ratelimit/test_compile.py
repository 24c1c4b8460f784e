"""Where rate limits sit in a compiled rule and what reaches the config: Envoy
Gateway's order (faults, the SecurityPolicy's authentication, rate limits, the rule's
own filters) so a consumer selector sees who authentication found; the example in
examples/rate-limits is accepted by `meshgate validate`; a serving gateway refuses
global limits without a Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from meshgate.cli.validate import validate
from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_paths, load_texts
from meshgate.filters.ratelimit import GlobalRateLimit, LocalRateLimit
from meshgate.ratelimit import redis_counters

REPO = Path(__file__).resolve().parents[4]
BASIC_AUTH = REPO / "examples" / "security" / "basic-auth"
EXAMPLE = REPO / "examples" / "rate-limits"

POLICY = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: limits}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}]
  faultInjection: {delay: {fixedDelay: 1ms, percentage: 0}}
  rateLimit:
    local:
      rules:
      - clientSelectors: [{consumer: {type: Distinct}}]
        limit: {requests: 10, unit: Minute}
"""


def test_rate_limits_run_after_authentication_and_after_faults():
    texts = [(str(p), p.read_text()) for p in sorted(BASIC_AUTH.glob("*.yaml"))]
    result = load_texts([*texts, ("limits.yaml", POLICY)])
    assert result.errors == []
    snap = compile_snapshot(result.resources)
    rule = find_match(snap, 8160, "localhost", "/").rule
    names = [f.name for f in rule.filters]
    assert names[0] == "FaultDelay"
    limit_at = next(i for i, f in enumerate(rule.filters) if isinstance(f, LocalRateLimit))
    auth_at = [i for i, f in enumerate(rule.filters) if "asic" in f.name]
    assert auth_at and max(auth_at) < limit_at, names


def test_the_example_validates_and_compiles():
    run = CliRunner().invoke(validate, [str(EXAMPLE)])
    assert run.exit_code == 0, run.output
    snap = compile_snapshot(load_paths([EXAMPLE]).resources)
    rule = find_match(snap, 8180, "localhost", "/").rule
    kinds = [type(f) for f in rule.filters]
    assert kinds[:2] == [LocalRateLimit, GlobalRateLimit]  # Envoy's order: local, then global


def test_the_docs_page_shows_the_example_policy_as_it_is():
    page = (REPO / "docs" / "rate-limits.md").read_text()
    policy = (EXAMPLE / "policy.yaml").read_text()
    body = "\n".join(line for line in policy.splitlines() if not line.startswith("#"))
    assert body.strip() in page


def test_a_serving_gateway_refuses_global_limits_without_redis(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(redis_counters, "SETTINGS", redis_counters.Settings(serving=True))
    with pytest.raises(ConfigInvalid, match="--redis-url"):
        compile_snapshot(load_paths([EXAMPLE]).resources)
    monkeypatch.setattr(redis_counters, "SETTINGS", redis_counters.Settings(url="redis://127.0.0.1:1/0", serving=True))
    compile_snapshot(load_paths([EXAMPLE]).resources)


def test_a_rule_dumps_its_limits_for_config_dump():
    snap = compile_snapshot(load_paths([EXAMPLE]).resources)
    rule = find_match(snap, 8180, "localhost", "/").rule
    dumped = yaml.safe_dump([f.describe() for f in rule.filters[:2]])
    assert "LocalRateLimit" in dumped and "meshgate:rl:default/api-rate-limits:0:default/api/0:" in dumped
