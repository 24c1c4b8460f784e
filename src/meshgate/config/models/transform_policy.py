"""``meshgate.dev/v1alpha1`` TransformPolicy: rewrite requests before they go upstream
and responses before they go back: headers and query parameters from templates
(``{header.x-tenant}``, ``{claim.sub}``, ``{consumer}``, ...), and fields of JSON bodies
(set / remove / rename by dotted path or JSON pointer).

Templates and paths are parsed here, at load time, so a typo is a config error with its
field path; the filters (``filters/transform``) get them compiled.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from meshgate.config.models.meta import FieldError, HeaderName, ResourceBase, Strict
from meshgate.config.models.policy_common import Section, TargetedSpec
from meshgate.filters.transform.jsonpath import PathError, has_wild, parse_path
from meshgate.filters.transform.template import TemplateError, parse

DEFAULT_MAX_BODY = 1024 * 1024

# Fields the engine owns: framing and hop-by-hop headers are never a transform's to set.
RESERVED_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "host",
    }
)
_QUERY_NAME_RE = re.compile(r"^[^&=#\s]+$")


class HeaderValue(Strict):
    name: HeaderName = Field(description="Header name (case-insensitive).")
    value: str = Field(
        max_length=4096,
        description="Template of the value: text with `{placeholders}` (see docs/transform.md). "
        "When a placeholder without a `|default` has no value, `set` removes the header "
        "(the client's value never stands in) and `add` adds nothing.",
    )


class HeaderOps(Section):
    """Header edits, applied in this order: remove, set, add."""

    remove: list[HeaderName] = Field(
        default_factory=list, max_length=64, description="Headers removed."
    )
    set: list[HeaderValue] = Field(
        default_factory=list,
        max_length=64,
        description="Headers set, replacing any value they had.",
    )
    add: list[HeaderValue] = Field(
        default_factory=list,
        max_length=64,
        description="Headers added after any values they have.",
    )

    @model_validator(mode="after")
    def _names(self) -> HeaderOps:
        for field in ("remove", "set", "add"):
            for i, item in enumerate(getattr(self, field)):
                name = (item if isinstance(item, str) else item.name).lower()
                if name in RESERVED_HEADERS:
                    where = (field, i) if isinstance(item, str) else (field, i, "name")
                    raise FieldError(
                        where,
                        f"{name} is managed by the proxy and cannot be transformed",
                    )
        return self


class QueryValue(Strict):
    name: str = Field(
        min_length=1,
        max_length=256,
        description="Query parameter name (exact, case-sensitive).",
    )
    value: str = Field(
        max_length=4096, description="Template of the value; percent-encoded when sent."
    )

    @model_validator(mode="after")
    def _name(self) -> QueryValue:
        if not _QUERY_NAME_RE.match(self.name):
            raise FieldError(
                ("name",), "a query parameter name cannot contain &, =, # or spaces"
            )
        return self


class QueryOps(Section):
    """Query parameter edits (request only), applied in this order: remove, set, add."""

    remove: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Parameters removed (every occurrence).",
    )
    set: list[QueryValue] = Field(
        default_factory=list,
        max_length=64,
        description="Parameters set, replacing every occurrence.",
    )
    add: list[QueryValue] = Field(
        default_factory=list,
        max_length=64,
        description="Parameters added as one more occurrence.",
    )


class BodySet(Strict):
    path: str = Field(
        min_length=1,
        description="Dotted path (`a.b.0`, `items.*.id`, `tags.-` appends) or JSON pointer (`/a/b`).",
    )
    value: Any = Field(
        description="Any JSON value. Strings are templates; a string that is exactly one "
        "placeholder keeps the value's type (`{claim.roles}` is the list). A missing value "
        "without default skips this edit.",
    )


class BodyRename(Strict):
    from_: str = Field(
        alias="from", min_length=1, description="Path of the field to move."
    )
    to: str = Field(
        min_length=1,
        description="Where it goes. When `from` has a `*`, `to` must be the same path with "
        "another last segment (a field renamed in each element).",
    )


class BodyOps(Section):
    """JSON body edits, applied in this order: remove, rename, set."""

    remove: list[str] = Field(
        default_factory=list, max_length=64, description="Paths removed."
    )
    rename: list[BodyRename] = Field(
        default_factory=list, max_length=64, description="Fields moved."
    )
    set: list[BodySet] = Field(
        default_factory=list,
        max_length=64,
        description="Fields set (created with their parents).",
    )


class _Direction(Section):
    def _check(self, response: bool) -> None:
        headers = getattr(self, "headers", None)
        if headers is not None:
            for field in ("set", "add"):
                for i, item in enumerate(getattr(headers, field)):
                    _template(item.value, response, ("headers", field, i, "value"))
        query = getattr(self, "queryParams", None)
        if query is not None:
            for field in ("set", "add"):
                for i, item in enumerate(getattr(query, field)):
                    _template(item.value, response, ("queryParams", field, i, "value"))
        body = self.body  # type: ignore[attr-defined]
        if body is not None:
            for i, p in enumerate(body.remove):
                _path(p, ("body", "remove", i))
            for i, r in enumerate(body.rename):
                src = _path(r.from_, ("body", "rename", i, "from"), wild=True)
                dst = _path(
                    r.to, ("body", "rename", i, "to"), append=True, wild=has_wild(src)
                )
                if has_wild(src) and (
                    dst[:-1] != src[:-1] or not isinstance(dst[-1], str)
                ):
                    raise FieldError(
                        ("body", "rename", i, "to"),
                        "with a '*' in from, to must be the same path with another last segment",
                    )
            for i, s in enumerate(body.set):
                _path(s.path, ("body", "set", i, "path"), append=True)
                _values(s.value, response, ("body", "set", i, "value"))

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in type(self).model_fields)


def _template(text: str, response: bool, where: tuple) -> None:
    try:
        parse(text, response)
    except TemplateError as exc:
        raise FieldError(where, str(exc)) from None


def _values(value: Any, response: bool, where: tuple) -> None:
    if isinstance(value, str):
        _template(value, response, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            _values(v, response, (*where, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _values(v, response, (*where, i))


def _path(text: str, where: tuple, append: bool = False, wild: bool = True) -> tuple:
    try:
        return parse_path(text, allow_append=append, allow_wild=wild)
    except PathError as exc:
        raise FieldError(where, str(exc)) from None


class RequestTransform(_Direction):
    headers: HeaderOps | None = Field(default=None, description="Request header edits.")
    queryParams: QueryOps | None = Field(
        default=None, description="Query parameter edits."
    )
    body: BodyOps | None = Field(
        default=None,
        description="JSON request body edits. The body is buffered (up to maxBodyBytes: 413 "
        "over it); a body that is not JSON is refused (415 wrong Content-Type, 400 malformed).",
    )

    @model_validator(mode="after")
    def _rules(self) -> RequestTransform:
        self._check(response=False)
        return self


class ResponseTransform(_Direction):
    headers: HeaderOps | None = Field(
        default=None, description="Response header edits."
    )
    body: BodyOps | None = Field(
        default=None,
        description="JSON response body edits. The body is buffered (up to maxBodyBytes: 502 "
        "over it); a response that is not JSON is passed on untouched.",
    )

    @model_validator(mode="after")
    def _rules(self) -> ResponseTransform:
        self._check(response=True)
        return self


class TransformPolicySpec(TargetedSpec):
    """Targets and the request / response edits."""

    request: RequestTransform | None = Field(
        default=None, description="Edits of the request."
    )
    response: ResponseTransform | None = Field(
        default=None, description="Edits of the response."
    )
    maxBodyBytes: int = Field(
        default=DEFAULT_MAX_BODY,
        ge=1,
        le=64 * 1024 * 1024,
        description="Largest body buffered for a body edit, in bytes (request over it: 413; "
        "response over it: 502). Only used when a `body` section is set.",
    )

    @model_validator(mode="after")
    def _some(self) -> TransformPolicySpec:
        if (self.request is None or self.request.is_empty()) and (
            self.response is None or self.response.is_empty()
        ):
            raise FieldError(
                (), "at least one of request or response must have an edit"
            )
        return self


class TransformPolicy(ResourceBase):
    """Request and response rewriting: headers, query parameters, JSON body fields."""

    apiVersion: Literal["meshgate.dev/v1alpha1"] = Field(
        description="Always `meshgate.dev/v1alpha1`."
    )
    kind: Literal["TransformPolicy"] = Field(description="Always `TransformPolicy`.")
    spec: TransformPolicySpec = Field(description="Targets and edits.")
