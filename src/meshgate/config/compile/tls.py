"""HTTPS listeners and ClientTrafficPolicy: certificates resolved and checked, SSLContexts
built, and each listener's client settings (limits, timeouts, client IP detection)
resolved, so the data plane only looks things up.

Certificates (Gateway API ``Listener.tls.certificateRefs``): ``kubernetes.io/tls``
Secrets in the Gateway's namespace, or in another one when a ReferenceGrant there
allows Gateways from this namespace. A reference that does not resolve is what the
Gateway API reports as ``ResolvedRefs=False`` (reason ``InvalidCertificateRef``, or
``RefNotPermitted``); meshgate refuses the whole config instead of serving the
listener without it, so a bad certificate pushed on reload leaves the last good one
serving.

ClientTrafficPolicy attaches to Gateways and listeners (``sectionName``); a
listener-level policy wins over a Gateway-level one, whole, as in Envoy Gateway.
Listeners that share a port share connections: on a plain HTTP port their settings
must agree; on an HTTPS port the SNI-selected listener's settings apply, except that
the listeners must agree on whether clients are asked for a certificate (OpenSSL
decides that before SNI is known).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from meshgate.config.compile.attachment import PolicyIndex
from meshgate.config.compile.refs import PolicyRefs
from meshgate.config.models.client_traffic_policy import parse_size
from meshgate.config.models.policy_common import parse_go_duration
from meshgate.config.snapshot import Limits
from meshgate.tls.contexts import (
    INTERMEDIATE_CIPHERS,
    TLS_VERSIONS,
    CertificateError,
    ServerTLSSettings,
    base_context,
    inspect_certificate,
    server_context,
)
from meshgate.tls.sni import ListenerTLS, PortTLS

if TYPE_CHECKING:
    from meshgate.config.compile.backends import BackendResolver
    from meshgate.config.compile.inputs import ErrorSink, Inputs
    from meshgate.config.compile.listeners import ServedListener

KIND = "ClientTrafficPolicy"
GATEWAY_GROUP = "gateway.networking.k8s.io"
TLS_SECRET_TYPE = "kubernetes.io/tls"


@dataclass(frozen=True, slots=True)
class CompiledClient:
    """One ClientTrafficPolicy, ready to apply to a listener."""

    key: str  # "namespace/name"
    tls: ServerTLSSettings | None = None  # None: the defaults
    idle_timeout: float | None = None  # seconds; math.inf: never
    request_timeout: float | None = None  # seconds; 0: no limit
    buffer_limit: int | None = None  # bytes
    xff_trusted_hops: int | None = None
    underscores: str | None = None  # headers.withUnderscoresAction

    def limits(self, base: Limits) -> Limits:
        changes: dict[str, Any] = {}
        if self.idle_timeout is not None:
            changes["idle_timeout"] = self.idle_timeout
        if self.request_timeout is not None:
            changes["request_timeout"] = self.request_timeout
        if self.buffer_limit is not None:
            changes["buffer_limit"] = self.buffer_limit
        if self.xff_trusted_hops is not None:
            changes["xff_trusted_hops"] = self.xff_trusted_hops
        if self.underscores is not None:
            changes["underscore_headers"] = self.underscores
        return replace(base, **changes) if changes else base


class ClientPolicies(PolicyIndex):
    """Every ClientTrafficPolicy of a compile, compiled and attached."""

    kind = KIND

    def __init__(self, inputs: Inputs, resolver: BackendResolver, errors: ErrorSink) -> None:
        self.resolver = resolver
        self.errors = errors
        super().__init__(inputs)

    def compile(self, key: str, res: Any) -> CompiledClient:
        spec = res.obj.spec
        http = spec.timeout.http if spec.timeout is not None else None
        idle = request = None
        if http is not None and http.idleTimeout is not None:
            idle = parse_go_duration(http.idleTimeout) or math.inf
        if http is not None and http.requestReceivedTimeout is not None:
            request = parse_go_duration(http.requestReceivedTimeout)
        buffer = None
        if spec.connection is not None and spec.connection.bufferLimit is not None:
            buffer = parse_size(str(spec.connection.bufferLimit))
        hops = None
        xff = spec.clientIPDetection.xForwardedFor if spec.clientIPDetection is not None else None
        if xff is not None:
            hops = xff.numTrustedHops
        return CompiledClient(
            key=key,
            tls=self._tls(res, spec.tls) if spec.tls is not None else None,
            idle_timeout=idle,
            request_timeout=request,
            buffer_limit=buffer,
            xff_trusted_hops=hops,
            underscores=spec.headers.withUnderscoresAction if spec.headers is not None else None,
        )

    def _tls(self, res: Any, tls: Any) -> ServerTLSSettings:
        validation = tls.clientValidation
        ca = b""
        if validation is not None:
            refs = PolicyRefs(res, self.inputs, self.resolver, self.errors, at=("spec", "tls", "clientValidation"))
            ca = _ca_bundle(refs, validation.caCertificateRefs)
        settings = ServerTLSSettings(
            min_version=tls.min_version(),
            max_version=tls.max_version(),
            ciphers=":".join(tls.ciphers) or INTERMEDIATE_CIPHERS,
            alpn=tuple(tls.alpnProtocols) if tls.alpnProtocols is not None else ("http/1.1",),
            client_ca=ca,
            client_cert_optional=validation.optional if validation is not None else False,
        )
        try:
            base_context(settings)  # the ciphers and the CA bundle, checked once, here
        except CertificateError as exc:
            where = ("spec", "tls", "ciphers") if "cipher" in str(exc) else ("spec", "tls", "clientValidation")
            self.errors.add(res, where, str(exc))
        return settings

    def for_listener(self, gateway: str, listener: str) -> CompiledClient | None:
        return self.for_gateway_listener(gateway, listener)


def _ca_bundle(refs: PolicyRefs, ca_refs: list[Any]) -> bytes:
    from cryptography import x509

    pems: list[bytes] = []
    for i, ref in enumerate(ca_refs):
        path = ("caCertificateRefs", i)
        if ref.kind == "Secret":
            values = refs.secret(ref.name, path, ref.namespace)
            pem = values.get("ca.crt") if values is not None else None
        else:
            data = refs.configmap(ref.name, path, ref.namespace)
            pem = data["ca.crt"].encode() if data is not None and "ca.crt" in data else None
            values = data
        if values is None:
            continue  # the lookup recorded why
        if pem is None:
            refs.error(path, f"{ref.kind} {ref.namespace or refs.namespace}/{ref.name} has no key ca.crt")
            continue
        try:
            x509.load_pem_x509_certificates(pem)
        except ValueError:
            refs.error(path, f"ca.crt of {ref.kind} {ref.namespace or refs.namespace}/{ref.name} is not PEM certificates")
            continue
        pems.append(pem.strip() + b"\n")
    return b"".join(pems)


# --- listeners -------------------------------------------------------------------------


def listener_certificates(
    listener: ServedListener, inputs: Inputs, resolver: BackendResolver, errors: ErrorSink
) -> list[tuple[bytes, bytes, Any]]:
    """(tls.crt, tls.key, CertInfo) of each certificateRef of an HTTPS listener; every
    ref that does not resolve is an error named with its Gateway API reason."""
    res = listener.resource
    tls = listener.model.tls
    base = ("spec", "listeners", listener.index, "tls")
    if tls.options:
        errors.add(res, (*base, "options"), "implementation-specific TLS options are not supported by meshgate")
    if not tls.certificateRefs:
        errors.add(res, (*base, "certificateRefs"), "an HTTPS listener needs at least one certificate reference")
        return []
    out = []
    for j, ref in enumerate(tls.certificateRefs):
        path = (*base, "certificateRefs", j)
        namespace = ref.namespace or listener.gateway_namespace
        what = f"{ref.kind} {namespace}/{ref.name}"

        def invalid(reason: str, message: str, path: tuple = path) -> None:
            errors.add(res, path, f"ResolvedRefs=False ({reason}): {message}")

        if (ref.group or "") != "" or ref.kind != "Secret":
            invalid("InvalidCertificateRef", f"{ref.group or 'core'}/{ref.kind} is not supported; use a Secret")
            continue
        if namespace != listener.gateway_namespace and not resolver.grant_allows(
            listener.gateway_namespace, "Gateway", namespace, "", "Secret", ref.name, from_group=GATEWAY_GROUP
        ):
            invalid(
                "RefNotPermitted",
                f"{what} is in another namespace and no ReferenceGrant there allows "
                f"references from Gateways in {listener.gateway_namespace}",
            )
            continue
        found = inputs.get("Secret", namespace, ref.name)
        if found is None:
            invalid("InvalidCertificateRef", f"{what} not found")
            continue
        secret = found.obj
        if secret.type != TLS_SECRET_TYPE:
            invalid("InvalidCertificateRef", f"{what} has type {secret.type}; it must be {TLS_SECRET_TYPE}")
            continue
        chain, key = secret.value("tls.crt") or b"", secret.value("tls.key") or b""
        try:
            info = inspect_certificate(chain, key)
        except CertificateError as exc:
            invalid("InvalidCertificateRef", f"{what}: {exc}")
            continue
        out.append((chain, key, info))
    return out


def build_listener_tls(
    listener: ServedListener,
    certs: list[tuple[bytes, bytes, Any]],
    settings: ServerTLSSettings,
    limits: Limits,
    errors: ErrorSink,
) -> ListenerTLS | None:
    """The listener's SSLContexts: certificates with the same names share one (an RSA
    and an ECDSA certificate for one host), others get one each, picked by SNI."""
    groups: dict[tuple[str, ...], list[tuple[bytes, bytes]]] = {}
    for chain, key, info in certs:
        groups.setdefault(info.names, []).append((chain, key))
    contexts = []
    for names, pairs in groups.items():
        try:
            contexts.append((names, server_context(pairs, settings)))
        except CertificateError as exc:
            errors.add(
                listener.resource,
                ("spec", "listeners", listener.index, "tls", "certificateRefs"),
                f"ResolvedRefs=False (InvalidCertificateRef): {exc}",
            )
            return None
    if not contexts:
        return None
    return ListenerTLS(
        gateway=listener.gateway,
        listener=listener.name,
        hostname=listener.hostname,
        contexts=tuple(contexts),
        min_version=TLS_VERSIONS[settings.min_version],
        max_version=TLS_VERSIONS[settings.max_version],
        client_cert=settings.client_cert,
        limits=limits,
    )


@dataclass(slots=True)
class ListenerClients:
    """The compile's answer for every served listener: its limits and TLS, by port."""

    port_limits: dict[int, Limits]
    port_tls: dict[int, PortTLS]
    describe: dict[str, dict[str, Any]]  # listener key -> /config_dump additions


def compile_listener_clients(
    listeners: list[ServedListener],
    policies: ClientPolicies,
    inputs: Inputs,
    resolver: BackendResolver,
    errors: ErrorSink,
    base: Limits,
) -> ListenerClients:
    by_port: dict[int, list[tuple[ServedListener, Limits, CompiledClient | None]]] = {}
    describe: dict[str, dict[str, Any]] = {}
    for lst in listeners:
        policy = policies.for_listener(lst.gateway, lst.name)
        limits = policy.limits(base) if policy is not None else base
        by_port.setdefault(lst.port, []).append((lst, limits, policy))
        describe[lst.key] = {"clientTrafficPolicy": policy.key if policy is not None else None}

    port_limits: dict[int, Limits] = {}
    port_tls: dict[int, PortTLS] = {}
    for port, group in by_port.items():
        first, first_limits, first_policy = group[0]
        port_limits[port] = first_limits
        if first.protocol != "HTTPS":
            for lst, limits, policy in group[1:]:
                if limits != first_limits:
                    errors.add(
                        lst.resource,
                        ("spec", "listeners", lst.index),
                        f"listeners on port {port} share connections, so their ClientTrafficPolicy "
                        f"settings must agree: {_policy_name(policy)} here, {_policy_name(first_policy)} "
                        f"on listener {first.key}",
                    )
            continue
        served: list[ListenerTLS] = []
        asks: dict[bool, ServedListener] = {}
        for lst, limits, policy in group:
            settings = policy.tls if policy is not None and policy.tls is not None else ServerTLSSettings()
            asks.setdefault(bool(settings.client_ca), lst)
            certs = listener_certificates(lst, inputs, resolver, errors)
            describe[lst.key]["certificates"] = [
                {"subject": info.subject, "names": list(info.names), "notAfter": info.not_after.isoformat(),
                 "keyType": info.key_type}
                for _, _, info in certs
            ]
            describe[lst.key]["tls"] = {
                "minVersion": settings.min_version,
                "maxVersion": settings.max_version,
                "clientCertificate": settings.client_cert,
            }
            if not certs:
                continue
            built = build_listener_tls(lst, certs, settings, limits, errors)
            if built is not None:
                served.append(built)
        if len(asks) > 1:
            lst = asks[False]
            errors.add(
                lst.resource,
                ("spec", "listeners", lst.index),
                f"HTTPS listeners on port {port} must all validate client certificates or none "
                f"(listener {asks[True].key} does, this one does not): meshgate asks for client "
                f"certificates per port; serve them on different ports",
            )
        if served and len(served) == len(group):
            port_tls[port] = PortTLS.build(port, served)
    return ListenerClients(port_limits, port_tls, describe)


def _policy_name(policy: CompiledClient | None) -> str:
    return f"ClientTrafficPolicy {policy.key}" if policy is not None else "no ClientTrafficPolicy"


__all__ = [
    "ClientPolicies",
    "CompiledClient",
    "ListenerClients",
    "compile_listener_clients",
    "listener_certificates",
]
