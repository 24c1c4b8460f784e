"""examples/security/authorization and examples/security/cors: `meshgate validate`
accepts each folder, it compiles with no error or warning, the policy does what its docs
page says, and the page shows the example's policy.yaml as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from meshgate.cli.validate import validate
from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.loader import load_paths
from meshgate.http.headers import Headers
from meshgate.proxy.context import RequestContext

REPO = Path(__file__).resolve().parents[4]
EXAMPLES = {"authorization": 8130, "cors": 8140}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_meshgate_validate_accepts_the_folder(name):
    result = CliRunner().invoke(validate, [str(REPO / "examples" / "security" / name)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_docs_page_shows_the_policy_as_it_is(name):
    policy = (REPO / "examples" / "security" / name / "policy.yaml").read_text()
    page = (REPO / "docs" / "security" / f"{name}.md").read_text()
    assert "```yaml\n" + policy + "```" in page


def security_filters(name: str):
    result = load_paths([REPO / "examples" / "security" / name])
    assert result.errors == [] and result.warnings == []
    snapshot = compile_snapshot(result.resources)
    match = find_match(snapshot, EXAMPLES[name], "localhost", "/items")
    assert match is not None and match.rule.security is not None
    return match.rule.filters


def ctx(method: str, ip: str, headers: dict[str, str] | None = None) -> RequestContext:
    return RequestContext(
        method, "/orders", "/orders", "", Headers.from_pairs((headers or {}).items()),
        "localhost", "localhost", "http", "1.1", ip, 40000, 8130, "r", 0.0,
    )


@pytest.mark.parametrize(
    ("method", "ip", "headers", "status"),
    [
        ("GET", "127.0.0.1", {}, None),  # internal-reads
        ("HEAD", "::1", {}, None),
        ("POST", "127.0.0.1", {}, 403),  # no rule matches: Deny
        ("POST", "10.1.2.3", {"x-team": "ops"}, None),  # ops-writes
        ("GET", "203.0.113.9", {"x-team": "ops"}, 403),  # blocked-network first
        ("GET", "198.51.100.1", {}, 403),  # not internal
    ],
)
def test_authorization_example_decides_as_documented(method, ip, headers, status):
    (authz,) = [f for f in security_filters("authorization") if f.name == "authorization"]
    reply = authz.on_request(ctx(method, ip, headers))
    assert (reply.status if reply else None) == status


def test_cors_example_answers_preflights_from_subdomains():
    (cors,) = [f for f in security_filters("cors") if f.name == "CORS"]
    reply = cors.on_request(ctx("OPTIONS", "127.0.0.1", {
        "origin": "https://shop.example.com", "access-control-request-method": "PUT",
    }))
    assert reply.status == 200
    assert ("access-control-max-age", "600") in reply.headers
    assert not cors.allows("https://example.com.attacker.net")
