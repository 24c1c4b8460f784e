"""Loading config files: conformance manifests, error locations, skipped kinds,
duplicates, YAML problems, directories, and the ``meshgate validate`` command."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshgate.cli.validate import validate
from meshgate.config.errors import ConfigError, ConfigInvalid
from meshgate.config.loader import load_paths, load_texts

CONFORMANCE = Path(__file__).resolve().parents[2] / "conformance" / "manifests"
BASE = CONFORMANCE / "base.yaml"
TESTS = sorted((CONFORMANCE / "tests").glob("*.yaml"))

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
"""
ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: web, port: 80}]
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: infra}
spec:
  ports: [{name: http, port: 80, targetPort: 8000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: infra
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: http, port: 8000}]
"""


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# --- conformance manifests ------------------------------------------------------------


@pytest.mark.parametrize("test_file", TESTS, ids=lambda p: p.stem)
def test_conformance_manifests_load_without_errors(test_file):
    # Each conformance test is applied on top of the base manifests on its own (several
    # tests reuse route names), so that is how they are loaded here.
    result = load_paths([BASE, test_file])
    assert result.errors == []
    kinds = {r.kind for r in result.resources}
    assert {"Gateway", "Service", "Namespace"} <= kinds
    assert "HTTPRoute" in kinds or "Gateway" in {r.kind for r in result.resources if r.file == str(test_file)}
    skipped = [w for w in result.warnings if "skipping apps/v1 Deployment" in w]
    assert skipped and all(w.endswith(": meshgate does not serve this kind") for w in skipped)


def test_conformance_base_warns_once_per_skipped_document():
    result = load_paths([BASE])
    assert result.errors == []
    assert f'{BASE}:7: skipping apps/v1 Deployment "infra-backend-v1": meshgate does not serve this kind' in (
        result.warnings
    )
    # ConfigMaps are served (CA bundles for client certificate validation).
    assert any(r.key == ("ConfigMap", "gateway-conformance-infra", "coredns") for r in result.resources)
    gateway = next(r for r in result.resources if r.key == ("Gateway", "gateway-conformance-infra", "same-namespace"))
    assert gateway.document == 2
    assert gateway.obj.spec.gatewayClassName == "{GATEWAY_CLASS_NAME}"
    namespace = next(r for r in result.resources if r.kind == "Namespace")
    assert namespace.key == ("Namespace", "", "gateway-conformance-infra")


# --- error locations ------------------------------------------------------------------


def test_error_names_file_document_resource_and_field():
    text = GATEWAY + "---\n" + ROUTE.replace("value: /}", "value: /, extra: 1}")
    result = load_texts([("routes.yaml", text)])
    assert [str(e) for e in result.errors] == [
        'routes.yaml:2:HTTPRoute/infra/web:spec.rules[0].matches[0].path.extra: '
        'unknown field "extra"; supported: type, value'
    ]
    error = result.errors[0]
    assert (error.file, error.document, error.kind_name, error.path) == (
        "routes.yaml",
        2,
        "HTTPRoute/infra/web",
        "spec.rules[0].matches[0].path.extra",
    )
    assert [r.kind for r in result.resources] == ["Gateway"]


def test_every_error_in_a_file_is_reported():
    text = dedent(
        """
        apiVersion: v1
        kind: Service
        metadata: {name: a}
        spec: {ports: [{port: 99999}]}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec: {listeners: [{name: x, port: 80, protocol: HTTP}]}
        """
    )
    errors = [str(e) for e in load_texts([("f.yaml", text)]).errors]
    assert errors == [
        "f.yaml:1:Service/default/a:spec.ports[0].port: Input should be less than or equal to 65535",
        "f.yaml:2:Gateway/default/gw:spec.gatewayClassName: required field is missing",
    ]


def test_unknown_top_level_field_lists_supported_fields():
    result = load_texts([("f.yaml", ROUTE + "status: {}\n")])
    assert [str(e) for e in result.errors] == [
        'f.yaml:1:HTTPRoute/infra/web:status: unknown field "status"; '
        "supported: apiVersion, kind, metadata, spec"
    ]


def test_unsupported_api_version_of_a_known_kind_is_an_error():
    result = load_texts([("f.yaml", ROUTE.replace("/v1\n", "/v9\n", 1))])
    assert [str(e) for e in result.errors] == [
        'f.yaml:1:HTTPRoute/infra/web:apiVersion: "gateway.networking.k8s.io/v9" is not supported '
        "for HTTPRoute; supported: gateway.networking.k8s.io/v1, gateway.networking.k8s.io/v1beta1"
    ]


def test_document_without_kind_or_not_a_mapping_is_an_error():
    text = "apiVersion: v1\nmetadata: {name: x}\n---\n- a\n- b\n---\nkind: Service\n"
    assert [str(e) for e in load_texts([("f.yaml", text)]).errors] == [
        "f.yaml:1:kind: required field is missing",
        "f.yaml:2: a document must be a mapping with apiVersion and kind, got list",
        "f.yaml:3:Service:apiVersion: required field is missing",
    ]


# --- skipped kinds --------------------------------------------------------------------


def test_kinds_meshgate_does_not_serve_are_skipped_with_one_warning_each():
    text = dedent(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: api}
        spec: {anything: [goes]}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: GatewayClass
        metadata: {name: meshgate}
        spec: {controllerName: meshgate.dev/gateway}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: GRPCRoute
        metadata: {name: g}
        spec: {}
        ---
        apiVersion: gateway.networking.k8s.io/v1alpha2
        kind: TCPRoute
        metadata: {name: p}
        spec: {}
        """
    )
    result = load_texts([("f.yaml", text)])
    assert result.errors == [] and result.resources == []
    assert result.warnings == [
        'f.yaml:1: skipping apps/v1 Deployment "api": meshgate does not serve this kind',
        'f.yaml:2: skipping gateway.networking.k8s.io/v1 GatewayClass "meshgate": meshgate does not serve this kind',
        'f.yaml:3: skipping gateway.networking.k8s.io/v1 GRPCRoute "g": not supported yet',
        'f.yaml:4: skipping gateway.networking.k8s.io/v1alpha2 TCPRoute "p": not supported yet',
    ]


def test_empty_documents_are_skipped_but_counted():
    text = "---\n# just a comment\n---\n" + GATEWAY + "---\n---\n"
    result = load_texts([("f.yaml", text)])
    assert result.errors == [] and result.warnings == []
    [gateway] = result.resources
    assert gateway.document == 2
    assert gateway.key == ("Gateway", "infra", "gw")


# --- duplicates and YAML problems -----------------------------------------------------


def test_duplicate_resource_across_files_names_both_places():
    result = load_texts([("a.yaml", GATEWAY), ("b.yaml", ROUTE + "---\n" + GATEWAY)])
    assert [str(e) for e in result.errors] == [
        "b.yaml:2:Gateway/infra/gw:metadata.name: duplicate Gateway infra/gw: already defined at a.yaml:1"
    ]


def test_same_name_in_other_namespace_or_kind_is_not_a_duplicate():
    other_ns = GATEWAY.replace("namespace: infra", "namespace: other")
    result = load_texts([("a.yaml", GATEWAY + "---\n" + other_ns), ("b.yaml", SERVICE)])
    assert result.errors == []
    assert len(result.resources) == 4


def test_yaml_syntax_error_reports_the_line():
    text = GATEWAY + "---\napiVersion: v1\nkind: Service\nmetadata: {name: [oops}\n"
    result = load_texts([("f.yaml", text)])
    [error] = result.errors
    assert error.document == 2
    assert str(error).startswith("f.yaml:2: YAML syntax error at line 11, column 23: ")
    assert [r.kind for r in result.resources] == ["Gateway"]


def test_duplicate_yaml_key_is_an_error_not_silently_overwritten():
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: []\n  ports: [{port: 80}]\n"
    [error] = load_texts([("f.yaml", text)]).errors
    assert str(error) == "f.yaml:1: YAML syntax error at line 6, column 3: duplicate key 'ports'"


# --- files and directories ------------------------------------------------------------


def test_directory_loads_yaml_and_yml_files_sorted_and_not_recursively(tmp_path):
    (tmp_path / "b-routes.yml").write_text(ROUTE)
    (tmp_path / "a-gateway.yaml").write_text(GATEWAY)
    (tmp_path / "notes.txt").write_text("not yaml: [")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "svc.yaml").write_text(SERVICE)
    result = load_paths([tmp_path])
    assert result.errors == []
    assert [(Path(r.file).name, r.kind) for r in result.resources] == [
        ("a-gateway.yaml", "Gateway"),
        ("b-routes.yml", "HTTPRoute"),
    ]


def test_files_and_directories_mix(tmp_path):
    (tmp_path / "gw.yaml").write_text(GATEWAY)
    svc = tmp_path / "svc.yaml.txt"
    svc.write_text(SERVICE)
    result = load_paths([str(tmp_path), svc])  # an explicit file is read whatever its name
    assert result.errors == []
    assert sorted(r.kind for r in result.resources) == ["EndpointSlice", "Gateway", "Service"]


def test_missing_path_and_empty_directory_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = load_paths([tmp_path / "nope.yaml", tmp_path / "empty"])
    assert [str(e) for e in result.errors] == [
        f"{tmp_path / 'nope.yaml'}: no such file or directory",
        f"{tmp_path / 'empty'}: directory has no *.yaml or *.yml files",
    ]


# --- error objects --------------------------------------------------------------------


def test_config_invalid_lists_errors_one_per_line():
    errors = [
        ConfigError("a.yaml", 1, "HTTPRoute/default/r", "spec.rules[0]", "bad"),
        ConfigError("b.yaml", 3, "", "", "worse"),
    ]
    exc = ConfigInvalid(errors)
    assert exc.errors == errors
    assert str(exc) == "a.yaml:1:HTTPRoute/default/r:spec.rules[0]: bad\nb.yaml:3: worse"


# --- meshgate validate ----------------------------------------------------------------


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / "gateway.yaml").write_text(GATEWAY)
    (tmp_path / "routes.yaml").write_text(ROUTE)
    (tmp_path / "services.yaml").write_text(SERVICE)
    return tmp_path


def test_validate_ok_exits_0_and_summarises(config_dir):
    result = CliRunner().invoke(validate, [str(config_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok: 4 resources (1 EndpointSlice, 1 Gateway, 1 HTTPRoute, 1 Service)"


def test_validate_prints_errors_on_stderr_and_exits_1(config_dir):
    bad = config_dir / "routes.yaml"
    bad.write_text(ROUTE.replace("type: PathPrefix", "type: Prefix"))
    (config_dir / "deploy.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
    result = CliRunner().invoke(validate, [str(config_dir)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert f'warning: {config_dir / "deploy.yaml"}:1: skipping apps/v1 Deployment "d": meshgate does not serve this kind' in lines
    assert any(
        line.startswith(f"{bad}:1:HTTPRoute/infra/web:spec.rules[0].matches[0].path.type: Input should be")
        for line in lines
    )
    assert lines[-1] == "invalid: 1 error"


def test_validate_needs_a_path():
    result = CliRunner().invoke(validate, [])
    assert result.exit_code == 2


def test_validate_reports_compiler_errors(config_dir, monkeypatch):
    # The compiler's contract: compile_snapshot(resources) raises ConfigInvalid.
    seen = []

    def compile_snapshot(resources, gateways=None):
        seen.append(([r.key for r in resources], gateways))
        raise ConfigInvalid(
            [ConfigError("routes.yaml", 1, "HTTPRoute/infra/web", "spec.parentRefs[0]", "no such Gateway")]
        )

    fake = types.ModuleType("meshgate.config.compile")
    fake.compile_snapshot = compile_snapshot  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "meshgate.config.compile", fake)
    result = CliRunner().invoke(validate, [str(config_dir)])
    assert result.exit_code == 1
    assert "routes.yaml:1:HTTPRoute/infra/web:spec.parentRefs[0]: no such Gateway" in result.stderr.splitlines()
    (keys, gateways), = seen
    assert len(keys) == 4
    assert gateways is None  # no --gateway: every Gateway is served


SECOND_GATEWAY = GATEWAY.replace("name: gw,", "name: gw2,")


def test_validate_gateway_selects_what_is_compiled(config_dir):
    # Two Gateways on port 8080 with no hostname conflict; serving one of them is fine,
    # which is what `meshgate gateway --gateway infra/gw` would do with this config.
    (config_dir / "gateway2.yaml").write_text(SECOND_GATEWAY)
    result = CliRunner().invoke(validate, [str(config_dir)])
    assert result.exit_code == 1
    assert "conflicts with listener infra/gw/http" in result.stderr

    result = CliRunner().invoke(validate, ["--gateway", "infra/gw", str(config_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: 5 resources")


def test_validate_gateway_is_repeatable(config_dir):
    (config_dir / "gateway2.yaml").write_text(SECOND_GATEWAY)
    args = ["--gateway", "infra/gw", "--gateway", "infra/gw2", str(config_dir)]
    result = CliRunner().invoke(validate, args)
    assert result.exit_code == 1
    assert "conflicts with listener infra/gw/http" in result.stderr
    assert result.stderr.splitlines()[-1] == "invalid: 1 error"


def test_validate_gateway_that_is_not_defined_is_an_error(config_dir):
    result = CliRunner().invoke(validate, ["--gateway", "infra/nope", str(config_dir)])
    assert result.exit_code == 1
    assert "Gateway/infra/nope" in result.stderr
    assert "no such Gateway" in result.stderr


def test_validate_conformance_test_against_its_gateway():
    # base.yaml defines several Gateways on port 80; each conformance test targets one.
    test = CONFORMANCE / "tests" / "httproute-simple-same-namespace.yaml"
    assert CliRunner().invoke(validate, [str(BASE), str(test)]).exit_code == 1
    args = ["--gateway", "gateway-conformance-infra/same-namespace", str(BASE), str(test)]
    result = CliRunner().invoke(validate, args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ok: ")
