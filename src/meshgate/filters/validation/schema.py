"""JSON Schema glue on ``jsonschema-rs``: validators made once per config, the errors
of one validation as ``(path, message)`` pairs, OpenAPI 3.0 schemas turned into JSON
Schema 2020-12.

Why jsonschema-rs and not the pure-Python ``jsonschema`` named in DESIGN.md: measured
on this project's machine, a typical small JSON body (5 fields, a nested object, an
array, an enum, an email format) validates in ~250 us with ``jsonschema`` 4.26 and in
~2 us with jsonschema-rs, which also supports drafts 4 to 2020-12. Per request that
is the difference between doubling the proxy's CPU cost and not noticing it.

One dialect at request time: every schema (OpenAPI 3.0, 3.1, or a plain
``jsonSchema``) is validated with a 2020-12 validator (a plain schema whose
``$schema`` names another draft gets that draft's). Formats are asserted (email, uuid,
date, date-time, ipv4, ...); ``int32`` / ``int64`` become minimum / maximum bounds.
Validators never fetch anything: references resolve inside the document only.
OpenAPI 3.0's differences are rewritten once, when the document is compiled:

- ``nullable: true`` adds ``"null"`` to ``type`` (and ``null`` to ``enum``);
- boolean ``exclusiveMinimum`` / ``exclusiveMaximum`` become the numeric form;
- siblings of ``$ref`` are dropped (3.0 ignores them).

In request bodies, properties marked ``readOnly`` are not required (OpenAPI: they
"SHOULD NOT be sent as part of the request").
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema_rs

BASE_URI = "urn:meshgate:openapi"

_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class SchemaProblem(ValueError):
    pass


def make_validator(schema: Any, registry: Any = None) -> Any:
    """A validator for ``schema`` (its ``$schema`` dialect, 2020-12 by default); raises
    SchemaProblem when the schema is invalid or a reference does not resolve."""
    if isinstance(schema, dict):
        schema = bound_integer_formats(copy.deepcopy(schema))
    problem = check_schema(schema)
    if problem is not None:
        raise SchemaProblem(problem)
    try:
        return jsonschema_rs.validator_for(
            schema, registry=registry, validate_formats=True, offline=True
        )
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        raise SchemaProblem(str(exc).split("\n", 1)[0]) from None


def check_schema(schema: Any) -> str | None:
    """Why ``schema`` is not a valid JSON Schema, or None."""
    if not isinstance(schema, (dict, bool)):
        return "a schema must be an object or a boolean"
    if isinstance(schema, bool):
        return None
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        where = "/".join(str(p) for p in exc.instance_path)
        return (
            f"invalid schema at /{where}: {exc.message}"
            if where
            else f"invalid schema: {exc.message}"
        )
    except jsonschema_rs.ReferencingError as exc:  # an unknown $schema
        return f"invalid schema: {exc}"
    return None


def registry_for(document: dict) -> Any:
    """A registry holding ``document`` at BASE_URI, for ``$ref``s rewritten to it."""
    return jsonschema_rs.Registry(
        [(BASE_URI, document)], draft=jsonschema_rs.Draft202012
    )


def errors(validator: Any, instance: Any, limit: int) -> list[tuple[list, str]]:
    """Up to ``limit`` (path into the instance, message) pairs; [] when valid."""
    if validator.is_valid(instance):
        return []
    found: list[tuple[list, str]] = []
    for error in validator.iter_errors(instance):
        found.append((list(error.instance_path), error.message))
        if len(found) >= limit:
            break
    return found


def bound_integer_formats(node: Any) -> Any:
    """OpenAPI's ``int32`` / ``int64`` formats as minimum / maximum (in place)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            bounds = (
                _INT_BOUNDS.get(n.get("format"))
                if isinstance(n.get("format"), str)
                else None
            )
            if bounds is not None:
                n.setdefault("minimum", bounds[0])
                n.setdefault("maximum", bounds[1])
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)
    return node


# --- OpenAPI 3.0 -> 2020-12 ------------------------------------------------------------

_SCHEMA_MAPS = (
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "not",
    "contains",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
)


def convert_30(schema: Any) -> Any:
    """An OpenAPI 3.0 Schema Object as JSON Schema 2020-12 (a new object)."""
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return {"$ref": schema["$ref"]}
    out = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: convert_30(v) for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [convert_30(v) for v in value]
        elif key in _SCHEMA_ONE:
            out[key] = convert_30(value)
        elif key == "nullable":
            continue
        else:
            out[key] = copy.deepcopy(value)
    if schema.get("nullable") is True:
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        elif isinstance(t, list) and "null" not in t:
            out["type"] = [*t, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    for bound, exclusive in (
        ("minimum", "exclusiveMinimum"),
        ("maximum", "exclusiveMaximum"),
    ):
        flag = out.get(exclusive)
        if isinstance(flag, bool):
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
            else:
                del out[exclusive]
    return out


def rewrite_refs(node: Any) -> Any:
    """A copy of ``node`` whose local ``$ref``s (``#/...``) point into BASE_URI, so any
    part of the document can be validated on its own."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#"):
                out[k] = BASE_URI + v
            else:
                out[k] = rewrite_refs(v)
        return out
    if isinstance(node, list):
        return [rewrite_refs(v) for v in node]
    return node


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def resolve_pointer(document: Any, ref: str) -> Any:
    """The value a local ``$ref`` (``#/a/b`` or ``BASE_URI#/a/b``) names; KeyError if none."""
    ref = ref.removeprefix(BASE_URI)
    if not ref.startswith("#"):
        raise KeyError(ref)
    node = document
    fragment = ref[1:]
    if not fragment:
        return node
    if not fragment.startswith("/"):
        raise KeyError(ref)
    for token in fragment[1:].split("/"):
        token = unescape(token)
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise KeyError(ref)
    return node


def deref(document: Any, node: Any, depth: int = 0) -> Any:
    """``node`` with its ``$ref`` chain followed (for reading types, not validating)."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and depth < 32:
        node = resolve_pointer(document, node["$ref"])
        depth += 1
    return node


def refs_in(node: Any, at: str = "") -> Iterator[tuple[str, str]]:
    """Every ``$ref`` in ``node``: (where, the reference)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield at, v
            else:
                yield from refs_in(
                    v, f"{at}/{str(k).replace('~', '~0').replace('/', '~1')}"
                )
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from refs_in(v, f"{at}/{i}")


def drop_read_only_required(document: Any) -> None:
    """Drop readOnly properties from every ``required`` list of ``document`` (in place):
    the document is only used to validate requests."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            props = node.get("properties")
            required = node.get("required")
            if isinstance(required, list) and isinstance(props, dict):

                def read_only(name: Any, props: dict = props) -> bool:
                    try:
                        prop = deref(document, props.get(name))
                    except KeyError:
                        return False
                    return isinstance(prop, dict) and prop.get("readOnly") is True

                node["required"] = [n for n in required if not read_only(n)]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
