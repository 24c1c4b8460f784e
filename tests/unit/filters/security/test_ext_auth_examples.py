"""examples/security/ext-auth and examples/security/introspection: configs
`meshgate validate` accepts, that compile with the policy on the route, and whose docs
pages show the policy as the example has it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from meshgate.cli.validate import validate
from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.loader import load_paths

REPO = Path(__file__).resolve().parents[4]
CASES = {
    # folder: (listener port, docs page, kind of the policy, filter type)
    "ext-auth": (8130, "ext-auth.md", "SecurityPolicy", "ExtAuth"),
    "introspection": (8140, "oauth2-introspection.md", "IntrospectionPolicy", "OAuth2Introspection"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_meshgate_validate_accepts_the_folder(name: str) -> None:
    result = CliRunner().invoke(validate, [str(REPO / "examples" / "security" / name)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_policy_guards_the_api_route_and_nothing_else(name: str) -> None:
    port, _, _, filter_type = CASES[name]
    result = load_paths([REPO / "examples" / "security" / name])
    assert result.errors == [] and result.warnings == []
    snapshot = compile_snapshot(result.resources)
    match = find_match(snapshot, port, "localhost", "/api/orders")
    assert [f.describe()["type"] for f in match.rule.filters] == [filter_type]
    assert find_match(snapshot, port, "localhost", "/other") is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_docs_page_shows_the_examples_policy_fields(name: str) -> None:
    _, page, kind, _ = CASES[name]
    text = (REPO / "docs" / "security" / page).read_text()
    docs = yaml.safe_load_all((REPO / "examples" / "security" / name / "policy.yaml").read_text())
    (policy,) = [d for d in docs if d["kind"] == kind]
    for field in policy["spec"]:
        if field != "targetRefs":
            assert f"{field}:" in text, f"{page} does not show {field}"
    assert f"examples/security/{name}/" in text
