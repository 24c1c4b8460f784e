"""docs/kinds/ is generated from the config models and must never drift from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshgate import docs_gen
from meshgate.config.loader import load_paths
from meshgate.config.models import MODELS

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return docs_gen.render_docs()


def test_committed_kind_pages_match_the_models(pages):
    stale = docs_gen.stale_files(DOCS, pages)
    assert stale == [], (
        f"docs out of date: {stale}; regenerate with `python -m meshgate.docs_gen docs/`"
    )


def test_every_supported_kind_has_a_page_linked_from_the_index(pages):
    index = pages["kinds/index.md"]
    for group, kind in MODELS:
        name = docs_gen.page_name(group, kind)
        assert f"kinds/{name}" in pages
        assert f"[{kind}]({name})" in index


@pytest.mark.parametrize("key", list(MODELS), ids=lambda k: k[1])
def test_every_field_is_documented(key):
    # The docs are only as good as the models' descriptions: each field needs one.
    undocumented = [row.path for row in docs_gen.field_rows(MODELS[key]) if not row.description]
    assert undocumented == []


def test_page_shows_versions_example_and_nested_fields(pages):
    page = pages["kinds/httproute.md"]
    assert "`gateway.networking.k8s.io/v1`, `gateway.networking.k8s.io/v1beta1`" in page
    assert "From [`examples/routes.yaml`]" in page
    assert "name: x-demo" in page  # the example keeps the file's text
    rows = {row.path: row for row in docs_gen.field_rows(MODELS[("gateway.networking.k8s.io", "HTTPRoute")])}
    weight = rows["spec.rules[].backendRefs[].weight"]
    assert (weight.type, weight.default, weight.required) == ("integer (0–1000000)", "`1`", False)
    assert rows["spec.rules[].matches[].headers[].name"].required
    assert rows["spec.rules[].filters[].requestRedirect.statusCode"].default == "`302`"
    assert "| `spec.rules[].backendRefs[].weight` |" in page


def test_yaml_keys_not_python_names(pages):
    rows = [r.path for r in docs_gen.field_rows(MODELS[("gateway.networking.k8s.io", "ReferenceGrant")])]
    assert "spec.from[].namespace" in rows
    assert not any("from_" in path for path in rows)


def test_kind_without_example_gets_a_skeleton_of_required_fields(tmp_path):
    pages = docs_gen.render_docs([tmp_path])  # no examples anywhere
    page = pages["kinds/backend.md"]
    assert "The required fields" in page
    assert "endpoints:" in page


def test_write_removes_pages_no_longer_generated_and_check_reports(tmp_path, capsys):
    (tmp_path / "kinds").mkdir()
    (tmp_path / "kinds" / "gone.md").write_text("old kind")
    assert docs_gen.main([str(tmp_path), "--check"]) == 1
    assert "kinds/gone.md" in capsys.readouterr().err
    assert docs_gen.main([str(tmp_path)]) == 0
    assert not (tmp_path / "kinds" / "gone.md").exists()
    assert docs_gen.main([str(tmp_path), "--check"]) == 0


def test_doc_snippets_are_valid_config():
    result = load_paths([DOCS / "snippets"])
    assert result.errors == []
    assert result.warnings == []
