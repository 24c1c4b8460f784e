"""SecurityPolicy ``authorization``: ordered Allow / Deny rules, the last security stage.

Everything is compiled once: CIDRs to (network, mask) integers per address family,
header names lowercased, values in frozensets, claim names split into paths. A request
costs one parse of the client address (only when a rule reads it) and set lookups.

Semantics follow Envoy Gateway (its RBAC translation): the first rule whose operation
and principal match decides; no match, ``defaultAction`` (Deny). A denial is Envoy's
RBAC answer: 403 ``RBAC: access denied``, counted as
``meshgate_auth_failures_total{method="authorization",reason="denied"}``.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from meshgate.filters.base import Filter
from meshgate.filters.security.base import deny

if TYPE_CHECKING:
    from meshgate.config.compile.refs import PolicyRefs
    from meshgate.config.models.security.authorization import (
        Authorization as AuthorizationConfig,
    )
    from meshgate.config.models.security.authorization import AuthorizationRule
    from meshgate.proxy.context import LocalReply, RequestContext

def client_address(ip: str) -> tuple[int, int] | None:
    """(4 | 6, address as int) of a client address string, None when unparsable. An
    IPv4-mapped IPv6 address (a dual-stack socket's ``::ffff:a.b.c.d``) counts as IPv4."""
    try:
        if ":" not in ip:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
        n = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip.partition("%")[0]), "big")
    except (OSError, ValueError):
        return None
    if n >> 32 == 0xFFFF:  # ::ffff:0:0/96
        return 4, n & 0xFFFFFFFF
    return 6, n


def _claim(claims: dict, path: tuple[str, ...]) -> Any:
    value: Any = claims
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _scopes(claims: dict) -> frozenset[str]:
    value = claims.get("scope")
    if value is None:
        value = claims.get("scp")
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class CompiledRule:
    """One rule, ready to match: each check is None when the rule does not have it."""

    __slots__ = (
        "_described",
        "allow",
        "cidrs",
        "claims",
        "consumers",
        "headers",
        "methods",
        "name",
        "provider",
        "scopes",
    )

    def __init__(self, rule: AuthorizationRule, name: str, check_provider: bool = False) -> None:
        self.name = name
        self.allow = rule.action == "Allow"
        self.methods = frozenset(rule.operation.methods) if rule.operation else None
        p = rule.principal
        self.cidrs: tuple[tuple[int, int, int], ...] | None = None
        self.headers: tuple[tuple[str, frozenset[str]], ...] | None = None
        self.claims: tuple[tuple[tuple[str, ...], bool, frozenset[str]], ...] | None = None
        self.scopes: frozenset[str] | None = None
        self.consumers: frozenset[str] | None = None
        # The jwt provider that must have verified the claims (when the policy has jwt
        # providers; claims from an IntrospectionPolicy have none).
        self.provider: str | None = None
        self._described: dict[str, Any] = {"name": name, "action": rule.action}
        if rule.operation is not None:
            self._described["methods"] = list(rule.operation.methods)
        if p is None:
            return
        self._described["principal"] = p.model_dump(exclude_none=True)
        if p.clientCIDRs:
            cidrs = []
            for c in p.clientCIDRs:
                net = ipaddress.ip_network(c, strict=False)
                mask = int(net.netmask)
                cidrs.append((net.version, int(net.network_address) & mask, mask))
            self.cidrs = tuple(cidrs)
        if p.headers:
            self.headers = tuple((h.name.lower(), frozenset(h.values)) for h in p.headers)
        if p.jwt is not None:
            self.claims = tuple(
                (tuple(c.name.split(".")), c.valueType == "StringArray", frozenset(c.values))
                for c in p.jwt.claims or ()
            )
            self.scopes = frozenset(p.jwt.scopes or ())
            if check_provider:
                self.provider = p.jwt.provider
        if p.consumers:
            self.consumers = frozenset(p.consumers)

    def matches(self, ctx: RequestContext, address: list) -> bool:
        """``address`` is a one-slot cache of the parsed client address for this request."""
        if self.methods is not None and ctx.method not in self.methods:
            return False
        if self.consumers is not None and ctx.consumer not in self.consumers:
            return False
        if self.headers is not None:
            h = ctx.headers
            for name, values in self.headers:
                found = h.get_all(name)
                if not found:
                    return False
                # Envoy matches a repeated field on its values joined with ",".
                if (found[0] if len(found) == 1 else ",".join(found)) not in values:
                    return False
        if self.cidrs is not None:
            if not address:
                address.append(client_address(ctx.client_ip))
            found = address[0]
            if found is None:
                return False
            version, n = found
            for v, net, mask in self.cidrs:
                if v == version and n & mask == net:
                    break
            else:
                return False
        if self.claims is not None:
            claims = ctx.claims
            if claims is None:
                return False
            if self.provider is not None and ctx.auth_provider != self.provider:
                return False
            for path, is_array, values in self.claims:
                value = _claim(claims, path)
                if is_array:
                    if not isinstance(value, list) or not any(
                        isinstance(v, str) and v in values for v in value
                    ):
                        return False
                elif not isinstance(value, str) or value not in values:
                    return False
            if self.scopes and not self.scopes <= _scopes(claims):
                return False
        return True

    def describe(self) -> dict:
        return self._described


class Authorization(Filter):
    __slots__ = ("default_allow", "rules")
    name = "authorization"

    def __init__(self, rules: tuple[CompiledRule, ...], default_allow: bool) -> None:
        self.rules = rules
        self.default_allow = default_allow

    def on_request(self, ctx: RequestContext) -> LocalReply | None:
        address: list = []
        for rule in self.rules:
            if rule.matches(ctx, address):
                allow = rule.allow
                break
        else:
            allow = self.default_allow
        if allow:
            return None
        return deny("authorization", "denied", 403)

    def describe(self) -> dict:
        return {
            "type": self.name,
            "rules": [r.describe() for r in self.rules],
            "defaultAction": "Allow" if self.default_allow else "Deny",
        }


def build(spec: AuthorizationConfig, refs: PolicyRefs) -> tuple[Authorization, ...]:
    providers = _jwt_providers(refs)
    rules = []
    for i, rule in enumerate(spec.rules):
        jwt = rule.principal.jwt if rule.principal is not None else None
        if jwt is not None and providers is not None and jwt.provider not in providers:
            refs.error(
                ("rules", i, "principal", "jwt", "provider"),
                f"no jwt provider named {jwt.provider!r} in this SecurityPolicy "
                f"(providers: {', '.join(sorted(providers)) or 'none'})",
            )
        rules.append(CompiledRule(rule, rule.name or f"rule-{i}", providers is not None))
    return (Authorization(tuple(rules), spec.defaultAction == "Allow"),)


def _jwt_providers(refs: PolicyRefs) -> frozenset[str] | None:
    """Names of the policy's jwt providers, or None when it cannot say (no jwt section
    with providers: claims may then come from an IntrospectionPolicy)."""
    jwt = getattr(refs.res.obj.spec, "jwt", None)
    providers = getattr(jwt, "providers", None) if jwt is not None else None
    if not providers:
        return None
    return frozenset(getattr(p, "name", None) for p in providers)
