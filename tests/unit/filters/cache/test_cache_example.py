"""examples/cache loads and compiles with no error or warning, and its policy is the
one docs/cache.md shows."""

from __future__ import annotations

from pathlib import Path

from meshgate.config.loader import load_paths

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "cache"

def test_the_example_loads_and_compiles():
    from meshgate.config.compile import compile_snapshot

    result = load_paths([EXAMPLE])
    assert (result.errors, result.warnings) == ([], [])
    compile_snapshot(result.resources)


def test_the_docs_show_the_examples_policy():
    policy = (EXAMPLE / "policy.yaml").read_text()
    spec = policy[policy.index("apiVersion:") :]
    docs = (EXAMPLE.parents[1] / "docs" / "cache.md").read_text()
    assert spec in docs
