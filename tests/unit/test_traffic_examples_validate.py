"""examples/traffic/*: every folder is a config `meshgate validate` accepts, compiles
with every route accepted and resolved, routes the way its docs page says, and that
page shows the example's route.yaml as it is.

(tests/unit/test_examples.py covers examples/ itself; config directories are not
read recursively, so these folders need their own case.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from meshgate.cli.validate import validate
from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.loader import load_paths

REPO = Path(__file__).resolve().parents[2]
TRAFFIC = REPO / "examples" / "traffic"
DOCS = REPO / "docs" / "traffic"
EXAMPLES = sorted(p.name for p in TRAFFIC.iterdir() if p.is_dir())
PORTS = {"canary": 8090, "blue-green": 8100, "ab-testing": 8110, "shadow": 8120}


def test_the_four_examples_are_there() -> None:
    assert set(EXAMPLES) == set(PORTS)


def _snapshot(name: str):
    result = load_paths([TRAFFIC / name])
    assert result.errors == []
    assert result.warnings == []
    return compile_snapshot(result.resources)


def _backends(name: str, path: str = "/", headers=()) -> dict[str, int]:
    match = find_match(_snapshot(name), PORTS[name], "localhost", path, headers=headers)
    assert match is not None, f"{name}: {path} is not routed"
    return {b.cluster: b.weight for b in match.rule.backends}


@pytest.mark.parametrize("name", EXAMPLES)
def test_meshgate_validate_accepts_the_folder(name: str) -> None:
    result = CliRunner().invoke(validate, [str(TRAFFIC / name)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_route_is_accepted_and_resolved(name: str) -> None:
    snapshot = _snapshot(name)
    assert snapshot.dump["routes"]
    for route, dump in snapshot.dump["routes"].items():
        for parent in dump["parents"]:
            failed = [c for c in parent["conditions"] if c["status"] != "True"]
            assert failed == [], f"{name} {route}: {failed}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_docs_page_shows_the_route_as_it_is(name: str) -> None:
    page = DOCS / f"{name}.md"
    assert page.is_file(), f"docs/traffic/{name}.md is missing"
    route = (TRAFFIC / name / "route.yaml").read_text()
    assert route.strip() in page.read_text(), f"docs/traffic/{name}.md does not show route.yaml as it is"
    assert f"(traffic/{name}.md)" in (REPO / "docs" / "index.md").read_text()


def test_canary_is_90_10() -> None:
    assert _backends("canary", "/cart") == {
        "service/default/shop-stable:80": 90,
        "service/default/shop-canary:80": 10,
    }


def test_blue_green_sends_everything_to_blue() -> None:
    assert _backends("blue-green", "/checkout") == {"service/default/shop-blue:80": 1}


@pytest.mark.parametrize(
    ("headers", "variant"),
    [
        ((), "a"),
        ((("x-variant", "b"),), "b"),
        ((("cookie", "variant=b"),), "b"),
        ((("cookie", "session=1; variant=b; theme=dark"),), "b"),
        ((("cookie", "variant=bb"),), "a"),
        ((("cookie", "myvariant=b"),), "a"),
    ],
)
def test_ab_variant_by_header_and_cookie(headers, variant: str) -> None:
    assert _backends("ab-testing", "/product/7", headers) == {f"service/default/shop-{variant}:80": 1}


def test_shadow_mirrors_everything_and_answers_from_the_primary() -> None:
    match = find_match(_snapshot("shadow"), PORTS["shadow"], "localhost", "/orders/1")
    assert {b.cluster: b.weight for b in match.rule.backends} == {"service/default/orders:80": 1}
    (mirror,) = match.rule.filters
    assert mirror.describe() == {
        "type": "RequestMirror",
        "cluster": "service/default/orders-next:80",
        "percent": 100,
    }
