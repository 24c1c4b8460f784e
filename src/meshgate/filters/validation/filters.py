"""The validation filters. Per request they only look up precompiled things: the
operation (a dict lookup, or a scan of the path-template regexes), the parameter
validators, the body's media type and validator.

- ``OperationValidation.on_request``: finds the operation (unknown: 400/404; a known
  path with another method: 405 + ``Allow``), validates path, query, header and cookie
  parameters, and refuses a wrong ``Content-Type`` (415) before the body is read.
- ``OpenAPIBodyValidation.on_request_body``: the JSON body of the operation found above
  (400 when it is required and empty, not JSON, or does not match its schema).
- ``SchemaBodyValidation.on_request_body``: a plain ``jsonSchema`` for the bodies of
  the configured methods.

Body filters exist only when a body can be checked, so routes whose operations take
no JSON body keep streaming. Every refusal goes through ``problem.problem``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from meshgate.filters.base import Filter
from meshgate.filters.validation import schema as js
from meshgate.filters.validation.openapi import (
    Body,
    Operation,
    OperationTable,
    is_json,
    media_type,
)
from meshgate.filters.validation.problem import pointer, problem

if TYPE_CHECKING:
    from meshgate.proxy.context import LocalReply, RequestContext

# Where the operation found by on_request waits for the body hook.
OPERATION_VAR = "validation.operation"


def _no_body(ctx: RequestContext) -> bool:
    """True when the request head says there is no body (HTTP/1.1 framing)."""
    h = ctx.headers
    if "transfer-encoding" in h:
        return False
    length = h.get("content-length")
    return length is None or length.strip() == "0"


class OperationValidation(Filter):
    __slots__ = (
        "base_path",
        "body_checked",
        "max_errors",
        "reject_unknown",
        "table",
        "unknown_status",
    )

    name = "validation"

    def __init__(
        self,
        table: OperationTable,
        base_path: str,
        reject_unknown: bool,
        unknown_status: int,
        max_errors: int,
        body_checked: bool,
    ) -> None:
        self.table = table
        self.base_path = base_path
        self.reject_unknown = reject_unknown
        self.unknown_status = unknown_status
        self.max_errors = max_errors
        self.body_checked = body_checked  # an OpenAPIBodyValidation follows

    def find(
        self, ctx: RequestContext
    ) -> tuple[Operation | None, dict[str, str], LocalReply | None]:
        path = ctx.path
        if self.base_path:
            if path == self.base_path:
                path = "/"
            elif path.startswith(self.base_path) and path[len(self.base_path)] == "/":
                path = path[len(self.base_path) :]
            else:
                path = ""
        found = self.table.match(path) if path else None
        if found is None:
            if not self.reject_unknown:
                return None, {}, None
            return (
                None,
                {},
                problem(
                    self.unknown_status,
                    "unknown_operation",
                    f"no operation of the API description matches {ctx.method} {ctx.path}",
                    max_errors=self.max_errors,
                ),
            )
        item, values = found
        op = item.operations.get(ctx.method)
        if op is None and ctx.method == "HEAD":
            op = item.operations.get("GET")
        if op is None:
            if not self.reject_unknown:
                return None, {}, None
            allow = ", ".join(item.operations)
            return (
                None,
                {},
                problem(
                    405,
                    "unknown_operation",
                    f"{ctx.method} is not an operation of {item.template}",
                    headers=[("allow", allow)],
                    max_errors=self.max_errors,
                ),
            )
        return op, values, None

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        op, path_values, reply = self.find(ctx)
        if op is None:
            return reply
        failures: list[dict] = []
        if op.has_params:
            self._params(ctx, op, path_values, failures)
        body = op.body
        if body is not None and not _no_body(ctx):
            reply = _media_type_reply(ctx, body, op, self.max_errors)
            if reply is not None and not failures:
                return reply
        if failures:
            return problem(
                400,
                "parameter",
                f"request does not match {op.label}",
                failures,
                max_errors=self.max_errors,
            )
        if self.body_checked and body is not None:
            if ctx.vars is None:
                ctx.vars = {}
            ctx.vars[OPERATION_VAR] = op
        return None

    def _params(
        self,
        ctx: RequestContext,
        op: Operation,
        path_values: dict[str, str],
        out: list[dict],
    ) -> None:
        limit = self.max_errors
        for p in op.path_params:
            self._check(p, p.extract(path_values.get(p.name)), out, limit)
        if op.query_params:
            pairs = parse_qs(ctx.query, keep_blank_values=True) if ctx.query else {}
            for p in op.query_params:
                self._check(p, p.extract(pairs), out, limit)
        for p in op.header_params:
            self._check(p, p.extract(ctx.headers.get_joined(p.name)), out, limit)
        if op.cookie_params:
            cookies = _cookies(ctx.headers.get_all("cookie"))
            for p in op.cookie_params:
                self._check(p, p.extract(cookies.get(p.name)), out, limit)

    @staticmethod
    def _check(p: Any, value: Any, out: list[dict], limit: int) -> None:
        if value is None:
            if p.required:
                out.append(
                    {
                        "in": p.location,
                        "name": p.name,
                        "detail": "required parameter is missing",
                    }
                )
            return
        for path, message in js.errors(p.validator, value, limit):
            entry = {"in": p.location, "name": p.name, "detail": message}
            if path:
                entry["pointer"] = pointer(path)
            out.append(entry)

    def describe(self) -> dict:
        return {
            "type": self.name,
            "operations": self.table.count,
            "basePath": self.base_path or None,
            "rejectUnknownOperations": self.reject_unknown,
        }


def _cookies(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        for part in value.split(";"):
            name, eq, v = part.strip().partition("=")
            if eq and name not in out:
                out[name] = v
    return out


def _media_type_reply(
    ctx: RequestContext, body: Body, op: Operation, max_errors: int
) -> LocalReply | None:
    content_type = media_type(ctx.headers.get("content-type"))
    if content_type and body.match(content_type) is not None:
        return None
    said = f"Content-Type {content_type}" if content_type else "no Content-Type"
    headers = []
    if ctx.method in ("POST", "PATCH"):
        headers.append((f"accept-{ctx.method.lower()}", body.accepted))
    return problem(
        415,
        "media_type",
        f"{op.label} takes {body.accepted}; the request has {said}",
        headers=headers,
        max_errors=max_errors,
    )


def _json_body_reply(
    validator: Any, body: bytes, what: str, max_errors: int
) -> LocalReply | None:
    """400 when ``body`` is not JSON or does not match ``validator`` (the schema of
    ``what``); None when it matches."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return problem(400, "not_json", f"request body is not valid JSON: {exc}", max_errors=max_errors)
    failures = [
        {"in": "body", "pointer": pointer(path), "detail": message}
        for path, message in js.errors(validator, doc, max_errors + 1)
    ]
    if failures:
        return problem(
            400,
            "body",
            f"request body does not match {what}",
            failures,
            max_errors=max_errors,
        )
    return None


class OpenAPIBodyValidation(Filter):
    __slots__ = ("body_limit", "max_errors")

    name = "validation-body"

    def __init__(self, body_limit: int, max_errors: int) -> None:
        self.body_limit = body_limit
        self.max_errors = max_errors

    def on_request_body(self, ctx: RequestContext, body: bytes) -> LocalReply | None:
        op = ctx.vars.get(OPERATION_VAR) if ctx.vars is not None else None
        if op is None:
            return None
        spec: Body = op.body
        if not body:
            if spec.required:
                return problem(
                    400,
                    "body_required",
                    f"{op.label} requires a request body",
                    max_errors=self.max_errors,
                )
            return None
        content_type = media_type(ctx.headers.get("content-type"))
        matched = spec.match(content_type) if content_type else None
        if matched is None:
            return _media_type_reply(ctx, spec, op, self.max_errors)
        validator = matched[1]
        if validator is None or not is_json(content_type):
            return None  # declared, but only JSON bodies are inspected
        return _json_body_reply(validator, body, op.label, self.max_errors)

    def describe(self) -> dict:
        return {"type": self.name, "maxBodyBytes": self.body_limit}


class SchemaBodyValidation(Filter):
    __slots__ = ("body_limit", "max_errors", "methods", "required", "validator")

    name = "validation-json-schema"

    def __init__(
        self,
        validator: Any,
        methods: frozenset[str],
        required: bool,
        body_limit: int,
        max_errors: int,
    ) -> None:
        self.validator = validator
        self.methods = methods
        self.required = required
        self.body_limit = body_limit
        self.max_errors = max_errors

    def on_request_body(self, ctx: RequestContext, body: bytes) -> LocalReply | None:
        if ctx.method not in self.methods:
            return None
        if not body:
            if self.required:
                return problem(
                    400,
                    "body_required",
                    "a JSON request body is required",
                    max_errors=self.max_errors,
                )
            return None
        content_type = media_type(ctx.headers.get("content-type"))
        if not is_json(content_type):
            said = f"Content-Type {content_type}" if content_type else "no Content-Type"
            return problem(
                415,
                "media_type",
                f"the body must be application/json; the request has {said}",
                max_errors=self.max_errors,
            )
        return _json_body_reply(self.validator, body, "the schema", self.max_errors)

    def describe(self) -> dict:
        return {
            "type": self.name,
            "methods": sorted(self.methods),
            "maxBodyBytes": self.body_limit,
        }
