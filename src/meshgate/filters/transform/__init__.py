"""TransformPolicy (meshgate.dev): request and response rewriting (``filters.py``) with
values from templates (``template.py``) and JSON field paths (``jsonpath.py``).

``build(spec, refs)`` compiles one policy's spec, once per config, into at most four
filters in this order: request headers and query, request body, response headers,
response body. Only sections that are set produce a filter, so a header-only policy
never makes the engine buffer a body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshgate.filters.transform import jsonpath
from meshgate.filters.transform.filters import (
    BodyEdits,
    HeaderEdits,
    QueryEdits,
    RequestBodyTransform,
    RequestTransform,
    ResponseBodyTransform,
    ResponseHeaderTransform,
    value_builder,
)
from meshgate.filters.transform.template import parse

if TYPE_CHECKING:
    from meshgate.config.compile.refs import PolicyRefs
    from meshgate.config.models.transform_policy import (
        BodyOps,
        HeaderOps,
        TransformPolicySpec,
    )
    from meshgate.filters.base import Filter

__all__ = ["build"]


def build(spec: TransformPolicySpec, refs: PolicyRefs) -> tuple[Filter, ...]:
    """The filters of one TransformPolicy (templates and paths were checked by the model)."""
    filters: list[Filter] = []
    req, resp = spec.request, spec.response
    if req is not None:
        headers = (
            _headers(req.headers, response=False) if req.headers is not None else None
        )
        query = None
        if req.queryParams is not None:
            q = req.queryParams
            query = QueryEdits(
                frozenset(q.remove),
                tuple((i.name, parse(i.value)) for i in q.set),
                tuple((i.name, parse(i.value)) for i in q.add),
            )
        if headers is not None or query is not None:
            filters.append(RequestTransform(headers, query))
        if req.body is not None:
            filters.append(
                RequestBodyTransform(_body(req.body, response=False), spec.maxBodyBytes)
            )
    if resp is not None:
        if resp.headers is not None:
            filters.append(
                ResponseHeaderTransform(_headers(resp.headers, response=True))
            )
        if resp.body is not None:
            filters.append(
                ResponseBodyTransform(
                    _body(resp.body, response=True), spec.maxBodyBytes, refs.key
                )
            )
    return tuple(filters)


def _headers(ops: HeaderOps, response: bool) -> HeaderEdits:
    return HeaderEdits(
        tuple(n.lower() for n in ops.remove),
        tuple((i.name.lower(), parse(i.value, response)) for i in ops.set),
        tuple((i.name.lower(), parse(i.value, response)) for i in ops.add),
    )


def _body(ops: BodyOps, response: bool) -> BodyEdits:
    def templates(text: str) -> Any:
        return parse(text, response)

    return BodyEdits(
        tuple(jsonpath.parse_path(p) for p in ops.remove),
        tuple(
            (jsonpath.parse_path(r.from_), jsonpath.parse_path(r.to, allow_append=True))
            for r in ops.rename
        ),
        tuple(
            (
                jsonpath.parse_path(s.path, allow_append=True),
                value_builder(s.value, templates),
            )
            for s in ops.set
        ),
    )
