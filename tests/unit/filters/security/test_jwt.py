"""SecurityPolicy `jwt`, tested as an attacker would: real keys (RSA, EC P-256, Ed25519,
HMAC) from cryptography, tokens minted by PyJWT or by hand, the filter compiled from YAML
through the real loader and compiler, and remote key sets served by a real HTTP server
in the test's event loop (rotation, outage, refetch rate limit)."""

from __future__ import annotations

import asyncio
import base64
import json
import textwrap
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.loader import load_texts
from meshgate.filters.security import jwks as jwks_mod
from meshgate.filters.security.base import AUTH_FAILURES
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, RequestContext

ISSUER = "https://issuer.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    """One key of each family, with its public JWK."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.hmac = b"h" * 32
        self.attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self, which: str, kid: str | None = None, alg: str | None = None) -> dict:
        if which == "rsa":
            j = json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key()))
        elif which == "attacker":
            j = json.loads(RSAAlgorithm.to_jwk(self.attacker.public_key()))
        elif which == "ec":
            j = json.loads(ECAlgorithm.to_jwk(self.ec.public_key()))
        elif which == "ed":
            j = json.loads(OKPAlgorithm.to_jwk(self.ed.public_key()))
        else:
            j = {"kty": "oct", "k": b64(self.hmac)}
        if kid is not None:
            j["kid"] = kid
        if alg is not None:
            j["alg"] = alg
        return j

    def private(self, which: str):
        return {"rsa": self.rsa, "ec": self.ec, "ed": self.ed, "oct": self.hmac, "attacker": self.attacker}[which]

    def rsa_public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def claims(**over) -> dict:
    now = int(time.time())
    base = {"iss": ISSUER, "sub": "alice", "aud": "api", "iat": now, "exp": now + 600}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def mint(key, alg: str, payload: dict | None = None, kid: str | None = "k1", headers: dict | None = None) -> str:
    h = dict(headers or {})
    if kid is not None:
        h["kid"] = kid
    return pyjwt.encode(payload if payload is not None else claims(), key, algorithm=alg, headers=h)


def unsigned(header: dict, payload: dict, signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )


BASE = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: b}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: 9}}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /}}]
    backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: b, port: 9}]
"""


def policy(jwt_yaml: str) -> str:
    return (
        "apiVersion: gateway.envoyproxy.io/v1alpha1\n"
        "kind: SecurityPolicy\n"
        "metadata: {name: p}\n"
        "spec:\n"
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n"
        "  jwt:\n" + textwrap.indent(textwrap.dedent(jwt_yaml).strip("\n"), "    ") + "\n"
    )


def compile_docs(*docs: str):
    result = load_texts([("t.yaml", "\n---\n".join([BASE, *docs]))])
    assert not result.errors, [str(e) for e in result.errors]
    return compile_snapshot(result.resources)


def jwt_filter(jwt_yaml: str, *extra: str):
    snapshot = compile_docs(policy(jwt_yaml), *extra)
    rule = find_match(snapshot, 80, "example.com", "/").rule
    (f,) = [f for f in rule.filters if f.name == "jwt"]
    return f


def local(jwks: dict | list, **provider) -> str:
    """A provider with an inline JWKS (YAML)."""
    doc = {"keys": jwks} if isinstance(jwks, list) else jwks
    p = {"name": "p1", "issuer": ISSUER, "localJWKS": {"type": "Inline", "inline": json.dumps(doc)}}
    p.update(provider)
    return json.dumps({"providers": [p]})


def request(
    token: str | None = None,
    *,
    path: str = "/things",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    host: str = "gw.example",
) -> RequestContext:
    fields = [("host", host)] + list(headers or [])
    if token is not None:
        fields.append(("authorization", f"Bearer {token}"))
    target = path + ("?" + query if query else "")
    return RequestContext(
        "GET", target, path, query, Headers(fields), host, host, "http", "1.1",
        "127.0.0.1", 40000, 80, "req-1", time.monotonic(),
    )


async def run(f, ctx):
    result = f.on_request(ctx)
    if asyncio.iscoroutine(result):
        result = await result
    return result


class JWKSServer:
    """A JWKS endpoint on 127.0.0.1 inside the test's event loop: keys switchable,
    can answer 500 or stop answering, counts requests."""

    def __init__(self, keys: list[dict]) -> None:
        self.keys = keys
        self.status = 200
        self.hits = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> JWKSServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def uri(self) -> str:
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/jwks.json"

    async def _handle(self, reader, writer) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.hits += 1
            body = json.dumps({"keys": self.keys}).encode() if self.status == 200 else b"down"
            writer.write(
                f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def all_keys(keys: Keys) -> str:
    """A provider trusting one key of each family."""
    return local(
        [
            keys.jwk("rsa", "k1"),
            keys.jwk("ec", "e1"),
            keys.jwk("ed", "d1"),
            keys.jwk("oct", "h1", "HS256"),
        ],
        audiences=["api"],
        claimToHeaders=[{"header": "x-sub", "claim": "sub"}, {"header": "x-team", "claim": "org.team"}],
    )


def refused(result, reason_body: bytes, status: int = 401, error: bool = True) -> None:
    assert isinstance(result, LocalReply), result
    assert result.status == status
    assert result.body == reason_body
    (challenge,) = [v for k, v in result.headers if k == "www-authenticate"]
    realm = 'Bearer realm="http://gw.example/things"'
    assert challenge == (realm + ', error="invalid_token"' if error else realm)


# --------------------------------------------------------------------------- good tokens


@pytest.mark.parametrize(
    "which,alg,kid",
    [("rsa", "RS256", "k1"), ("rsa", "PS256", "k1"), ("rsa", "RS512", "k1"), ("ec", "ES256", "e1"),
     ("ed", "EdDSA", "d1"), ("oct", "HS256", "h1")],
)
async def test_each_key_family_verifies(keys, all_keys, which, alg, kid):
    f = jwt_filter(all_keys)
    ctx = request(mint(keys.private(which), alg, claims(org={"team": "blue"}), kid=kid))
    assert await run(f, ctx) is None
    assert ctx.claims["sub"] == "alice"
    assert ctx.headers.get("x-sub") == "alice" and ctx.headers.get("x-team") == "blue"


async def test_token_without_kid_is_tried_against_the_keys_of_its_alg(keys, all_keys):
    f = jwt_filter(all_keys)
    assert await run(f, request(mint(keys.rsa, "RS256", kid=None))) is None


async def test_missing_token(all_keys):
    f = jwt_filter(all_keys)
    refused(await run(f, request()), b"Jwt is missing", error=False)
    basic = request(headers=[("authorization", "Basic YTpi")])
    refused(await run(f, basic), b"Jwt is missing", error=False)


# --------------------------------------------------------------------------- the attacker's battery


async def test_alg_none_is_malformed(keys, all_keys):
    f = jwt_filter(all_keys)
    for sig in (b"", b"x"):
        token = unsigned({"alg": "none", "kid": "k1"}, claims(), sig)
        refused(await run(f, request(token)), tokbody("malformed"))
    token = unsigned({"alg": "None", "kid": "k1"}, claims(), b"x")
    refused(await run(f, request(token)), tokbody("malformed"))


async def test_hs256_signed_with_the_rsa_public_key_is_refused(keys, all_keys):
    """The classic key confusion: the public PEM (or its JWK JSON) used as HMAC secret."""
    f = jwt_filter(all_keys)
    import hashlib
    import hmac as hmac_mod

    for secret in (keys.rsa_public_pem(), json.dumps(keys.jwk("rsa", "k1")).encode()):
        header = {"alg": "HS256", "kid": "k1", "typ": "JWT"}
        signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
        sig = hmac_mod.new(secret, signing.encode(), hashlib.sha256).digest()
        token = f"{signing}.{b64(sig)}"
        refused(await run(f, request(token)), tokbody("unknown_kid"))
        # without kid: no key accepts HS256 except the oct one, whose secret differs
        header.pop("kid")
        signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
        sig = hmac_mod.new(secret, signing.encode(), hashlib.sha256).digest()
        refused(await run(f, request(f"{signing}.{b64(sig)}")), tokbody("bad_signature"))


async def test_rsa_key_without_alg_never_accepts_hs256(keys):
    f = jwt_filter(local([keys.jwk("rsa", "k1")]))
    import hashlib
    import hmac as hmac_mod

    header = {"alg": "HS256", "kid": "k1"}
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
    token = f"{signing}.{b64(hmac_mod.new(keys.rsa_public_pem(), signing.encode(), hashlib.sha256).digest())}"
    refused(await run(f, request(token)), tokbody("unknown_kid"))


async def test_alg_pinned_by_the_jwk(keys):
    """A JWK with alg RS256 refuses a PS256 token made with the same private key."""
    f = jwt_filter(local([keys.jwk("rsa", "k1", "RS256")]))
    assert await run(f, request(mint(keys.rsa, "RS256"))) is None
    refused(await run(f, request(mint(keys.rsa, "PS256"))), tokbody("unknown_kid"))


async def test_ec_key_accepts_only_its_curve(keys):
    f = jwt_filter(local([keys.jwk("ec", "e1")]))
    assert await run(f, request(mint(keys.ec, "ES256", kid="e1"))) is None
    _, p, sig = mint(keys.ec, "ES256", kid="e1").split(".")
    header = b64(json.dumps({"alg": "ES384", "kid": "e1"}).encode())
    refused(await run(f, request(f"{header}.{p}.{sig}")), tokbody("unknown_kid"))


async def test_expired_beyond_leeway(keys, all_keys):
    f = jwt_filter(all_keys)
    now = int(time.time())
    assert await run(f, request(mint(keys.rsa, "RS256", claims(exp=now - 30)))) is None  # in leeway
    refused(await run(f, request(mint(keys.rsa, "RS256", claims(exp=now - 90)))), tokbody("expired"))


async def test_not_yet_valid(keys, all_keys):
    f = jwt_filter(all_keys)
    now = int(time.time())
    assert await run(f, request(mint(keys.rsa, "RS256", claims(nbf=now + 30)))) is None
    refused(await run(f, request(mint(keys.rsa, "RS256", claims(nbf=now + 300)))), tokbody("not_yet_valid"))


async def test_non_numeric_exp_is_malformed(keys, all_keys):
    f = jwt_filter(all_keys)
    token = mint(keys.rsa, "RS256", {**claims(), "exp": "never"})
    refused(await run(f, request(token)), tokbody("malformed"))


async def test_wrong_issuer(keys, all_keys):
    f = jwt_filter(all_keys)
    refused(await run(f, request(mint(keys.rsa, "RS256", claims(iss="https://evil")))), tokbody("wrong_issuer"))
    refused(await run(f, request(mint(keys.rsa, "RS256", claims(iss=None)))), tokbody("wrong_issuer"))


async def test_wrong_audience_is_403_as_in_envoy(keys, all_keys):
    f = jwt_filter(all_keys)
    refused(await run(f, request(mint(keys.rsa, "RS256", claims(aud="other")))), tokbody("wrong_audience"), 403)
    refused(await run(f, request(mint(keys.rsa, "RS256", claims(aud=None)))), tokbody("wrong_audience"), 403)
    assert await run(f, request(mint(keys.rsa, "RS256", claims(aud=["x", "api"])))) is None


async def test_unknown_kid(keys, all_keys):
    f = jwt_filter(all_keys)
    refused(await run(f, request(mint(keys.rsa, "RS256", kid="nope"))), tokbody("unknown_kid"))


async def test_token_signed_by_another_key_with_a_known_kid(keys, all_keys):
    f = jwt_filter(all_keys)
    refused(await run(f, request(mint(keys.attacker, "RS256", kid="k1"))), tokbody("bad_signature"))


async def test_tampered_payload_keeps_signature(keys, all_keys):
    f = jwt_filter(all_keys)
    h, _, s = mint(keys.rsa, "RS256").split(".")
    forged = b64(json.dumps(claims(sub="admin")).encode())
    refused(await run(f, request(f"{h}.{forged}.{s}")), tokbody("bad_signature"))


async def test_tampered_header(keys, all_keys):
    f = jwt_filter(all_keys)
    _, p, s = mint(keys.rsa, "RS256").split(".")
    for header in ({"alg": "RS256", "kid": "k1", "typ": "JWT", "x": 1}, {"alg": "PS256", "kid": "k1"}):
        refused(await run(f, request(f"{b64(json.dumps(header).encode())}.{p}.{s}")), tokbody("bad_signature"))


@pytest.mark.parametrize("field", ["jku", "x5u", "jwk", "x5c"])
async def test_key_pointing_headers_are_ignored(keys, all_keys, field):
    """A token signed by the attacker's key, with a header naming that key: refused."""
    value = {
        "jku": "http://attacker.test/jwks.json",
        "x5u": "http://attacker.test/cert.pem",
        "jwk": keys.jwk("attacker"),
        "x5c": ["MIIBfake"],
    }[field]
    f = jwt_filter(all_keys)
    for kid in ("k1", "attacker", None):
        token = mint(keys.attacker, "RS256", kid=kid, headers={field: value})
        result = await run(f, request(token))
        assert isinstance(result, LocalReply) and result.status == 401
        assert result.body in (tokbody("bad_signature"), tokbody("unknown_kid"))


async def test_crit_header_is_refused(keys, all_keys):
    f = jwt_filter(all_keys)
    token = mint(keys.rsa, "RS256", headers={"crit": ["exp"]})
    refused(await run(f, request(token)), tokbody("malformed"))


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "!!.e30.e30", "e30.e30.", "bnVsbA.e30.c2ln", "e30.bnVsbA.c2ln",
     "eyJhbGciOiJSUzI1NiJ9.e30.c2ln=", "eyJhbGciOiJSUzI1NiJ9.e30.c", "W10.e30.c2ln"],
)
async def test_garbage_is_malformed(all_keys, token):
    f = jwt_filter(all_keys)
    result = await run(f, request(token or None, headers=[("authorization", "Bearer " + token)] if not token else None))
    assert isinstance(result, LocalReply) and result.status == 401
    if token:
        assert result.body == tokbody("malformed")


async def test_oversized_token(keys, all_keys):
    f = jwt_filter(all_keys)
    big = mint(keys.rsa, "RS256", claims(pad="x" * 9000))
    refused(await run(f, request(big)), tokbody("malformed"))
    fits = mint(keys.rsa, "RS256", claims(pad="x" * 5000))
    assert await run(f, request(fits)) is None


async def test_token_in_the_query_when_only_a_header_is_configured(keys):
    f = jwt_filter(local([keys.jwk("rsa", "k1")], extractFrom={"headers": [{"name": "x-token"}]}))
    token = mint(keys.rsa, "RS256")
    refused(await run(f, request(query=f"access_token={token}")), tokbody("missing"), error=False)
    refused(await run(f, request(token)), tokbody("missing"), error=False)  # Authorization: not configured
    assert await run(f, request(headers=[("x-token", token)])) is None


async def test_default_places_are_bearer_and_access_token(keys, all_keys):
    f = jwt_filter(all_keys)
    token = mint(keys.rsa, "RS256")
    assert await run(f, request(query=f"access_token={token}")) is None
    assert await run(f, request(headers=[("authorization", "bearer " + token)])) is None


async def test_cookie_and_prefixed_header_extraction(keys):
    spec = local(
        [keys.jwk("rsa", "k1")],
        extractFrom={"headers": [{"name": "x-auth", "valuePrefix": "Token "}], "cookies": ["session"],
                     "params": ["jwt"]},
    )
    f = jwt_filter(spec)
    token = mint(keys.rsa, "RS256")
    assert await run(f, request(headers=[("cookie", f"a=1; session={token}; b=2")])) is None
    assert await run(f, request(headers=[("x-auth", f"Token {token}")])) is None
    assert await run(f, request(query=f"x=1&jwt={token}")) is None
    refused(await run(f, request(headers=[("x-auth", token)])), tokbody("missing"), error=False)


async def test_a_good_token_beside_a_bad_one_is_refused(keys, all_keys):
    """Every token found must verify: the upstream might read the other one."""
    f = jwt_filter(all_keys)
    good = mint(keys.rsa, "RS256")
    bad = mint(keys.attacker, "RS256")
    ctx = request(good, query=f"access_token={bad}")
    refused(await run(f, ctx), tokbody("bad_signature"))
    two = request(headers=[("authorization", f"Bearer {good}"), ("authorization", f"Bearer {bad}")])
    refused(await run(f, two), tokbody("bad_signature"))


@pytest.mark.parametrize("name", ["access%5Ftoken", "access%5ftoken", "%61ccess_token"])
async def test_a_bad_token_under_a_percent_encoded_param_name_is_still_seen(keys, all_keys, name):
    """The upstream decodes the parameter name as the gateway's parse does: a forged
    token hidden behind an escaped name must not ride beside a good header token."""
    f = jwt_filter(all_keys)
    good = mint(keys.rsa, "RS256")
    bad = mint(keys.attacker, "RS256")
    refused(await run(f, request(good, query=f"{name}={bad}")), tokbody("bad_signature"))


async def test_optional_lets_a_request_without_token_through_but_not_a_bad_token(keys):
    spec = json.loads(local([keys.jwk("rsa", "k1")], claimToHeaders=[{"header": "x-sub", "claim": "sub"}]))
    spec["optional"] = True
    f = jwt_filter(json.dumps(spec))
    ctx = request(headers=[("x-sub", "admin")])
    assert await run(f, ctx) is None
    assert ctx.claims is None and "x-sub" not in ctx.headers  # spoofed header stripped
    for bad in (mint(keys.attacker, "RS256"), "not-a-jwt", mint(keys.rsa, "RS256", claims(exp=1))):
        result = await run(f, request(bad))
        assert isinstance(result, LocalReply) and result.status == 401


async def test_claim_headers_cannot_be_spoofed(keys, all_keys):
    f = jwt_filter(all_keys)
    ctx = request(
        mint(keys.rsa, "RS256", claims(org={"team": "blue"})),
        headers=[("x-sub", "admin"), ("X-Sub", "root"), ("x-team", "red")],
    )
    assert await run(f, ctx) is None
    assert ctx.headers.get_all("x-sub") == ["alice"] and ctx.headers.get_all("x-team") == ["blue"]
    # a token without the claim: the client's copy is still gone
    ctx = request(mint(keys.rsa, "RS256", claims()), headers=[("x-team", "red")])
    assert await run(f, ctx) is None and "x-team" not in ctx.headers


async def test_claim_values_that_cannot_be_headers_are_skipped(keys):
    spec = local(
        [keys.jwk("rsa", "k1")],
        claimToHeaders=[{"header": "x-a", "claim": "a"}, {"header": "x-n", "claim": "n"},
                        {"header": "x-l", "claim": "l"}, {"header": "x-b", "claim": "b"},
                        {"header": "x-o", "claim": "o"}, {"header": "x-u", "claim": "u"}],
    )
    f = jwt_filter(spec)
    ctx = request(mint(keys.rsa, "RS256", claims(a="x\r\nx-admin: 1", n=42, l=["r1", "r2"], b=True,
                                                 o={"k": 1}, u="José")))
    assert await run(f, ctx) is None
    h = ctx.headers
    assert "x-a" not in h and "x-o" not in h
    assert (h.get("x-n"), h.get("x-l"), h.get("x-b")) == ("42", "r1,r2", "true")
    assert h.get("x-u").encode("latin-1").decode("utf-8") == "José"


async def test_multiple_providers_any_verifies_and_envoy_picks_the_reason(keys):
    spec = {
        "providers": [
            {"name": "a", "issuer": "https://a", "localJWKS": {"inline": json.dumps({"keys": [keys.jwk("rsa", "k1")]})}},
            {"name": "b", "issuer": "https://b", "localJWKS": {"inline": json.dumps({"keys": [keys.jwk("ec", "e1")]})}},
        ]
    }
    f = jwt_filter(json.dumps(spec))
    assert await run(f, request(mint(keys.ec, "ES256", claims(iss="https://b"), kid="e1"))) is None
    assert await run(f, request(mint(keys.rsa, "RS256", claims(iss="https://a")))) is None
    # b's issuer, a's key: the signature failure wins over a's wrong issuer
    refused(await run(f, request(mint(keys.rsa, "RS256", claims(iss="https://b"), kid="e1"))),
            tokbody("unknown_kid"))
    refused(await run(f, request(mint(keys.rsa, "RS256", claims(iss="https://c")))), tokbody("wrong_issuer"))


async def test_consumer_from_claims(keys, all_keys, monkeypatch):
    from meshgate.filters.security.consumers import ConsumerIndex

    seen = []

    def by_claims(self, namespace, c):
        seen.append((namespace, c["sub"]))
        return "team-alice" if c["sub"] == "alice" else None

    monkeypatch.setattr(ConsumerIndex, "by_claims", by_claims)
    f = jwt_filter(all_keys)
    ctx = request(mint(keys.rsa, "RS256"))
    assert await run(f, ctx) is None
    assert ctx.consumer == "team-alice" and seen == [("default", "alice")]
    ctx = request(mint(keys.rsa, "RS256", claims(sub="bob")))
    assert await run(f, ctx) is None and ctx.consumer is None


async def test_a_provider_without_an_issuer_names_no_consumer(keys, monkeypatch):
    """Consumers are named by issuer + subject: a provider that does not pin its issuer
    cannot vouch for the token's ``iss``, so its tokens are not mapped to a Consumer."""
    from meshgate.filters.security.consumers import ConsumerIndex

    monkeypatch.setattr(ConsumerIndex, "by_claims", lambda self, ns, c: "team-alice")
    spec = json.loads(local([keys.jwk("rsa", "k1")]))
    del spec["providers"][0]["issuer"]
    f = jwt_filter(json.dumps(spec))
    ctx = request(mint(keys.rsa, "RS256"))
    assert await run(f, ctx) is None  # the token is good...
    assert ctx.consumer is None  # ...but names nobody


async def test_refusals_are_counted_by_reason(keys, all_keys):
    f = jwt_filter(all_keys)
    before = dict(AUTH_FAILURES)
    await run(f, request(mint(keys.rsa, "RS256", claims(exp=1))))
    await run(f, request())
    assert AUTH_FAILURES[("jwt", "expired")] == before.get(("jwt", "expired"), 0) + 1
    assert AUTH_FAILURES[("jwt", "missing")] == before.get(("jwt", "missing"), 0) + 1


async def test_realm_is_quoted_safely():
    from meshgate.filters.security.jwt import _refuse

    ctx = request(path='/a"b\\c')
    ctx.raw_target = '/a"b\\c' + "x" * 400
    (challenge,) = [v for k, v in _refuse(ctx, "missing").headers if k == "www-authenticate"]
    assert challenge.startswith('Bearer realm="http://gw.example/a%22b%5Cc') and challenge.count('"') == 2
    assert len(challenge) < 300


# --------------------------------------------------------------------------- the verified-token cache


async def test_cache_hit_still_checks_expiry(keys, all_keys, monkeypatch):
    f = jwt_filter(all_keys)
    now = time.time()
    token = mint(keys.rsa, "RS256", claims(exp=int(now) + 10))
    assert await run(f, request(token)) is None
    assert token in f.providers[0]._cache
    monkeypatch.setattr(time, "time", lambda: now + 100)
    refused(await run(f, request(token)), tokbody("expired"))


async def test_cache_is_bounded(keys, all_keys, monkeypatch):
    from meshgate.filters.security import jwt as jwt_filter_mod

    monkeypatch.setattr(jwt_filter_mod, "TOKEN_CACHE_SIZE", 4)
    f = jwt_filter(all_keys)
    for i in range(10):
        assert await run(f, request(mint(keys.ec, "ES256", claims(n=i), kid="e1"))) is None
    assert len(f.providers[0]._cache) == 4


def tokbody(reason: str) -> bytes:
    from meshgate.filters.security.jwt import _REFUSALS

    return _REFUSALS[reason][1]


# --------------------------------------------------------------------------- remote JWKS


def remote(uri: str, cache: str = "300s", **provider) -> str:
    p = {"name": "p1", "issuer": ISSUER, "remoteJWKS": {"uri": uri, "cacheDuration": cache}}
    p.update(provider)
    return json.dumps({"providers": [p]})


@pytest.fixture
async def jwks_server(keys):
    server = await JWKSServer([keys.jwk("rsa", "k1")]).start()
    yield server
    await server.stop()


async def started(spec: str):
    f = jwt_filter(spec)
    (service,) = f.services()
    await service.start()
    return f, service


async def test_remote_keys_are_loaded_by_start(keys, jwks_server):
    f, service = await started(remote(jwks_server.uri))
    try:
        assert service.keyset is not None and jwks_server.hits == 1
        # Known keys: answered at once, no awaitable (the request stays on the fast path).
        assert f.on_request(request(mint(keys.rsa, "RS256"))) is None
    finally:
        service.stop()


async def test_rotation_new_kid_is_fetched_on_first_sight(keys, jwks_server, monkeypatch):
    monkeypatch.setattr(jwks_mod, "REFETCH_INTERVAL", 0.0)
    f, service = await started(remote(jwks_server.uri))
    try:
        jwks_server.keys = [keys.jwk("rsa", "k1"), keys.jwk("ec", "k2")]
        assert await run(f, request(mint(keys.ec, "ES256", kid="k2"))) is None
        assert jwks_server.hits == 2
        # k1 retired by the issuer: gone at the next fetch
        jwks_server.keys = [keys.jwk("ec", "k2")]
        await service.fetch_once()
        refused(await run(f, request(mint(keys.rsa, "RS256", kid="k1"))), tokbody("unknown_kid"))
    finally:
        service.stop()


async def test_unknown_kid_refetch_is_rate_limited(keys, jwks_server, monkeypatch):
    f, service = await started(remote(jwks_server.uri))
    try:
        clock = [time.monotonic()]
        monkeypatch.setattr(jwks_mod.time, "monotonic", lambda: clock[0])
        # the start-up fetch was just now: no refetch within REFETCH_INTERVAL
        for i in range(5):
            refused(await run(f, request(mint(keys.rsa, "RS256", kid=f"random-{i}"))), tokbody("unknown_kid"))
        assert jwks_server.hits == 1
        clock[0] += jwks_mod.REFETCH_INTERVAL + 0.1
        results = await asyncio.gather(
            *(run(f, request(mint(keys.rsa, "RS256", kid=f"other-{i}"))) for i in range(20))
        )
        assert all(r.status == 401 for r in results)
        assert jwks_server.hits == 2  # twenty unknown kids, one shared fetch
        # a kid that is known with another alg does not trigger a refetch either
        clock[0] += jwks_mod.REFETCH_INTERVAL + 0.1
        refused(await run(f, request(mint(keys.ec, "ES256", kid="k1"))), tokbody("unknown_kid"))
        assert jwks_server.hits == 2
    finally:
        service.stop()


async def test_endpoint_down_keeps_the_last_good_keys(keys, jwks_server):
    f, service = await started(remote(jwks_server.uri))
    try:
        jwks_server.status = 500
        assert await service.fetch_once() is False and "HTTP 500" in service.last_error
        assert await run(f, request(mint(keys.rsa, "RS256"))) is None
        uri = jwks_server.uri
        await jwks_server.stop()  # now refused connections
        assert await service.fetch_once() is False
        assert await run(f, request(mint(keys.rsa, "RS256"))) is None
        # and a config reload keeps the same service, keys included
        f2 = jwt_filter(remote(uri))
        assert f2.services()[0] is service
        assert await run(f2, request(mint(keys.rsa, "RS256"))) is None
    finally:
        service.stop()


async def test_endpoint_down_from_the_start(keys, monkeypatch):
    monkeypatch.setattr(jwks_mod, "RETRY_MIN", 0.05)
    dead = JWKSServer([])
    await dead.start()
    uri = dead.uri
    await dead.stop()
    f, service = await started(remote(uri))
    try:
        assert service.keyset is None and service.last_error
        refused(await run(f, request(mint(keys.rsa, "RS256"))), tokbody("jwks_unavailable"))
    finally:
        service.stop()


async def test_keys_come_back_when_the_endpoint_does(keys, jwks_server, monkeypatch):
    monkeypatch.setattr(jwks_mod, "RETRY_MIN", 0.05)
    jwks_server.status = 503
    f, service = await started(remote(jwks_server.uri))
    try:
        assert service.keyset is None
        jwks_server.status = 200
        deadline = time.monotonic() + 5
        while service.keyset is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert await run(f, request(mint(keys.rsa, "RS256"))) is None
    finally:
        service.stop()


async def test_background_refresh_before_cache_duration(keys, jwks_server):
    _, service = await started(remote(jwks_server.uri, cache="1s"))
    try:
        jwks_server.keys = [keys.jwk("ec", "k2")]
        deadline = time.monotonic() + 5
        while jwks_server.hits < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert jwks_server.hits >= 2 and service.keyset.kids() == ["k2"]
    finally:
        service.stop()


async def test_registry_identity(jwks_server):
    a = jwt_filter(remote(jwks_server.uri)).services()[0]
    b = jwt_filter(remote(jwks_server.uri)).services()[0]
    c = jwt_filter(remote(jwks_server.uri, cache="60s")).services()[0]
    assert a is b and a is not c


async def test_stop_cancels_the_refresher(jwks_server):
    _, service = await started(remote(jwks_server.uri))
    task = service._task
    service.stop()
    await asyncio.sleep(0)
    assert task.cancelled() or task.done()


@pytest.mark.parametrize("framing", ["chunked", "close"])
async def test_fetch_reads_chunked_and_close_delimited_bodies(keys, framing):
    body = json.dumps({"keys": [keys.jwk("rsa", "k1")]}).encode()

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        if framing == "chunked":
            half = len(body) // 2
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for part in (body[:half], body[half:]):
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        got = await jwks_mod.fetch(f"http://127.0.0.1:{port}/k")
        assert jwks_mod.parse_jwks(got).kids() == ["k1"]
    finally:
        server.close()


async def test_fetch_refuses_an_oversized_body():
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 9999999\r\n\r\n" + b"x" * (jwks_mod.MAX_BODY + 10))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(jwks_mod.FetchError, match="larger"):
            await jwks_mod.fetch(f"http://127.0.0.1:{port}/k")
    finally:
        server.close()


# --------------------------------------------------------------------------- JWKS documents


def skipped(jwk: dict) -> str:
    with pytest.raises(jwks_mod.JWKSError) as info:
        jwks_mod.parse_jwks(json.dumps({"keys": [jwk]}))
    return str(info.value)


def test_jwks_key_rules(keys):
    assert "HS256, HS384 or HS512" in skipped(keys.jwk("oct", "h"))  # oct without alg
    assert "does not fit" in skipped(keys.jwk("rsa", "k", "HS256"))
    assert "does not fit" in skipped(keys.jwk("ec", "k", "ES384"))
    assert "not a signature key" in skipped({**keys.jwk("rsa", "k"), "use": "enc"})
    assert "verify" in skipped({**keys.jwk("rsa", "k"), "key_ops": ["encrypt"]})
    assert "private" in skipped({**keys.jwk("rsa", "k"), "d": "AQAB"})
    assert "at least 32" in skipped({"kty": "oct", "alg": "HS256", "k": b64(b"short")})
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert "2048" in skipped(json.loads(RSAAlgorithm.to_jwk(small.public_key())))
    assert "not a signature curve" in skipped({"kty": "OKP", "crv": "X25519", "x": b64(b"x" * 32)})
    assert "not supported" in skipped({"kty": "EC", "crv": "P-192", "x": "AA", "y": "AA"})
    assert "not supported" in skipped({"kty": "foo"})


def test_jwks_pins_algorithms_by_key_type(keys):
    ks = jwks_mod.parse_jwks(
        json.dumps({"keys": [keys.jwk("rsa", "r"), keys.jwk("ec", "e"), keys.jwk("ed", "d"),
                             keys.jwk("oct", "h", "HS384" if False else "HS256")]})
    )
    algs = {k.kid: k.algs for k in ks.keys}
    assert algs["r"] == jwks_mod.RSA_ALGS and algs["e"] == {"ES256"}
    assert algs["d"] == {"EdDSA"} and algs["h"] == {"HS256"}
    assert not any("none" in a or ("HS256" in a and k != "h") for k, a in algs.items())


def test_jwks_document_errors():
    for doc in ("nope", "[]", '{"keys": {}}', '{"keys": []}'):
        with pytest.raises(jwks_mod.JWKSError):
            jwks_mod.parse_jwks(doc)


# --------------------------------------------------------------------------- model and compile


def config_errors(jwt_yaml: str, *extra: str) -> list[str]:
    from meshgate.config.errors import ConfigInvalid

    result = load_texts([("t.yaml", "\n---\n".join([BASE, policy(jwt_yaml), *extra]))])
    if result.errors:
        return [str(e) for e in result.errors]
    try:
        compile_snapshot(result.resources)
    except ConfigInvalid as exc:
        return [str(e) for e in exc.errors]
    return []


@pytest.mark.parametrize(
    "provider,message",
    [
        ({"remoteJWKS": {"uri": "https://x/j", "backendRefs": [{"name": "s"}]}}, "backendRefs is not supported"),
        ({"remoteJWKS": {"uri": "https://x/j", "backendRef": {"name": "s"}}}, "backendRef is not supported"),
        ({"remoteJWKS": {"uri": "ftp://x/j"}}, "not an http(s) URI"),
        ({"remoteJWKS": {"uri": "https://x/j", "cacheDuration": "5 minutes"}}, "Duration"),
        ({}, "either remoteJWKS or localJWKS must be specified"),
        ({"remoteJWKS": {"uri": "https://x/j"}, "localJWKS": {"inline": "{}"}}, "cannot both be specified"),
        ({"localJWKS": {"type": "ValueRef", "inline": "{}"}}, "Exactly one of inline or valueRef"),
        ({"localJWKS": {"inline": "{}"}, "recomputeRoute": True}, "claimToHeaders must be specified"),
        ({"localJWKS": {"inline": "{}"}, "recomputeRoute": True,
          "claimToHeaders": [{"header": "x-a", "claim": "a"}]}, "recomputeRoute is not supported"),
        ({"localJWKS": {"inline": "{}"}, "claimToHeaders": [{"header": "Authorization", "claim": "a"}]},
         "cannot be copied into"),
        ({"localJWKS": {"inline": "{}"}, "audiences": [str(i) for i in range(9)]}, "at most 8"),
        ({"localJWKS": {"inline": "{}"}, "unknownField": 1}, "unknownField"),
    ],
)
def test_model_rules(provider, message):
    errors = config_errors(json.dumps({"providers": [{"name": "p", **provider}]}))
    assert len(errors) == 1 and message in errors[0], errors
    assert "SecurityPolicy/default/p:spec.jwt.providers[0]" in errors[0] or "spec.jwt.providers.0" in errors[0], errors


def test_model_provider_names_unique_and_count(keys):
    p = {"name": "p", "localJWKS": {"inline": "{}"}}
    assert "used twice" in config_errors(json.dumps({"providers": [p, p]}))[0]
    assert "at most 4" in config_errors(json.dumps({"providers": [dict(p, name=str(i)) for i in range(5)]}))[0]
    assert config_errors(json.dumps({"providers": []}))


def test_inline_jwks_errors_name_the_field(keys):
    errors = config_errors(json.dumps({"providers": [{"name": "p", "localJWKS": {"inline": "not json"}}]}))
    assert len(errors) == 1 and "localJWKS.inline" in errors[0] and "invalid JWKS" in errors[0], errors
    only_enc = json.dumps({"keys": [{**keys.jwk("rsa", "k"), "use": "enc"}]})
    errors = config_errors(json.dumps({"providers": [{"name": "p", "localJWKS": {"inline": only_enc}}]}))
    assert "no usable key" in errors[0] and "not a signature key" in errors[0]


def test_value_ref_configmap(keys):
    cm = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keys}\n"
        f"data:\n  jwks: '{json.dumps({'keys': [keys.jwk('rsa', 'k1')]})}'\n"
    )
    result = load_texts([("t.yaml", cm)])
    assert result.errors == [] and len(result.resources) == 1
    spec = json.dumps({"providers": [{"name": "p", "localJWKS": {"type": "ValueRef",
                                                                   "valueRef": {"group": "", "kind": "ConfigMap", "name": "keys"}}}]})
    f = jwt_filter(spec, cm)
    assert f.providers[0].source.keyset.kids() == ["k1"]
    errors = config_errors(spec.replace('"keys"}', '"absent"}'))
    assert "ConfigMap default/absent not found" in errors[0], errors


def test_plain_http_jwks_is_logged(caplog):
    with caplog.at_level("WARNING", logger="meshgate.jwt"):
        jwt_filter(remote("http://127.0.0.1:1/jwks.json"))
    assert "plain http" in caplog.text


def test_describe_for_config_dump(keys, all_keys):
    d = jwt_filter(all_keys).describe()
    assert d["type"] == "jwt" and d["providers"][0]["jwks"] == {"local": ["k1", "e1", "d1", "h1"]}
