"""SecurityPolicy ``extAuth`` (gateway.envoyproxy.io/v1alpha1, ext_auth_types.go): an
external HTTP service decides each request, as Envoy's ext_authz filter with an
``http_service`` does it.

Only the HTTP service is served. A ``grpc`` service, ``bodyToExtAuth``,
``backendSettings``, ``contextExtensions`` and ``recomputeRoute: true`` are rejected by
name (meshgate routes before its filters run, so there is no route to recompute).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from meshgate.config.models.meta import Duration, FieldError, HeaderName
from meshgate.config.models.policy_common import Section, not_supported, positive
from meshgate.config.models.refs import BackendObjectReference

# BackendRefs kinds and groups Envoy Gateway's CEL rules accept.
_KINDS = ("Service", "ServiceImport", "Backend")
_GROUPS = ("", "multicluster.x-k8s.io", "gateway.envoyproxy.io")


class ExtAuthBackendRef(BackendObjectReference):
    """Envoy Gateway BackendRef: a BackendObjectReference (and `fallback`, not served)."""

    fallback: Any = not_supported()

    @model_validator(mode="after")
    def _fallback(self) -> ExtAuthBackendRef:
        if self.fallback is not None:
            raise FieldError(("fallback",), "fallback is not supported by meshgate yet")
        return self


class HTTPExtAuthService(Section):
    """Where the check requests go and what comes back from an allowed check."""

    backendRef: BackendObjectReference | None = Field(
        default=None, description="Deprecated: the one authorization service; use backendRefs."
    )
    backendRefs: list[ExtAuthBackendRef] = Field(
        default_factory=list,
        max_length=16,
        description="The authorization service: Services (with port) or Backends. Check "
        "requests are spread round-robin over all their endpoints.",
    )
    backendSettings: Any = not_supported()
    path: str | None = Field(
        default=None,
        description="Prefix of the check request's path: the original path (with its query) "
        "is appended to it (`/auth` + `/hello` -> `/auth/hello`). Unset: the original path.",
    )
    headersToBackend: list[HeaderName] = Field(
        default_factory=list,
        description="Headers of an allowing (200) response copied onto the request sent "
        "upstream, replacing the client's value when the service sends one.",
    )

    @model_validator(mode="after")
    def _rules(self) -> HTTPExtAuthService:
        if self.backendRef is None and not self.backendRefs:
            raise FieldError((), "backendRef or backendRefs needs to be set")
        for i, ref in enumerate(self.backendRefs):
            if ref.kind not in _KINDS:
                raise FieldError(
                    ("backendRefs", i, "kind"),
                    "BackendRefs only supports Service, ServiceImport, and Backend kind.",
                )
            if ref.group not in _GROUPS:
                raise FieldError(
                    ("backendRefs", i, "group"),
                    "BackendRefs only supports Core, multicluster.x-k8s.io, and gateway.envoyproxy.io groups.",
                )
        if self.path is not None and not self.path.startswith("/"):
            raise FieldError(("path",), "must start with /")
        if self.path is not None and any(c in self.path for c in "?# \t\r\n"):
            raise FieldError(("path",), "must be a path: no query, fragment or whitespace")
        return self

    def refs(self) -> list[tuple[tuple[str | int, ...], BackendObjectReference]]:
        """(field path, reference) of every backend set."""
        if self.backendRefs:
            return [(("backendRefs", i), r) for i, r in enumerate(self.backendRefs)]
        return [(("backendRef",), self.backendRef)]  # type: ignore[list-item]


class ExtAuth(Section):
    """External authorization: each request is first sent to an HTTP service that allows
    (200) or denies it."""

    http: HTTPExtAuthService | None = Field(
        default=None, description="The HTTP external authorization service."
    )
    grpc: Any = Field(
        default=None,
        description="gRPC external authorization: not supported by meshgate, rejected with an error; use `http`.",
        json_schema_extra={"unsupported": True},
    )
    headersToExtAuth: list[HeaderName] = Field(
        default_factory=list,
        description="Client request headers sent to the service besides the ones always sent: "
        "Host, Method, Path, Content-Length (0) and Authorization.",
    )
    bodyToExtAuth: Any = not_supported()
    timeout: Duration | None = Field(
        default=None, description="Deadline of each check request. Unset: 10s."
    )
    failOpen: bool | None = Field(
        default=False,
        description="When no answer can be had from the service (unreachable, timeout, 5xx): "
        "`true` lets the request through, `false` refuses it with 403.",
    )
    recomputeRoute: bool | None = Field(
        default=None,
        description="Only `false` (or unset) is accepted: meshgate does not route again after "
        "authorization.",
    )
    contextExtensions: Any = not_supported()

    @model_validator(mode="before")
    @classmethod
    def _grpc(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("grpc") is not None:
            raise FieldError(
                ("grpc",),
                "gRPC external authorization is not supported by meshgate: use an HTTP "
                "service (extAuth.http)",
            )
        return data

    @model_validator(mode="after")
    def _rules(self) -> ExtAuth:
        if self.http is None:
            raise FieldError((), "one of grpc or http must be specified")
        positive(self.timeout, "timeout")
        if self.recomputeRoute:
            raise FieldError(("recomputeRoute",), "recomputeRoute is not supported by meshgate yet")
        return self
