"""``gateway.envoyproxy.io/v1alpha1`` ClientTrafficPolicy: how a Gateway's listeners
treat their clients — TLS versions, ciphers, ALPN, client certificates, client IP
detection from X-Forwarded-For, timeouts and buffer limits.

Envoy Gateway's Go types are the reference (api/v1alpha1/clienttrafficpolicy_types.go,
tls_types.go, timeout_types.go, connection_types.go): same field names, defaults and
CEL rules. The policy targets Gateways only (a listener with ``sectionName``); a
listener-level policy wins over a Gateway-level one, whole. Fields Envoy Gateway has
and meshgate does not serve are declared with ``not_supported()`` so that setting one
is an error that names it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from meshgate.config.models.meta import FieldError, ResourceBase
from meshgate.config.models.policy_common import (
    GoDuration,
    Section,
    TargetedSpec,
    UInt32,
    not_supported,
)
from meshgate.config.models.refs import SecretObjectReference

TLSVersion = Literal["Auto", "1.0", "1.1", "1.2", "1.3"]
# What meshgate serves: TLS 1.0 and 1.1 are deprecated (RFC 8996) and refused.
SERVED_TLS_VERSIONS = ("1.2", "1.3")
_MIN_ORDER = {"Auto": 0, "1.0": 1, "1.1": 2, "1.2": 3, "1.3": 4}
_MAX_ORDER = {"1.0": 1, "1.1": 2, "1.2": 3, "1.3": 4, "Auto": 5}

# Kubernetes resource.Quantity as Envoy Gateway's Size accepts it: 32768, 32Ki, 1Mi, 1G.
_SIZE_RE = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_SIZE_UNITS = {
    None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}


def parse_size(value: str) -> int:
    """Bytes in a quantity string (``"32Ki"`` -> 32768)."""
    m = _SIZE_RE.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a size (examples: 32768, 32Ki, 1Mi)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def _check_size(value: str | int) -> str:
    value = str(value)
    parse_size(value)
    return value


Size = Annotated[str | int, AfterValidator(_check_size)]


# --- tls -------------------------------------------------------------------------------


class ClientValidationContext(Section):
    optional: bool = Field(
        default=False,
        description="Accept connections whose client presents no certificate; one that is "
        "presented must still be valid. Defaults to false: a valid client certificate is required.",
    )
    caCertificateRefs: list[SecretObjectReference] = Field(
        default_factory=list,
        max_length=8,
        description="Secrets or ConfigMaps with the trusted CA certificates (PEM) under the key "
        "`ca.crt`. Another namespace needs a ReferenceGrant there.",
    )
    spkiHashes: Any = not_supported()
    certificateHashes: Any = not_supported()
    subjectAltNames: Any = not_supported()
    crl: Any = not_supported()

    @model_validator(mode="after")
    def _refs(self) -> ClientValidationContext:
        if not self.caCertificateRefs:
            raise FieldError(("caCertificateRefs",), "at least one CA certificate reference is needed")
        for i, ref in enumerate(self.caCertificateRefs):
            if ref.group != "" or ref.kind not in ("Secret", "ConfigMap"):
                raise FieldError(
                    ("caCertificateRefs", i, "kind"),
                    f"{ref.group or 'core'}/{ref.kind} is not supported: use a Secret or a ConfigMap (core group)",
                )
        return self


class ClientTLSSettings(Section):
    minVersion: TLSVersion | None = Field(
        default=None,
        description="Lowest TLS version accepted: 1.2 (the default; `Auto` is the same) or 1.3. "
        "1.0 and 1.1 are refused by meshgate (RFC 8996).",
    )
    maxVersion: TLSVersion | None = Field(
        default=None, description="Highest TLS version accepted: 1.2 or 1.3 (the default; `Auto` is the same)."
    )
    ciphers: list[str] = Field(
        default_factory=list,
        description="OpenSSL names of the TLS 1.2 cipher suites offered, in order; no effect on "
        "TLS 1.3. Default: Mozilla's intermediate list (ECDHE with AES-GCM or ChaCha20-Poly1305).",
    )
    alpnProtocols: list[str] | None = Field(
        default=None,
        description="ALPN protocols offered. meshgate serves `http/1.1` only; an empty list turns "
        "ALPN off. Default: `http/1.1`.",
    )
    clientValidation: ClientValidationContext | None = Field(
        default=None, description="Require (or accept) client certificates signed by these CAs (mTLS)."
    )
    ecdhCurves: Any = not_supported()
    signatureAlgorithms: Any = not_supported()
    session: Any = not_supported()

    @model_validator(mode="after")
    def _versions(self) -> ClientTLSSettings:
        # Envoy Gateway's CEL rules first, with its messages.
        if self.minVersion == "1.3" and self.ciphers:
            raise FieldError((), "setting ciphers has no effect if the minimum possible TLS version is 1.3")
        low = _MIN_ORDER[self.minVersion] if self.minVersion is not None else 3
        if self.maxVersion is not None and low > _MAX_ORDER[self.maxVersion]:
            raise FieldError((), "minVersion must be smaller or equal to maxVersion")
        for name in ("minVersion", "maxVersion"):
            value = getattr(self, name)
            if value in ("1.0", "1.1"):
                raise FieldError(
                    (name,),
                    f"TLS {value} is not supported by meshgate (deprecated by RFC 8996); use 1.2 or 1.3",
                )
        for i, proto in enumerate(self.alpnProtocols or ()):
            if proto != "http/1.1":
                raise FieldError(
                    ("alpnProtocols", i),
                    f"{proto} is not served by meshgate yet; only http/1.1 can be offered",
                )
        return self

    def min_version(self) -> str:
        return "1.2" if self.minVersion in (None, "Auto") else self.minVersion

    def max_version(self) -> str:
        return "1.3" if self.maxVersion in (None, "Auto") else self.maxVersion


# --- client IP detection ---------------------------------------------------------------


class XForwardedForSettings(Section):
    numTrustedHops: UInt32 | None = Field(
        default=None,
        description="Trusted proxies in front of the gateway: the client address is the "
        "numTrustedHops-th address from the right of X-Forwarded-For (Envoy's rule); with fewer "
        "addresses than that, the connection's peer address.",
    )
    trustedCIDRs: Any = not_supported()
    disableXForwardedForAppend: Any = not_supported()

    @model_validator(mode="after")
    def _one_of(self) -> XForwardedForSettings:
        if self.numTrustedHops is None:
            raise FieldError((), "only one of numTrustedHops or trustedCIDRs must be set")
        return self


class ClientIPDetectionSettings(Section):
    xForwardedFor: XForwardedForSettings | None = Field(
        default=None, description="Take the client address from X-Forwarded-For."
    )
    customHeader: Any = not_supported()


# --- timeouts and connection -----------------------------------------------------------


class HTTPClientTimeout(Section):
    requestReceivedTimeout: GoDuration | None = Field(
        default=None,
        description="How long the whole request (head and body) may take to arrive; 408 after "
        "it, if the response has not begun. Default: no limit (the head alone still has "
        "`--header-timeout`).",
    )
    idleTimeout: GoDuration | None = Field(
        default=None,
        description="How long a keep-alive connection may sit with no request before it is "
        "closed. Default: `--idle-timeout` (60s).",
    )
    streamIdleTimeout: Any = not_supported()


class ClientTimeout(Section):
    http: HTTPClientTimeout | None = Field(default=None, description="Timeouts of HTTP connections.")
    tcp: Any = not_supported()


class ClientConnection(Section):
    bufferLimit: Size | None = Field(
        default=None,
        description="Request body bytes buffered per connection before reading from the client "
        "pauses (flow control; Envoy's per-connection buffer limit). Default: 256Ki.",
    )
    connectionLimit: Any = not_supported()
    socketBufferLimit: Any = not_supported()
    maxAcceptPerSocketEvent: Any = not_supported()

    @model_validator(mode="after")
    def _positive(self) -> ClientConnection:
        if self.bufferLimit is not None and parse_size(str(self.bufferLimit)) <= 0:
            raise FieldError(("bufferLimit",), "must be greater than 0")
        return self


class HeaderSettings(Section):
    """The parts of Envoy Gateway's HeaderSettings meshgate serves."""

    withUnderscoresAction: Literal["Allow", "RejectRequest", "DropHeader"] = Field(
        default="RejectRequest",
        description="What to do with a request header whose name has an underscore: "
        "`RejectRequest` (400, the default), `DropHeader` (forward the request without it) or "
        "`Allow`. Many upstream frameworks (CGI, WSGI, PHP) read `X_User` as `X-User`, so "
        "allowing them lets clients forge headers a gateway filter sets or strips.",
    )
    enableEnvoyHeaders: Any = not_supported()
    disableRateLimitHeaders: Any = not_supported()
    xForwardedClientCert: Any = not_supported()
    preserveXRequestID: Any = not_supported()
    earlyRequestHeaders: Any = not_supported()
    lateResponseHeaders: Any = not_supported()
    requestID: Any = not_supported()


# --- spec ------------------------------------------------------------------------------


class ClientTrafficPolicySpec(TargetedSpec):
    # This kind targets Gateways (and their listeners) only.
    accepted_target_kinds = ("Gateway", "ListenerSet")
    accepted_target_kinds_text = "Gateway or ListenerSet"
    served_target_kinds = ("Gateway",)
    served_target_kinds_text = ""

    tls: ClientTLSSettings | None = Field(
        default=None, description="TLS settings of the targeted HTTPS listeners."
    )
    clientIPDetection: ClientIPDetectionSettings | None = Field(
        default=None, description="How the client address (logs, rate limits, authorization) is found."
    )
    timeout: ClientTimeout | None = Field(default=None, description="Client connection timeouts.")
    connection: ClientConnection | None = Field(default=None, description="Client connection settings.")
    tcpKeepalive: Any = not_supported()
    enableProxyProtocol: Any = not_supported()
    proxyProtocol: Any = not_supported()
    path: Any = not_supported()
    headers: HeaderSettings | None = Field(
        default=None, description="Request header handling (header names with underscores)."
    )
    http1: Any = not_supported()
    http2: Any = not_supported()
    http3: Any = not_supported()
    grpc: Any = not_supported()
    healthCheck: Any = not_supported()
    scheme: Any = not_supported()
    targetSelectors: Any = not_supported()


class ClientTrafficPolicy(ResourceBase):
    """Client-side settings (TLS, client certificates, client IP, timeouts) of the Gateways
    or listeners it targets."""

    apiVersion: Literal["gateway.envoyproxy.io/v1alpha1"] = Field(
        description="Always `gateway.envoyproxy.io/v1alpha1`."
    )
    kind: Literal["ClientTrafficPolicy"] = Field(description="Always `ClientTrafficPolicy`.")
    spec: ClientTrafficPolicySpec = Field(description="Targets and client settings.")
