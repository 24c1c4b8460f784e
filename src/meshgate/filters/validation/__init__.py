"""ValidationPolicy (meshgate.dev): requests checked against an OpenAPI 3.0 / 3.1
document or a JSON Schema, refused with RFC 9457 problems (``problem.py``).

``build(spec, refs)`` compiles the policy once per config: the document is read
(inline, or from a ConfigMap through ``refs``), parsed, its schemas checked and turned
into validators, its paths into regexes (``openapi.py``, ``schema.py``). Anything that
does not compile is a config error at ``spec.openapi...`` naming the document's JSON
pointer, so a broken document never reaches a request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from meshgate.filters.validation import schema as js
from meshgate.filters.validation.filters import (
    OpenAPIBodyValidation,
    OperationValidation,
    SchemaBodyValidation,
)
from meshgate.filters.validation.openapi import DocumentError, compile_document

if TYPE_CHECKING:
    from meshgate.config.compile.refs import PolicyRefs
    from meshgate.config.models.validation_policy import (
        OpenAPISource,
        ValidationPolicySpec,
    )
    from meshgate.filters.base import Filter

__all__ = ["build"]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML as JSON sees it: ``2024-01-01`` stays a string (a date in an enum or a
    default must compare equal to the request's text)."""


_Loader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def build(spec: ValidationPolicySpec, refs: PolicyRefs) -> tuple[Filter, ...]:
    """The filters of one ValidationPolicy: () after recording errors in ``refs``."""
    if spec.jsonSchema is not None:
        section = spec.jsonSchema
        try:
            validator = js.make_validator(section.schema_)
        except js.SchemaProblem as exc:
            refs.error(("jsonSchema", "schema"), str(exc))
            return ()
        return (
            SchemaBodyValidation(
                validator,
                frozenset(section.methods),
                section.required,
                spec.maxBodyBytes,
                spec.maxErrors,
            ),
        )
    source = spec.openapi
    assert source is not None  # the model requires one of the two
    document, where = _read(source, refs)
    if document is None:
        return ()
    try:
        table = compile_document(document)
    except DocumentError as exc:
        at = f" at {exc.where}" if exc.where else ""
        refs.error(where, f"OpenAPI document{at}: {exc.message}")
        return ()
    has_body = any(
        op.body is not None for item in _items(table) for op in item.operations.values()
    )
    filters: list[Filter] = [
        OperationValidation(
            table,
            source.basePath,
            source.rejectUnknownOperations,
            source.unknownOperationStatus,
            spec.maxErrors,
            body_checked=has_body,
        )
    ]
    if has_body:
        filters.append(OpenAPIBodyValidation(spec.maxBodyBytes, spec.maxErrors))
    return tuple(filters)


def _items(table: Any) -> list:
    return list(table.concrete.values()) + list(table.templated)


def _read(source: OpenAPISource, refs: PolicyRefs) -> tuple[Any, tuple]:
    """The parsed document and the field path its errors are reported at."""
    if source.inline is not None:
        where: tuple = ("openapi", "inline")
        text = source.inline
    else:
        ref = source.configMapRef
        where = ("openapi", "configMapRef")
        data = refs.configmap(ref.name, where, ref.namespace)
        if data is None:
            return None, where
        if ref.key not in data:
            refs.error(
                (*where, "key"),
                f"ConfigMap {ref.name} has no key {ref.key!r} (keys: {', '.join(sorted(data)) or 'none'})",
            )
            return None, where
        text = data[ref.key]
    if isinstance(text, str):
        try:
            document = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            refs.error(where, f"the OpenAPI document is not YAML or JSON: {exc}")
            return None, where
    else:
        document = text
    return document, where
