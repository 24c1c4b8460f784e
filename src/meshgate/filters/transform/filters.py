"""The transform filters, one per phase, so a policy only makes the engine do what it
needs: header and query edits are ``on_request`` / ``on_response`` and keep bodies
streaming; only a ``body`` section adds a body hook (and buffering, up to
``maxBodyBytes``).

Body outcomes:

- request: no body -> untouched (nothing is created); a ``Content-Type`` that is not
  JSON -> 415; JSON that does not parse -> 400 (both RFC 9457 problems); else edited
  and re-serialized (compact);
- response: untouched unless its ``Content-Type`` is JSON and it parses; a JSON
  response that does not parse is passed on as it came and logged (at most once a
  minute per policy), since the client should see what the upstream said.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_plus

import orjson

from meshgate.filters.base import Filter
from meshgate.filters.transform import jsonpath
from meshgate.filters.transform.template import MISSING, Template
from meshgate.filters.validation.openapi import is_json, media_type
from meshgate.filters.validation.problem import problem

if TYPE_CHECKING:
    from meshgate.http.headers import Headers
    from meshgate.proxy.context import LocalReply, RequestContext, ResponseHead

log = logging.getLogger(__name__)


class HeaderEdits:
    """remove, then set, then add; templates rendered per request. A ``set`` whose value
    is missing removes the header: the client's own value never stands in for it (a
    spoofed ``x-user`` when the token has no ``sub``); an ``add`` is skipped."""

    __slots__ = ("add", "remove", "set")

    def __init__(
        self,
        remove: tuple[str, ...],
        set_: tuple[tuple[str, Template], ...],
        add: tuple[tuple[str, Template], ...],
    ) -> None:
        self.remove = remove
        self.set = set_
        self.add = add

    def apply(
        self, headers: Headers, ctx: RequestContext, head: ResponseHead | None
    ) -> None:
        for name in self.remove:
            headers.remove(name)
        for name, template in self.set:
            value = template.render(ctx, head)
            if value is MISSING:
                headers.remove(name)
            else:
                headers.set(name, value)
        for name, template in self.add:
            value = template.render(ctx, head)
            if value is not MISSING:
                headers.add(name, value)

    def describe(self) -> dict:
        return {
            "remove": list(self.remove),
            "set": {n: t.source for n, t in self.set},
            "add": {n: t.source for n, t in self.add},
        }


class QueryEdits:
    __slots__ = ("add", "remove", "set")

    def __init__(
        self,
        remove: frozenset[str],
        set_: tuple[tuple[str, Template], ...],
        add: tuple[tuple[str, Template], ...],
    ) -> None:
        self.remove = remove
        self.set = set_
        self.add = add

    def apply(self, query: str, ctx: RequestContext) -> str:
        """The raw query with the edits; parameters not edited keep their exact bytes."""
        pairs = [p for p in query.split("&") if p] if query else []
        dropped = self.remove | {n for n, _ in self.set}
        if dropped:
            pairs = [
                p for p in pairs if unquote_plus(p.partition("=")[0]) not in dropped
            ]
        for name, template in self.set + self.add:
            value = template.render(ctx)
            if value is not MISSING:
                pairs.append(quote(name, safe="") + "=" + quote(value, safe=""))
        return "&".join(pairs)


class BodyEdits:
    """remove, then rename, then set, on a parsed JSON document."""

    __slots__ = ("remove", "rename", "set")

    def __init__(self, remove: tuple, rename: tuple, set_: tuple) -> None:
        self.remove = remove  # (segments, ...)
        self.rename = rename  # ((from segments, to segments), ...)
        self.set = set_  # ((segments, value builder), ...)

    def apply(self, doc: Any, ctx: RequestContext, head: ResponseHead | None) -> Any:
        if not isinstance(doc, (dict, list)):
            return doc  # a scalar document has no fields
        for segs in self.remove:
            jsonpath.remove(doc, segs)
        for src, dst in self.rename:
            jsonpath.rename(doc, src, dst)
        for segs, build in self.set:
            value = build(ctx, head)
            if value is not MISSING:
                jsonpath.set_value(doc, segs, value)
        return doc


def value_builder(value: Any, templates: Any) -> Any:
    """(ctx, head) -> the JSON value to set, with its strings rendered (MISSING when a
    template's value is missing). ``templates(text)`` parses a string."""
    if isinstance(value, str):
        template = templates(value)
        if template.is_literal:
            literal = template.render(None)
            return lambda ctx, head: literal
        return template.value
    if isinstance(value, dict):
        parts = [(k, value_builder(v, templates)) for k, v in value.items()]

        def build_dict(ctx: Any, head: Any) -> Any:
            out = {}
            for k, b in parts:
                v = b(ctx, head)
                if v is MISSING:
                    return MISSING
                out[k] = v
            return out

        return build_dict
    if isinstance(value, list):
        items = [value_builder(v, templates) for v in value]

        def build_list(ctx: Any, head: Any) -> Any:
            out = []
            for b in items:
                v = b(ctx, head)
                if v is MISSING:
                    return MISSING
                out.append(v)
            return out

        return build_list
    return lambda ctx, head: value


# --- the filters -------------------------------------------------------------------------


class RequestTransform(Filter):
    """Request headers and query parameters."""

    __slots__ = ("headers", "query")

    name = "transform-request"

    def __init__(self, headers: HeaderEdits | None, query: QueryEdits | None) -> None:
        self.headers = headers
        self.query = query

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        if self.headers is not None:
            self.headers.apply(ctx.headers, ctx, None)
        if self.query is not None:
            if ctx.upstream_path is None:
                # Later filters (a URL rewrite) build on ctx.query, so edit it there.
                ctx.query = self.query.apply(ctx.query, ctx)
            else:  # a rewrite before us: edit its query
                path, _, query = ctx.upstream_path.partition("?")
                ctx.upstream_path = path + _with_q(self.query.apply(query, ctx))
        return None

    def describe(self) -> dict:
        out: dict = {"type": self.name}
        if self.headers is not None:
            out["headers"] = self.headers.describe()
        if self.query is not None:
            out["queryParams"] = {
                "remove": sorted(self.query.remove),
                "set": {n: t.source for n, t in self.query.set},
                "add": {n: t.source for n, t in self.query.add},
            }
        return out


def _with_q(query: str) -> str:
    return "?" + query if query else ""


class ResponseHeaderTransform(Filter):
    __slots__ = ("headers",)

    name = "transform-response-headers"

    def __init__(self, headers: HeaderEdits) -> None:
        self.headers = headers

    def on_response(self, ctx: RequestContext, head: ResponseHead) -> None:
        self.headers.apply(head.headers, ctx, head)

    def describe(self) -> dict:
        return {"type": self.name, "headers": self.headers.describe()}


class RequestBodyTransform(Filter):
    __slots__ = ("body_limit", "edits")

    name = "transform-request-body"

    def __init__(self, edits: BodyEdits, body_limit: int) -> None:
        self.edits = edits
        self.body_limit = body_limit

    def on_request_body(
        self, ctx: RequestContext, body: bytes
    ) -> LocalReply | bytes | None:
        if not body:
            return None
        content_type = media_type(ctx.headers.get("content-type"))
        if content_type and not is_json(content_type):
            return problem(
                415,
                "transform_media_type",
                f"this route transforms JSON request bodies; the request has Content-Type {content_type}",
            )
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return problem(
                400, "transform_not_json", f"request body is not valid JSON: {exc}"
            )
        return orjson.dumps(self.edits.apply(doc, ctx, None))

    def describe(self) -> dict:
        return {"type": self.name, "maxBodyBytes": self.body_limit}


class ResponseBodyTransform(Filter):
    __slots__ = ("_logged_at", "body_limit", "edits", "policy")

    name = "transform-response-body"

    def __init__(self, edits: BodyEdits, body_limit: int, policy: str) -> None:
        self.edits = edits
        self.body_limit = body_limit
        self.policy = policy
        self._logged_at = -1e9

    def on_response_body(
        self, ctx: RequestContext, head: ResponseHead, body: bytes
    ) -> bytes | None:
        if not body or not is_json(media_type(head.headers.get("content-type"))):
            return None
        if head.headers.get("content-encoding") not in (None, "identity"):
            return None  # compressed: not ours to decode
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            now = time.monotonic()
            if now - self._logged_at >= 60.0:
                self._logged_at = now
                log.warning(
                    "TransformPolicy %s: upstream response to %s %s is not valid JSON (%s); passed on untouched",
                    self.policy,
                    ctx.method,
                    ctx.path,
                    exc,
                )
            return None
        if not isinstance(doc, (dict, list)):
            return None
        return orjson.dumps(self.edits.apply(doc, ctx, head))

    def describe(self) -> dict:
        return {"type": self.name, "maxBodyBytes": self.body_limit}
