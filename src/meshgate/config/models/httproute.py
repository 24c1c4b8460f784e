"""``gateway.networking.k8s.io`` HTTPRoute: matches, filters, backendRefs, timeouts and
retries (apis/v1/httproute_types.go), with the spec's limits and CEL rules as validators.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from meshgate.config.models.meta import (
    Duration,
    FieldError,
    HeaderName,
    Hostname,
    PortNumber,
    PreciseHostname,
    ResourceBase,
    SectionName,
    Strict,
    parse_duration,
)
from meshgate.config.models.refs import (
    BackendObjectReference,
    LocalObjectReference,
    ParentReference,
)

HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
HTTPMethodWithWildcard = Literal[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*"
]
FilterType = Literal[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "CORS",
    "ExtensionRef",
]

# filter type -> the one sub-object field it requires
FILTER_FIELDS: dict[str, str] = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "CORS": "cors",
    "ExtensionRef": "extensionRef",
}
UNREPEATABLE_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")

_PATH_CHARS_RE = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")


def _check_header_value(value: str) -> str:
    # CR, LF or NUL in a value would let config inject headers into the wire format.
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("header value must not contain CR, LF or NUL")
    return value


HeaderValue = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_check_header_value)]


def _compile_error(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"invalid regular expression {value!r}: {exc}"
    return None


# --- matches --------------------------------------------------------------------------


class HTTPPathMatch(Strict):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = Field(
        default="PathPrefix",
        description="Exact, PathPrefix (element-wise prefix) or RegularExpression (Python `re`, full match).",
    )
    value: str = Field(default="/", max_length=1024, description="Path, prefix or pattern.")

    @model_validator(mode="after")
    def _valid_value(self) -> HTTPPathMatch:
        if self.type == "RegularExpression":
            error = _compile_error(self.value)
            if error:
                raise FieldError(("value",), error)
            return self
        value = self.value
        problem = None
        if not value.startswith("/"):
            problem = "must be an absolute path and start with '/'"
        else:
            for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
                if bad in value:
                    problem = f"must not contain {bad!r}"
                    break
            else:
                if value.endswith("/..") or value.endswith("/."):
                    problem = "must not end with '/..' or '/.'"
                elif not _PATH_CHARS_RE.match(value):
                    problem = f"must only contain valid characters (matching {_PATH_CHARS_RE.pattern})"
        if problem:
            raise FieldError(("value",), f"{problem} when type is {self.type}")
        return self


class HTTPHeaderMatch(Strict):
    type: Literal["Exact", "RegularExpression"] = Field(
        default="Exact", description="Exact, or RegularExpression (Python `re`, full match)."
    )
    name: HeaderName = Field(description="Header name, matched case-insensitively.")
    value: HeaderValue = Field(description="Value or pattern to match.")

    @model_validator(mode="after")
    def _regex_compiles(self) -> HTTPHeaderMatch:
        if self.type == "RegularExpression" and (error := _compile_error(self.value)):
            raise FieldError(("value",), error)
        return self


class HTTPQueryParamMatch(Strict):
    type: Literal["Exact", "RegularExpression"] = Field(
        default="Exact", description="Exact, or RegularExpression (Python `re`, full match)."
    )
    name: HeaderName = Field(description="Query parameter name, matched exactly.")
    value: str = Field(min_length=1, max_length=1024, description="Value or pattern to match.")

    @model_validator(mode="after")
    def _regex_compiles(self) -> HTTPQueryParamMatch:
        if self.type == "RegularExpression" and (error := _compile_error(self.value)):
            raise FieldError(("value",), error)
        return self


class HTTPRouteMatch(Strict):
    path: HTTPPathMatch = Field(
        default_factory=HTTPPathMatch, description="Path match; defaults to PathPrefix `/`."
    )
    headers: list[HTTPHeaderMatch] = Field(
        default_factory=list, max_length=16, description="Header matches, all must hold."
    )
    queryParams: list[HTTPQueryParamMatch] = Field(
        default_factory=list, max_length=16, description="Query parameter matches, all must hold."
    )
    method: HTTPMethod | None = Field(default=None, description="HTTP method to match.")

    @model_validator(mode="after")
    def _unique_names(self) -> HTTPRouteMatch:
        # listType=map keyed by name: a repeated name is invalid in Kubernetes.
        _unique(self.headers, "headers", casefold=True)
        _unique(self.queryParams, "queryParams", casefold=False)
        return self


def _unique(items: list[Any], field: str, *, casefold: bool) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        key = item.name.lower() if casefold else item.name
        if key in seen:
            raise FieldError((field, i, "name"), f"duplicate name {item.name!r}")
        seen.add(key)


# --- filters --------------------------------------------------------------------------


class HTTPHeader(Strict):
    name: HeaderName = Field(description="Header name (case-insensitive).")
    value: Annotated[str, Field(max_length=4096), AfterValidator(_check_header_value)] = Field(
        description="Header value."
    )


class HTTPHeaderFilter(Strict):
    set: list[HTTPHeader] = Field(
        default_factory=list, max_length=16, description="Headers to set, replacing existing values."
    )
    add: list[HTTPHeader] = Field(
        default_factory=list, max_length=16, description="Headers to append to existing values."
    )
    remove: list[HeaderName] = Field(
        default_factory=list, max_length=16, description="Header names to remove."
    )

    @model_validator(mode="after")
    def _one_action_per_header(self) -> HTTPHeaderFilter:
        seen: dict[str, str] = {}
        entries = [("set", i, h.name) for i, h in enumerate(self.set)]
        entries += [("add", i, h.name) for i, h in enumerate(self.add)]
        entries += [("remove", i, name) for i, name in enumerate(self.remove)]
        for action, i, name in entries:
            key = name.lower()
            if key in seen:
                sub = (action, i, "name") if action != "remove" else (action, i)
                raise FieldError(sub, f"header {name!r} already has an action ({seen[key]})")
            seen[key] = action
        return self


class HTTPPathModifier(Strict):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"] = Field(
        description="Replace the whole path, or only the part the PathPrefix match matched."
    )
    replaceFullPath: str | None = Field(
        default=None, max_length=1024, description="New path, for ReplaceFullPath."
    )
    replacePrefixMatch: str | None = Field(
        default=None, max_length=1024, description="New prefix, for ReplacePrefixMatch."
    )

    @model_validator(mode="after")
    def _value_fits_type(self) -> HTTPPathModifier:
        if self.type == "ReplaceFullPath":
            if self.replaceFullPath is None:
                raise FieldError(("replaceFullPath",), "required when type is ReplaceFullPath")
            if self.replacePrefixMatch is not None:
                raise FieldError(("replacePrefixMatch",), "only allowed when type is ReplacePrefixMatch")
        else:
            if self.replacePrefixMatch is None:
                raise FieldError(("replacePrefixMatch",), "required when type is ReplacePrefixMatch")
            if self.replaceFullPath is not None:
                raise FieldError(("replaceFullPath",), "only allowed when type is ReplaceFullPath")
        return self


class HTTPRequestRedirectFilter(Strict):
    scheme: Literal["http", "https"] | None = Field(
        default=None, description="Scheme of the Location; the request's when unset."
    )
    hostname: PreciseHostname | None = Field(
        default=None, description="Host of the Location; the request's Host when unset."
    )
    path: HTTPPathModifier | None = Field(
        default=None, description="Path rewrite for the Location; the request path when unset."
    )
    port: PortNumber | None = Field(
        default=None,
        description="Port of the Location; derived from the scheme or the listener when unset.",
    )
    statusCode: Literal[301, 302, 303, 307, 308] = Field(
        default=302, description="Redirect status code."
    )


class HTTPURLRewriteFilter(Strict):
    hostname: PreciseHostname | None = Field(
        default=None, description="Host header value to forward with."
    )
    path: HTTPPathModifier | None = Field(default=None, description="Path rewrite.")


class Fraction(Strict):
    numerator: int = Field(ge=0, description="Numerator of the fraction.")
    denominator: int = Field(default=100, ge=1, description="Denominator of the fraction.")

    @model_validator(mode="after")
    def _at_most_one(self) -> Fraction:
        if self.numerator > self.denominator:
            raise FieldError(("numerator",), "must be less than or equal to denominator")
        return self


class HTTPRequestMirrorFilter(Strict):
    backendRef: BackendObjectReference = Field(description="Where mirrored requests are sent.")
    percent: int | None = Field(
        default=None, ge=0, le=100, description="Percentage of requests mirrored (100 if unset)."
    )
    fraction: Fraction | None = Field(
        default=None, description="Fraction of requests mirrored (instead of percent)."
    )

    @model_validator(mode="after")
    def _percent_or_fraction(self) -> HTTPRequestMirrorFilter:
        if self.percent is not None and self.fraction is not None:
            raise FieldError(("fraction",), "only one of percent or fraction may be specified")
        return self


class HTTPCORSFilter(Strict):
    allowOrigins: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Allowed origins `scheme://host[:port]`; `*` in the host matches labels to its left; `*` alone allows all.",
    )
    allowCredentials: bool | None = Field(
        default=None, description="Send Access-Control-Allow-Credentials: true."
    )
    allowMethods: list[HTTPMethodWithWildcard] = Field(
        default_factory=list, max_length=9, description="Allowed methods, or `*`."
    )
    allowHeaders: list[HeaderName] = Field(
        default_factory=list, max_length=64, description="Allowed request headers, or `*`."
    )
    exposeHeaders: list[HeaderName] = Field(
        default_factory=list, max_length=64, description="Response headers exposed to scripts, or `*`."
    )
    maxAge: int = Field(default=5, ge=1, description="Seconds a preflight result may be cached.")

    @model_validator(mode="after")
    def _wildcards_alone(self) -> HTTPCORSFilter:
        if "*" in self.allowOrigins and len(self.allowOrigins) > 1:
            raise FieldError(("allowOrigins",), "cannot contain '*' alongside other origins")
        if "*" in self.allowMethods and len(self.allowMethods) > 1:
            raise FieldError(("allowMethods",), "cannot contain '*' alongside other methods")
        return self


class HTTPRouteFilter(Strict):
    type: FilterType = Field(description="Filter type; the sub-object of the same name must be set.")
    requestHeaderModifier: HTTPHeaderFilter | None = Field(
        default=None, description="Modify request headers (type RequestHeaderModifier)."
    )
    responseHeaderModifier: HTTPHeaderFilter | None = Field(
        default=None, description="Modify response headers (type ResponseHeaderModifier)."
    )
    requestMirror: HTTPRequestMirrorFilter | None = Field(
        default=None, description="Mirror requests to another backend (type RequestMirror)."
    )
    requestRedirect: HTTPRequestRedirectFilter | None = Field(
        default=None, description="Answer with a redirect (type RequestRedirect)."
    )
    urlRewrite: HTTPURLRewriteFilter | None = Field(
        default=None, description="Rewrite host and path before forwarding (type URLRewrite)."
    )
    cors: HTTPCORSFilter | None = Field(default=None, description="CORS (type CORS).")
    extensionRef: LocalObjectReference | None = Field(
        default=None, description="A meshgate Plugin or other extension (type ExtensionRef)."
    )

    @model_validator(mode="after")
    def _type_matches_config(self) -> HTTPRouteFilter:
        wanted = FILTER_FIELDS[self.type]
        for field in FILTER_FIELDS.values():
            if field != wanted and getattr(self, field) is not None:
                raise FieldError((field,), f"must not be set when type is {self.type}")
        if getattr(self, wanted) is None:
            raise FieldError((wanted,), f"required when type is {self.type}")
        return self

    @property
    def config(self) -> Any:
        """The sub-object that configures this filter."""
        return getattr(self, FILTER_FIELDS[self.type])


def _check_filter_list(filters: list[HTTPRouteFilter], where: tuple[str | int, ...]) -> None:
    positions: dict[str, list[int]] = {}
    for i, f in enumerate(filters):
        positions.setdefault(f.type, []).append(i)
    for kind in UNREPEATABLE_FILTERS:
        if len(positions.get(kind, ())) > 1:
            raise FieldError(where + (positions[kind][1], "type"), f"{kind} filter cannot be repeated")
    if "RequestRedirect" in positions and "URLRewrite" in positions:
        raise FieldError(
            where + (positions["URLRewrite"][0], "type"),
            "RequestRedirect and URLRewrite filters cannot be used together",
        )


# --- backends, timeouts, retries, rules ----------------------------------------------


class HTTPBackendRef(BackendObjectReference):
    weight: int = Field(
        default=1, ge=0, le=1_000_000, description="Share of traffic, relative to the rule's other backendRefs."
    )
    filters: list[HTTPRouteFilter] = Field(
        default_factory=list, max_length=16, description="Filters applied only when this backend is chosen."
    )

    @model_validator(mode="after")
    def _filter_rules(self) -> HTTPBackendRef:
        _check_filter_list(self.filters, ("filters",))
        return self


class HTTPRouteTimeouts(Strict):
    request: Duration | None = Field(
        default=None, description="Deadline for the whole request, retries included; `0s` disables."
    )
    backendRequest: Duration | None = Field(
        default=None, description="Deadline for each try to a backend; `0s` disables."
    )

    @model_validator(mode="after")
    def _backend_within_request(self) -> HTTPRouteTimeouts:
        if self.request is not None and self.backendRequest is not None:
            total = parse_duration(self.request)
            if total != 0 and parse_duration(self.backendRequest) > total:
                raise FieldError(("backendRequest",), "cannot be longer than the request timeout")
        return self


class HTTPRouteRetry(Strict):
    codes: list[Annotated[int, Field(ge=400, le=599)]] = Field(
        default_factory=list, description="Response status codes that are retried."
    )
    attempts: int | None = Field(
        default=None, ge=0, description="Maximum number of retries after the first try."
    )
    backoff: Duration | None = Field(default=None, description="Minimum wait between tries.")


class HTTPRouteRule(Strict):
    name: SectionName | None = Field(default=None, description="Rule name, unique within the route.")
    matches: list[HTTPRouteMatch] = Field(
        default_factory=lambda: [HTTPRouteMatch()],
        max_length=64,
        description="Matches; the rule applies if any matches. Defaults to PathPrefix `/`.",
    )
    filters: list[HTTPRouteFilter] = Field(
        default_factory=list, max_length=16, description="Filters, applied in order."
    )
    backendRefs: list[HTTPBackendRef] = Field(
        default_factory=list, max_length=16, description="Backends, chosen by weight."
    )
    timeouts: HTTPRouteTimeouts | None = Field(default=None, description="Request timeouts.")
    retry: HTTPRouteRetry | None = Field(default=None, description="Retry policy.")
    sessionPersistence: dict[str, Any] | None = Field(
        default=None, description="Not supported by meshgate yet: rejected with an error."
    )

    @field_validator("sessionPersistence")
    @classmethod
    def _no_session_persistence(cls, value: dict[str, Any] | None) -> None:
        if value is not None:
            raise ValueError("sessionPersistence is not supported by meshgate yet; remove it")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> HTTPRouteRule:
        _check_filter_list(self.filters, ("filters",))
        if self.backendRefs and any(f.type == "RequestRedirect" for f in self.filters):
            raise FieldError(
                ("backendRefs",), "a rule with a RequestRedirect filter must not have backendRefs"
            )
        prefix_ok = len(self.matches) == 1 and self.matches[0].path.type == "PathPrefix"
        located = [(("filters", i), f) for i, f in enumerate(self.filters)]
        for j, ref in enumerate(self.backendRefs):
            located += [(("backendRefs", j, "filters", i), f) for i, f in enumerate(ref.filters)]
        for where, f in located:
            if f.type in ("RequestRedirect", "URLRewrite"):
                path = f.config.path
                if path is not None and path.type == "ReplacePrefixMatch" and not prefix_ok:
                    raise FieldError(
                        where + (FILTER_FIELDS[f.type], "path", "type"),
                        f"{f.type} with ReplacePrefixMatch needs exactly one match, of type PathPrefix",
                    )
        return self


class HTTPRouteSpec(Strict):
    parentRefs: list[ParentReference] = Field(
        default_factory=list, max_length=32, description="Gateways (or Services, for the mesh) to attach to."
    )
    hostnames: list[Hostname] = Field(
        default_factory=list, max_length=16, description="Host headers this route serves; all if empty."
    )
    rules: list[HTTPRouteRule] = Field(
        default_factory=lambda: [HTTPRouteRule()],
        max_length=16,
        description="Rules; defaults to one rule matching PathPrefix `/`.",
    )

    @model_validator(mode="after")
    def _route_limits(self) -> HTTPRouteSpec:
        total = sum(len(rule.matches) for rule in self.rules)
        if total > 128:
            raise FieldError(("rules",), f"at most 128 matches across all rules, got {total}")
        names: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.name is not None:
                if rule.name in names:
                    raise FieldError(
                        ("rules", i, "name"), f"rule name {rule.name!r} is already used by rules[{names[rule.name]}]"
                    )
                names[rule.name] = i
        return self


class HTTPRoute(ResourceBase):
    """An HTTPRoute: how HTTP requests on its parents are matched, filtered and forwarded."""

    apiVersion: Literal["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"] = (
        Field(description="gateway.networking.k8s.io/v1 (v1beta1 accepted).")
    )
    kind: Literal["HTTPRoute"] = Field(description="Always `HTTPRoute`.")
    spec: HTTPRouteSpec = Field(description="Parents, hostnames and rules.")

