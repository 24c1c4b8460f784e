"""The one way a request is refused for its content: an RFC 9457 problem
(``application/problem+json``) naming each failing field, and a per-process count of
refusals by reason.

Body shape (RFC 9457 section 3, with the ``errors`` extension its example uses)::

    {"type": "about:blank", "title": "Bad Request", "status": 400,
     "detail": "request does not match POST /pets",
     "errors": [{"in": "body", "pointer": "#/age", "detail": "-1 is less than the minimum of 0"},
                {"in": "query", "name": "limit", "detail": "'x' is not of type 'integer'"}]}

A body pointer is a JSON Pointer into the request body as a URI fragment (RFC 6901
section 6). The reply is bounded: at most ``max_errors`` entries, each text cut to
``MAX_TEXT`` characters, so a hostile body cannot make a large answer.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson

from meshgate.proxy.context import LocalReply

# reason -> refusals in this process (unknown_operation, parameter, body, not_json,
# media_type, body_required, ...), for metrics to read.
VALIDATION_FAILURES: dict[str, int] = {}

MAX_TEXT = 200
_CONTENT_TYPE = ("content-type", "application/problem+json")


def cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pointer(path) -> str:
    """A JSON pointer fragment (``#/a/0/b``) for a path into the body."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "#/" + "/".join(parts) if parts else "#"


def problem(
    status: int,
    reason: str,
    detail: str,
    errors: list[dict] | None = None,
    headers: list[tuple[str, str]] | None = None,
    max_errors: int = 10,
) -> LocalReply:
    """Count the refusal and build its reply."""
    VALIDATION_FAILURES[reason] = VALIDATION_FAILURES.get(reason, 0) + 1
    doc: dict = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": cut(detail),
    }
    if errors:
        shown = [
            {k: cut(v) if isinstance(v, str) else v for k, v in e.items()}
            for e in errors[:max_errors]
        ]
        doc["errors"] = shown
        if len(errors) > max_errors:
            doc["omittedErrors"] = len(errors) - max_errors
    fields = [_CONTENT_TYPE]
    if headers:
        fields.extend(headers)
    return LocalReply(status, fields, orjson.dumps(doc), "")
