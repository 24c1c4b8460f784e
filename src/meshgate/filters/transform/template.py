"""The value templates of TransformPolicy: literal text with ``{placeholders}``.

Grammar (parsed once, at config load; rendering never parses or evaluates):

    template    := ( literal | "{{" | "}}" | placeholder )*
    placeholder := "{" name ( "|" default )? "}"
    name        := header.NAME | response_header.NAME | query.NAME | claim.DOTTED.PATH
                 | consumer | route | method | path | host | client_ip | request_id | status

``{{`` and ``}}`` are literal braces. ``default`` is literal text (no braces) used when
the value is missing; without one, a missing value makes the whole template *missing*
and the operation that uses it is skipped (a header is not set to an empty string).
``response_header.*`` and ``status`` exist only in a response section.

Values: strings as they are; numbers as JSON writes them; booleans ``true``/``false``;
lists of scalars joined with ``,``; objects as compact JSON. A rendered value with a
control character (CR, LF, NUL, ...) counts as missing, so a claim can never split a
header. For a JSON body, a template that is exactly one placeholder keeps the value's
JSON type (``{claim.roles}`` inserts the list itself).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

# A marker for "no value": distinct from None, which is JSON null.
MISSING: Any = type(
    "Missing", (), {"__repr__": lambda self: "MISSING", "__slots__": ()}
)()

_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP token
_CLAIM_RE = re.compile(r"^[^.\s{}|]+(\.[^.\s{}|]+)*$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

SIMPLE = (
    "consumer",
    "route",
    "method",
    "path",
    "host",
    "client_ip",
    "request_id",
    "status",
)
PREFIXED = ("header", "response_header", "query", "claim")
RESPONSE_ONLY = ("response_header", "status")


class TemplateError(ValueError):
    pass


Getter = Callable[[Any, Any], Any]  # (ctx, response head or None) -> value or MISSING


def _claim(path: tuple[str, ...]) -> Getter:
    def get(ctx: Any, head: Any) -> Any:
        value = ctx.claims
        if value is None:
            return MISSING
        for part in path:
            if isinstance(value, dict):
                value = value.get(part, MISSING)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return MISSING
            if value is MISSING:
                return MISSING
        return value

    return get


def _header(name: str) -> Getter:
    def get(ctx: Any, head: Any) -> Any:
        value = ctx.headers.get_joined(name)
        return MISSING if value is None else value

    return get


def _response_header(name: str) -> Getter:
    def get(ctx: Any, head: Any) -> Any:
        value = head.headers.get_joined(name) if head is not None else None
        return MISSING if value is None else value

    return get


def _query(name: str) -> Getter:
    def get(ctx: Any, head: Any) -> Any:
        if not ctx.query:
            return MISSING
        for k, v in parse_qsl(ctx.query, keep_blank_values=True):
            if k == name:
                return v
        return MISSING

    return get


def _opt(value: Any) -> Any:
    return MISSING if value is None or value == "" else value


_SIMPLE_GETTERS: dict[str, Getter] = {
    "consumer": lambda ctx, head: _opt(ctx.consumer),
    "route": lambda ctx, head: ctx.rule.route if ctx.rule is not None else MISSING,
    "method": lambda ctx, head: ctx.method,
    "path": lambda ctx, head: ctx.path,
    "host": lambda ctx, head: _opt(ctx.host),
    "client_ip": lambda ctx, head: _opt(ctx.client_ip),
    "request_id": lambda ctx, head: _opt(ctx.request_id),
    "status": lambda ctx, head: head.status if head is not None else MISSING,
}


def to_text(value: Any) -> str:
    """A value as header / query text (see the module docstring)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return orjson.dumps(value).decode()
    if value is None:
        return "null"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ",".join(to_text(v) for v in value)
    return orjson.dumps(value).decode()


class Template:
    """A parsed template; ``render`` gives text or MISSING, ``value`` a JSON value."""

    __slots__ = ("names", "parts", "single", "source")

    def __init__(self, source: str, parts: tuple, names: tuple[str, ...]) -> None:
        self.source = source
        # str (literal) or (getter, default-or-None)
        self.parts = parts
        self.names = names
        self.single = len(parts) == 1 and not isinstance(parts[0], str)

    @property
    def is_literal(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def render(self, ctx: Any, head: Any = None) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            getter, default = part
            value = getter(ctx, head)
            if value is MISSING:
                if default is None:
                    return MISSING
                out.append(default)
            else:
                out.append(to_text(value))
        text = "".join(out)
        if _CONTROL_RE.search(text) is not None:
            return MISSING
        return text

    def value(self, ctx: Any, head: Any = None) -> Any:
        """For JSON bodies: a lone placeholder keeps its value's type."""
        if self.single:
            getter, default = self.parts[0]
            value = getter(ctx, head)
            if value is MISSING:
                return MISSING if default is None else default
            return value
        return self.render(ctx, head)


def _placeholder(body: str, response: bool) -> tuple[Getter, str | None, str]:
    name, sep, default = body.partition("|")
    name = name.strip()
    if sep and ("{" in default or "}" in default):
        raise TemplateError("a default may not contain braces")
    prefix, dot, rest = name.partition(".")
    if not dot:
        if name not in SIMPLE:
            raise TemplateError(f"unknown value {{{name}}}; known: {_known()}")
        if name in RESPONSE_ONLY and not response:
            raise TemplateError(f"{{{name}}} is only available in a response section")
        return _SIMPLE_GETTERS[name], default if sep else None, name
    if prefix not in PREFIXED:
        raise TemplateError(f"unknown value {{{name}}}; known: {_known()}")
    if prefix in RESPONSE_ONLY and not response:
        raise TemplateError(f"{{{name}}} is only available in a response section")
    if prefix == "claim":
        if not _CLAIM_RE.match(rest):
            raise TemplateError(
                f"{{{name}}}: a claim is a dotted path like claim.org.id"
            )
        getter = _claim(tuple(rest.split(".")))
    else:
        if not _NAME_RE.match(rest):
            raise TemplateError(
                f"{{{name}}}: {rest!r} is not a valid {prefix.replace('_', ' ')} name"
            )
        if prefix == "query":
            getter = _query(rest)
        elif prefix == "header":
            getter = _header(rest.lower())
        else:
            getter = _response_header(rest.lower())
    return getter, default if sep else None, name


def _known() -> str:
    return ", ".join([f"{{{p}.NAME}}" for p in PREFIXED] + [f"{{{s}}}" for s in SIMPLE])


_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def parse(source: str, response: bool = False) -> Template:
    """Parse ``source``; raises TemplateError naming what is wrong."""
    parts: list = []
    names: list[str] = []
    literal: list[str] = []
    pos = 0
    for m in _TOKEN_RE.finditer(source):
        literal.append(source[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token == "{{":
            literal.append("{")
        elif token == "}}":
            literal.append("}")
        elif m.group(1) is not None:
            if literal and "".join(literal):
                parts.append("".join(literal))
            literal = []
            getter, default, name = _placeholder(m.group(1), response)
            parts.append((getter, default))
            names.append(name)
        else:
            raise TemplateError(
                f"unmatched {token!r} at offset {m.start()}: write {token}{token} for a literal brace"
            )
    literal.append(source[pos:])
    if "".join(literal):
        parts.append("".join(literal))
    return Template(source, tuple(parts), tuple(names))
