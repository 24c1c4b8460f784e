"""An OpenAPI 3.0 / 3.1 document compiled, once per config, into an ``OperationTable``:
path templates as regexes (concrete paths first, as the spec says), each operation's
parameters with their deserialization (style / explode) and validators, and its request
body's media types.

What is validated: path, query, header and cookie parameters (``schema`` with the
default styles: simple, form, deepObject, spaceDelimited, pipeDelimited; or
``content: application/json``) and JSON request bodies (``application/json`` and
``*/*+json``). Bodies of other media types are accepted as declared, not inspected.
Only local ``$ref``s (``#/...``) are followed; a reference to another document is a
config error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from meshgate.filters.validation import schema as js

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_IGNORED_HEADERS = ("accept", "content-type", "authorization")
_INT_RE = re.compile(r"^-?\d+$")
_NUM_RE = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_DEFAULT_STYLE = {
    "path": "simple",
    "query": "form",
    "header": "simple",
    "cookie": "form",
}
_STYLES = {
    "path": ("simple", "label", "matrix"),
    "query": ("form", "spaceDelimited", "pipeDelimited", "deepObject"),
    "header": ("simple",),
    "cookie": ("form",),
}


class DocumentError(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where  # a JSON pointer into the document
        self.message = message


# --- scalar coercion: text -> the schema's type; unchanged when it does not parse, so
# the validator reports "'abc' is not of type 'integer'" -------------------------------


def _to_int(s: str) -> Any:
    return int(s) if _INT_RE.match(s) else s


def _to_number(s: str) -> Any:
    if _INT_RE.match(s):
        return int(s)
    return float(s) if _NUM_RE.match(s) else s


def _to_bool(s: str) -> Any:
    return True if s == "true" else False if s == "false" else s


def _as_is(s: str) -> Any:
    return s


_COERCE = {"integer": _to_int, "number": _to_number, "boolean": _to_bool}


def _type_of(document: dict, schema: Any) -> str | None:
    schema = js.deref(document, schema)
    if not isinstance(schema, dict):
        return None
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    if t is None:
        for key in ("allOf", "oneOf", "anyOf"):
            for sub in schema.get(key) or ():
                t = _type_of(document, sub)
                if t is not None:
                    return t
    return t if isinstance(t, str) else None


# --- parameters -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    location: str  # path | query | header | cookie
    required: bool
    shape: str  # scalar | array | object | json
    style: str
    explode: bool
    coerce: Any  # str -> value, for scalars and array items
    props: dict  # object properties -> coerce
    validator: Any

    def extract(self, raw: Any) -> Any:
        """The parameter's value from its raw form, or js-MISSING (None here) when absent.
        ``raw``: for query, the parsed pairs; else the text value or None."""
        if self.location == "query":
            return self._from_query(raw)
        if raw is None:
            return None
        if self.shape == "json":
            return self._json(raw)
        if self.shape == "array":
            return [self.coerce(v) for v in self._split(raw)]
        if self.shape == "object":
            parts = self._split(raw)
            if self.explode:
                pairs = [p.partition("=") for p in parts]
                return {k: self._prop(k, v) for k, _, v in pairs}
            return {
                parts[i]: self._prop(parts[i], parts[i + 1])
                for i in range(0, len(parts) - 1, 2)
            }
        return self.coerce(raw)

    def _split(self, raw: str) -> list[str]:
        if self.location == "path" and self.style == "label":
            raw = raw.removeprefix(".")
            return raw.split("." if self.explode else ",")
        if self.location == "path" and self.style == "matrix":
            prefix = f";{self.name}="
            raw = raw[len(prefix) :] if raw.startswith(prefix) else raw.lstrip(";")
            return raw.split(prefix if self.explode else ",")
        return raw.split(",")

    def _prop(self, key: str, value: str) -> Any:
        return self.props.get(key, _as_is)(value)

    def _json(self, raw: str) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw  # the validator says what it should have been

    def _from_query(self, pairs: dict[str, list[str]]) -> Any:
        if self.shape == "object" and self.style == "deepObject":
            prefix = self.name + "["
            found = {
                k[len(prefix) : -1]: vs[-1]
                for k, vs in pairs.items()
                if k.startswith(prefix) and k.endswith("]")
            }
            return {k: self._prop(k, v) for k, v in found.items()} if found else None
        if self.shape == "object" and self.explode:
            found = {k: pairs[k][-1] for k in self.props if k in pairs}
            return {k: self._prop(k, v) for k, v in found.items()} if found else None
        values = pairs.get(self.name)
        if values is None:
            return None
        if self.shape == "array":
            if self.explode and self.style == "form":
                return [self.coerce(v) for v in values]
            sep = {"form": ",", "spaceDelimited": " ", "pipeDelimited": "|"}[self.style]
            return [self.coerce(v) for v in values[-1].split(sep)] if values[-1] else []
        if self.shape == "object":
            parts = values[-1].split(",")
            return {
                parts[i]: self._prop(parts[i], parts[i + 1])
                for i in range(0, len(parts) - 1, 2)
            }
        if self.shape == "json":
            return self._json(values[-1])
        return self.coerce(values[-1])


# --- request bodies --------------------------------------------------------------------


def media_type(value: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; "" for none."""
    if not value:
        return ""
    return value.split(";", 1)[0].strip().lower()


def is_json(media: str) -> bool:
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


@dataclass(frozen=True, slots=True)
class Body:
    required: bool
    # (media range, validator or None), exact ranges first, then type/*, then */*
    media: tuple[tuple[str, Any], ...]
    accepted: str  # the media ranges, for error messages and Accept-* headers

    def match(self, content_type: str) -> tuple[str, Any] | None:
        for rng, validator in self.media:
            if rng == content_type or rng == "*/*":
                return rng, validator
            if rng.endswith("/*") and content_type.startswith(rng[:-1]):
                return rng, validator
        return None


# --- operations ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    label: str  # "POST /pets/{petId}"
    path_params: tuple[Param, ...]
    query_params: tuple[Param, ...]
    header_params: tuple[Param, ...]
    cookie_params: tuple[Param, ...]
    body: Body | None

    @property
    def has_params(self) -> bool:
        return bool(
            self.path_params
            or self.query_params
            or self.header_params
            or self.cookie_params
        )


@dataclass(slots=True)
class PathItem:
    template: str
    regex: re.Pattern[str] | None  # None for a concrete path
    names: tuple[str, ...]
    operations: dict[str, Operation] = field(default_factory=dict)  # "GET" -> op


class OperationTable:
    """The document's operations, matched by path and method."""

    __slots__ = ("concrete", "count", "templated")

    def __init__(self, items: list[PathItem]) -> None:
        self.concrete = {i.template: i for i in items if i.regex is None}
        # More literal text first, then fewer parameters (OpenAPI leaves ties undefined).
        self.templated = sorted(
            (i for i in items if i.regex is not None),
            key=lambda i: (-len(re.sub(r"\{[^}]*\}", "", i.template)), len(i.names)),
        )
        self.count = sum(len(i.operations) for i in items)

    def match(self, path: str) -> tuple[PathItem, dict[str, str]] | None:
        item = self.concrete.get(path)
        if item is not None:
            return item, {}
        for item in self.templated:
            m = item.regex.match(path)  # type: ignore[union-attr]
            if m is not None:
                return item, {
                    n: unquote(v) for n, v in zip(item.names, m.groups(), strict=True)
                }
        return None


_TEMPLATE_RE = re.compile(r"\{([^{}/]+)\}")


def _path_regex(template: str) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    names = tuple(_TEMPLATE_RE.findall(template))
    if not names:
        return None, ()
    out, pos = [], 0
    for m in _TEMPLATE_RE.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append("([^/]+?)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$"), names


def _esc(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class _Compiler:
    def __init__(self, document: dict) -> None:
        self.doc = document
        self.registry = js.registry_for(document)

    def deref(self, node: Any, where: str) -> Any:
        try:
            return js.deref(self.doc, node)
        except KeyError as exc:
            raise DocumentError(
                where, f"$ref {exc.args[0]!r} does not resolve"
            ) from None

    def validator(self, schema: Any, where: str) -> Any:
        try:
            return js.make_validator(schema, self.registry)
        except js.SchemaProblem as exc:
            raise DocumentError(where, str(exc)) from None

    def param(self, raw: Any, where: str) -> Param:
        p = self.deref(raw, where)
        if (
            not isinstance(p, dict)
            or not isinstance(p.get("name"), str)
            or p.get("in") not in _DEFAULT_STYLE
        ):
            raise DocumentError(
                where,
                "a parameter needs a name and `in` (path, query, header or cookie)",
            )
        location, name = p["in"], p["name"]
        style = p.get("style", _DEFAULT_STYLE[location])
        if style not in _STYLES[location]:
            raise DocumentError(
                f"{where}/style",
                f"style {style!r} is not defined for {location} parameters",
            )
        explode = bool(p.get("explode", style == "form"))
        required = bool(p.get("required", False)) or location == "path"
        props: dict = {}
        if "content" in p:
            content = p["content"]
            if not isinstance(content, dict) or len(content) != 1:
                raise DocumentError(
                    f"{where}/content",
                    "a parameter's content has exactly one media type",
                )
            ((media, obj),) = content.items()
            schema = obj.get("schema", True) if isinstance(obj, dict) else True
            if not is_json(media_type(media)):
                schema, shape = True, "scalar"  # not JSON: accepted as text
            else:
                shape = "json"
            coerce = _as_is
            spot = f"{where}/content/{_esc(media)}/schema"
        else:
            schema = p.get("schema", True)
            spot = f"{where}/schema"
            kind = _type_of(self.doc, self.deref(schema, spot))
            shape = kind if kind in ("array", "object") else "scalar"
            coerce = _COERCE.get(kind or "", _as_is)
            resolved = self.deref(schema, spot)
            if shape == "array":
                items = (
                    resolved.get("items", True) if isinstance(resolved, dict) else True
                )
                coerce = _COERCE.get(_type_of(self.doc, items) or "", _as_is)
            elif shape == "object":
                properties = resolved.get("properties") or {}
                props = {
                    k: _COERCE.get(_type_of(self.doc, v) or "", _as_is)
                    for k, v in properties.items()
                }
            if style == "deepObject" and shape != "object":
                raise DocumentError(
                    f"{where}/style", "deepObject applies to object parameters only"
                )
        return Param(
            name=name if location != "header" else name.lower(),
            location=location,
            required=required,
            shape=shape,
            style=style,
            explode=explode,
            coerce=coerce,
            props=props,
            validator=self.validator(schema, spot),
        )

    def body(self, raw: Any, where: str) -> Body:
        b = self.deref(raw, where)
        content = b.get("content") if isinstance(b, dict) else None
        if not isinstance(content, dict) or not content:
            raise DocumentError(where, "a requestBody needs a non-empty content map")
        media = []
        for rng, obj in content.items():
            spot = f"{where}/content/{_esc(rng)}"
            schema = obj.get("schema") if isinstance(obj, dict) else None
            validator = None
            if schema is not None:
                validator = self.validator(schema, f"{spot}/schema")
            media.append((media_type(rng), validator))
        media.sort(key=lambda m: (m[0] == "*/*", m[0].endswith("/*")))
        return Body(
            bool(b.get("required", False)), tuple(media), ", ".join(m for m, _ in media)
        )

    def operations(self, template: str, item: Any, where: str) -> PathItem:
        item = self.deref(item, where)
        if not isinstance(item, dict):
            raise DocumentError(where, "a path item must be an object")
        regex, names = _path_regex(template)
        out = PathItem(template, regex, names)
        shared = item.get("parameters") or []
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            spot = f"{where}/{method}"
            if not isinstance(op, dict):
                raise DocumentError(spot, "an operation must be an object")
            params: dict[tuple[str, str], Param] = {}
            for i, p in enumerate(shared):
                param = self.param(p, f"{where}/parameters/{i}")
                params[(param.location, param.name)] = param
            for i, p in enumerate(op.get("parameters") or []):
                param = self.param(p, f"{spot}/parameters/{i}")
                params[(param.location, param.name)] = param  # the operation's wins
            for loc, name in params:
                if loc == "path" and name not in names:
                    raise DocumentError(
                        spot,
                        f"path parameter {name!r} is not in the path template {template!r}",
                    )
            missing = [n for n in names if ("path", n) not in params]
            by = {
                loc: tuple(p for (l2, _), p in params.items() if l2 == loc)
                for loc in _DEFAULT_STYLE
            }
            body = (
                self.body(op["requestBody"], f"{spot}/requestBody")
                if "requestBody" in op
                else None
            )
            out.operations[method.upper()] = Operation(
                label=f"{method.upper()} {template}",
                path_params=by["path"]
                + tuple(
                    # An undeclared template variable: any non-empty segment text.
                    Param(
                        n,
                        "path",
                        True,
                        "scalar",
                        "simple",
                        False,
                        _as_is,
                        {},
                        js.make_validator(True),
                    )
                    for n in missing
                ),
                query_params=by["query"],
                header_params=tuple(
                    p for p in by["header"] if p.name not in _IGNORED_HEADERS
                ),
                cookie_params=by["cookie"],
                body=body,
            )
        return out


def compile_document(raw: dict) -> OperationTable:
    """Compile an OpenAPI document (already parsed); raises DocumentError."""
    if not isinstance(raw, dict):
        raise DocumentError("", "an OpenAPI document is a mapping")
    version = raw.get("openapi")
    if not isinstance(version, str) or not re.match(r"^3\.[01]\.\d+", version):
        found = "swagger 2.0" if "swagger" in raw else repr(version)
        raise DocumentError(
            "/openapi", f"OpenAPI 3.0.x or 3.1.x is required, found {found}"
        )
    paths = raw.get("paths")
    if not isinstance(paths, dict):
        raise DocumentError("/paths", "the document has no paths")
    document = raw
    if version.startswith("3.0"):
        document = dict(raw)
        components = dict(raw.get("components") or {})
        if isinstance(components.get("schemas"), dict):
            components["schemas"] = {
                k: js.convert_30(v) for k, v in components["schemas"].items()
            }
        document["components"] = components
        document["paths"] = _convert_paths_30(paths)
        for section in ("parameters", "requestBodies"):
            if isinstance(components.get(section), dict):
                components[section] = {
                    k: _convert_holder_30(v) for k, v in components[section].items()
                }
    for where, ref in js.refs_in(document):
        if not ref.startswith("#"):
            raise DocumentError(
                where,
                f"$ref {ref!r}: only references inside the document (#/...) are supported",
            )
        try:
            js.resolve_pointer(document, ref)
        except KeyError:
            raise DocumentError(where, f"$ref {ref!r} does not resolve") from None
    document = js.rewrite_refs(document)
    js.drop_read_only_required(document)
    js.bound_integer_formats(document)
    compiler = _Compiler(document)
    items = []
    for template, item in document["paths"].items():
        if not isinstance(template, str) or not template.startswith("/"):
            raise DocumentError("/paths", f"path {template!r} must start with /")
        items.append(compiler.operations(template, item, f"/paths/{_esc(template)}"))
    return OperationTable(items)


def _convert_holder_30(node: Any) -> Any:
    """A parameter / requestBody / media type object with its schemas converted."""
    if not isinstance(node, dict) or "$ref" in node:
        return node
    out = dict(node)
    if "schema" in out:
        out["schema"] = js.convert_30(out["schema"])
    if isinstance(out.get("content"), dict):
        out["content"] = {k: _convert_holder_30(v) for k, v in out["content"].items()}
    return out


def _convert_paths_30(paths: dict) -> dict:
    out = {}
    for template, item in paths.items():
        if not isinstance(item, dict):
            out[template] = item
            continue
        new = dict(item)
        if isinstance(item.get("parameters"), list):
            new["parameters"] = [_convert_holder_30(p) for p in item["parameters"]]
        for method in METHODS:
            op = item.get(method)
            if isinstance(op, dict):
                op = dict(op)
                if isinstance(op.get("parameters"), list):
                    op["parameters"] = [_convert_holder_30(p) for p in op["parameters"]]
                if isinstance(op.get("requestBody"), dict):
                    op["requestBody"] = _convert_holder_30(op["requestBody"])
                new[method] = op
        out[template] = new
    return out
