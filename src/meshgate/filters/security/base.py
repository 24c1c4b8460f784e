"""What every authentication and authorization filter shares: the one way a request
is refused, and the per-process count of refusals by method and reason that
``/metrics`` shows as ``meshgate_auth_failures_total``.

A refusal is a ``LocalReply`` like any other filter answer (filters return explicit
results); ``deny()`` only makes sure every refusal is counted and carries the same
shape: a short text body that names the reason class, never the secret or token.
"""

from __future__ import annotations

from meshgate.proxy.context import LocalReply

# (method, reason) -> refusals in this process; plain ints, synced into Metrics at
# scrape time. method: jwt, api_key, basic_auth, ext_auth, oauth2_introspection,
# authorization, ...; reason: missing, invalid, expired, unknown_kid, denied, ...
AUTH_FAILURES: dict[tuple[str, str], int] = {}

_BODIES = {401: b"Unauthorized", 403: b"RBAC: access denied", 503: b"Service Unavailable"}


def deny(
    method: str,
    reason: str,
    status: int = 401,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    flag: str = "",
) -> LocalReply:
    """Count the refusal and build its reply (401 unless said otherwise)."""
    key = (method, reason)
    AUTH_FAILURES[key] = AUTH_FAILURES.get(key, 0) + 1
    fields = list(headers) if headers else []
    if body is None:
        body = _BODIES.get(status, b"Forbidden")
        fields.append(("content-type", "text/plain"))
    return LocalReply(status, fields, body, flag)
