"""SecurityPolicy `jwt`, end to end: a real ``meshgate gateway`` whose JWKS comes from a
real key server process (``jwks_server.py``, keys switched at run time), in front of an
echo upstream that shows what reached it.

Routes: ``/secure`` (jwt, issuer + audience ``api``, ``sub`` copied to ``x-jwt-sub``),
``/other`` (jwt, same keys, audience ``other``), ``/fast`` (jwt, a JWKS refreshed every
second, for the outage scenario) and ``/open`` (no policy).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from harness import (
    EchoServer,
    Gateway,
    _read_line,
    _terminate,
    free_port,
    gateway_doc,
    policy_doc,
    prefix_rule,
    route_doc,
    service_docs,
    wait_until,
)
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.e2e"
JWKS_SERVER = Path(__file__).with_name("jwks_server.py")


class KeyServer:
    """``jwks_server.py`` as a subprocess, driven through its control endpoint."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> KeyServer:
        self.proc = subprocess.Popen(
            [sys.executable, str(JWKS_SERVER)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        line = _read_line(self.proc.stdout, 10)
        if not line.startswith(b"READY "):
            self.stop()
            raise RuntimeError(f"jwks server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, 3)
            self.proc.stdout.close()
            self.proc = None

    def uri(self, path: str = "/jwks.json") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def control(self, **change) -> dict:
        if change:
            return httpx.post(self.uri("/control"), json=change, timeout=5).json()
        return httpx.get(self.uri("/control"), timeout=5).json()

    def hits(self, path: str = "/jwks.json") -> int:
        return self.control()["hits"].get(path, 0)


class Signer:
    def __init__(self, key, alg: str, kid: str, jwk: dict) -> None:
        self.key, self.alg, self.kid = key, alg, kid
        self.jwk = {**jwk, "kid": kid}

    def token(self, **over) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "alice", "aud": "api", "iat": now, "exp": now + 600}
        claims.update(over)
        claims = {k: v for k, v in claims.items() if v is not None}
        return pyjwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": self.kid})


def rsa_signer(kid: str) -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Signer(key, "RS256", kid, json.loads(RSAAlgorithm.to_jwk(key.public_key())))


def ec_signer(kid: str) -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    return Signer(key, "ES256", kid, json.loads(ECAlgorithm.to_jwk(key.public_key())))


def jwt_policy(name: str, route: str, uri: str, audience: str, cache: str = "300s") -> dict:
    provider = {
        "name": "main",
        "issuer": ISSUER,
        "audiences": [audience],
        "remoteJWKS": {"uri": uri, "cacheDuration": cache},
        "claimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
    }
    return policy_doc("SecurityPolicy", name, {"jwt": {"providers": [provider]}}, route)


class Env:
    gw: Gateway
    keys: KeyServer
    echo: EchoServer
    base: str
    k1: Signer
    started: float


@pytest.fixture(scope="module")
def env():
    e = Env()
    e.k1 = rsa_signer("k1")
    e.keys = KeyServer().start()
    e.echo = EchoServer("echo-jwt").start()
    try:
        e.keys.control(keys=[e.k1.jwk])
        port = free_port()
        docs = [
            gateway_doc(port),
            *service_docs("echo", [e.echo]),
            route_doc("secure", [prefix_rule("/secure", "echo")]),
            route_doc("other", [prefix_rule("/other", "echo")]),
            route_doc("fast", [prefix_rule("/fast", "echo")]),
            route_doc("open", [prefix_rule("/open", "echo")]),
            jwt_policy("secure-jwt", "secure", e.keys.uri(), "api"),
            jwt_policy("other-jwt", "other", e.keys.uri(), "other"),
            jwt_policy("fast-jwt", "fast", e.keys.uri("/jwks.json?fast"), "api", cache="1s"),
        ]
        e.gw = Gateway(docs, extra_args=["--watch-interval", "0.1"])
        e.gw.start()
        e.started = time.time()
        e.base = f"http://127.0.0.1:{port}"
        yield e
    finally:
        if getattr(e, "gw", None) is not None:
            e.gw.cleanup()
        e.echo.stop()
        e.keys.stop()


def get(env: Env, path: str, token: str | None = None, headers: dict | None = None) -> httpx.Response:
    h = dict(headers or {})
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    return httpx.get(env.base + path, headers=h, timeout=10)


def upstream_header(response: httpx.Response, name: str) -> list[str] | None:
    return response.json()["headers"].get(name)


def test_keys_are_loaded_before_ready(env):
    # /ready came after start(): the first request already has keys, no 401 window
    assert env.keys.hits() >= 1
    r = get(env, "/secure/a", env.k1.token())
    assert r.status_code == 200
    assert upstream_header(r, "X-Jwt-Sub") == ["alice"]


def test_claim_header_cannot_be_spoofed(env):
    r = get(env, "/secure/a", env.k1.token(sub="bob"), headers={"x-jwt-sub": "admin"})
    assert r.status_code == 200 and upstream_header(r, "X-Jwt-Sub") == ["bob"]


def test_route_without_policy_is_unaffected(env):
    assert get(env, "/open/x").status_code == 200
    r = get(env, "/open/x", "garbage", headers={"x-jwt-sub": "admin"})
    assert r.status_code == 200 and upstream_header(r, "X-Jwt-Sub") == ["admin"]


def test_missing_token(env):
    env.echo.mark()
    r = get(env, "/secure/a?x=1")
    assert r.status_code == 401 and r.text == "Jwt is missing"
    assert r.headers["www-authenticate"] == f'Bearer realm="http://127.0.0.1:{env.base.rsplit(":", 1)[1]}/secure/a"'
    assert env.echo.count() == 0


def _forged(env: Env) -> dict[str, tuple[str, int, str]]:
    """name -> (token, status, body) for the bad-token battery."""
    k1 = env.k1
    attacker = rsa_signer("k1")
    h, p, s = k1.token().split(".")
    forged_payload = pyjwt.utils.base64url_encode(json.dumps({"iss": ISSUER, "sub": "admin", "aud": "api"}).encode())
    none = (
        pyjwt.utils.base64url_encode(b'{"alg":"none","kid":"k1"}').decode() + "." + p + "."
    )
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    pem = k1.key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_head = pyjwt.utils.base64url_encode(b'{"alg":"HS256","kid":"k1"}').decode()
    hs_sig = pyjwt.utils.base64url_encode(hmac.new(pem, f"{hs_head}.{p}".encode(), hashlib.sha256).digest()).decode()
    jku = pyjwt.encode(
        {"iss": ISSUER, "aud": "api", "sub": "admin"}, attacker.key, algorithm="RS256",
        headers={"kid": "evil", "jku": "http://127.0.0.1:1/evil.json", "jwk": attacker.jwk},
    )
    return {
        "alg-none": (none, 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
        "hs256-with-rsa-public-key": (f"{hs_head}.{p}.{hs_sig}", 401, "Jwks doesn't have key to match kid or alg from Jwt"),
        "expired": (k1.token(exp=int(time.time()) - 120), 401, "Jwt is expired"),
        "not-yet-valid": (k1.token(nbf=int(time.time()) + 600), 401, "Jwt not yet valid"),
        "wrong-issuer": (k1.token(iss="https://evil"), 401, "Jwt issuer is not configured"),
        "wrong-audience": (k1.token(aud="other"), 403, "Audiences in Jwt are not allowed"),
        "other-key-same-kid": (attacker.token(), 401, "Jwt verification fails"),
        "tampered-payload": (f"{h}.{forged_payload.decode()}.{s}", 401, "Jwt verification fails"),
        "jku-jwk-headers": (jku, 401, "Jwks doesn't have key to match kid or alg from Jwt"),
        "oversized": (k1.token(pad="x" * 9000), 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
        "garbage": ("a.b.c", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
    }


def test_bad_token_battery(env):
    env.echo.mark()
    for name, (token, status, body) in _forged(env).items():
        r = get(env, "/secure/a", token)
        assert (r.status_code, r.text) == (status, body), name
        assert r.headers["www-authenticate"].endswith(', error="invalid_token"'), name
    assert env.echo.count() == 0  # nothing reached the upstream


def test_token_in_the_query_is_accepted_by_default_and_bad_ones_too_refused(env):
    r = httpx.get(env.base + "/secure/q", params={"access_token": env.k1.token()}, timeout=10)
    assert r.status_code == 200
    r = httpx.get(env.base + "/secure/q", params={"access_token": env.k1.token(exp=1)}, timeout=10)
    assert r.status_code == 401
    assert "access_token" not in r.headers["www-authenticate"]  # the token is not echoed back


def test_a_token_for_one_route_on_another(env):
    token = env.k1.token()  # aud api
    assert get(env, "/secure/a", token).status_code == 200
    r = get(env, "/other/a", token)
    assert r.status_code == 403 and r.text == "Audiences in Jwt are not allowed"
    assert get(env, "/other/a", env.k1.token(aud="other")).status_code == 200


def test_failures_in_metrics(env):
    get(env, "/secure/a", env.k1.token(exp=int(time.time()) - 120))
    text = env.gw.admin("/metrics").text
    for reason in ("missing", "expired", "bad_signature", "malformed", "wrong_audience"):
        assert f'meshgate_auth_failures_total{{method="jwt",reason="{reason}"}}' in text, reason


def test_rotation_new_kid_accepted_without_restart(env):
    k2 = ec_signer("k2")
    env.keys.control(keys=[env.k1.jwk, k2.jwk])
    # an unknown kid refetches at most once per 10 s: let the window since the
    # gateway's last fetch of this URI pass (the tests before this one may have fetched)
    last = env.keys.control()["last_hit"].get("/jwks.json", env.started)
    wait_until(lambda: time.time() > last + 10.5, 15, 0.1, "refetch window")
    before = env.keys.hits()
    r = get(env, "/secure/a", k2.token())
    assert r.status_code == 200 and upstream_header(r, "X-Jwt-Sub") == ["alice"]
    assert env.keys.hits() == before + 1
    # a burst of unknown kids right after costs no more fetches
    for i in range(10):
        assert get(env, "/secure/a", ec_signer(f"random-{i}").token()).status_code == 401
    assert env.keys.hits() == before + 1
    assert get(env, "/secure/a", env.k1.token()).status_code == 200


def test_jwks_down_keeps_cached_keys(env):
    token = env.k1.token()
    assert get(env, "/fast/a", token).status_code == 200
    try:
        env.keys.control(status=503)
        failing = env.keys.hits("/jwks.json?fast")
        wait_until(lambda: env.keys.hits("/jwks.json?fast") >= failing + 2, 10, 0.1, "refreshes during the outage")
        assert get(env, "/fast/a", token).status_code == 200
        env.keys.control(status=200, mode="close")
        failing = env.keys.hits("/jwks.json?fast")
        wait_until(lambda: env.keys.hits("/jwks.json?fast") >= failing + 1, 10, 0.1, "refresh on a closing server")
        assert get(env, "/fast/a", token).status_code == 200
        assert get(env, "/fast/a", env.k1.token(exp=1)).status_code == 401
        assert "unavailable" in env.gw.stderr_text()
    finally:
        env.keys.control(status=200, mode="serve")
