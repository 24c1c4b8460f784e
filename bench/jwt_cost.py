#!/usr/bin/env python3
"""What SecurityPolicy `jwt` costs per request, two ways.

    .venv/bin/python bench/jwt_cost.py [--duration 10] [--connections 50] [--skip-e2e]

1. The filter alone, in process: ``on_request`` for a valid RS256 (RSA 2048) and ES256
   (P-256) token, with the verified-token cache hit (the same token again) and missed
   (cache off: every request verifies its signature).
2. End to end, as bench/run.py measures (requests per proxy CPU-second; the proxy on
   its own CPU, wrk and the upstream on the others): a `meshgate gateway` with one route
   and no policy, then with a jwt policy — local JWKS (synchronous filter) and remote
   JWKS (a plain filter that waits only to refetch an unknown key) — sending one token (cache hits) or
   cycling through 4096 distinct tokens (more than the cache holds: every request
   verifies).

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from peers import find_wrk, free_port, pin_cpus
from policy_cost import (
    add_options,
    compiled_filter,
    measure_gateway,
    print_relative,
    report,
    request_to,
)
from upstream import start_upstream

from meshgate.filters.security import jwt as jwt_filter_mod

ISSUER = "https://bench.issuer"
DISTINCT = 4096


def signers() -> dict[str, tuple]:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ec.generate_private_key(ec.SECP256R1())
    return {
        "RS256": (r, {**json.loads(RSAAlgorithm.to_jwk(r.public_key())), "kid": "r1"}),
        "ES256": (e, {**json.loads(ECAlgorithm.to_jwk(e.public_key())), "kid": "e1"}),
    }


def token(key, alg: str, kid: str, n: int = 0) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": f"user-{n}", "aud": "api", "iat": now, "exp": now + 7200}
    return pyjwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def provider(jwks: dict | None, uri: str | None) -> dict:
    p: dict = {"name": "bench", "issuer": ISSUER, "audiences": ["api"],
               "claimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}
    if uri:
        p["remoteJWKS"] = {"uri": uri}
    else:
        p["localJWKS"] = {"type": "Inline", "inline": json.dumps(jwks)}
    return p


def policy(jwt_provider: dict | None) -> tuple[str, str, dict] | None:
    if jwt_provider is None:
        return None
    return "SecurityPolicy", "jwt", {"jwt": {"providers": [jwt_provider]}}


# --------------------------------------------------------------------------- the filter alone


def filter_alone(keys: dict) -> list[tuple[str, float]]:
    rows = []
    for alg, (key, jwk) in keys.items():
        f = compiled_filter(policy(provider({"keys": [jwk]}, None)))
        ctx = request_to([("authorization", "Bearer " + token(key, alg, jwk["kid"]))])
        assert f.on_request(ctx) is None
        for label, size in (("cache hit", 1024), ("no cache", 0)):
            jwt_filter_mod.TOKEN_CACHE_SIZE = size
            f.providers[0]._cache.clear()
            n = 20000 if size else 2000
            best = min(timeit.repeat(lambda f=f, ctx=ctx: f.on_request(ctx), number=n, repeat=5)) / n
            rows.append((f"{alg} {label}", best * 1e6))
        jwt_filter_mod.TOKEN_CACHE_SIZE = 1024
    return rows


# --------------------------------------------------------------------------- end to end

LUA_CYCLE = """
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i %% #tokens + 1
  return wrk.format("GET", "/", {["Authorization"] = "Bearer " .. tokens[i]})
end
"""


def end_to_end(keys: dict, args) -> list[tuple[str, float, float, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="meshgate-jwt-bench-"))
    pin_cpus()
    up_port = free_port()
    upstream, _ = start_upstream(tmp / "upstream", up_port)
    jwks_file = tmp / "keys.json"
    jwks_file.write_text(json.dumps([jwk for _, jwk in keys.values()]))
    keyserver = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "e2e" / "jwks_server.py"), "--keys", str(jwks_file)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    jwks_port = int(keyserver.stdout.readline().split()[1])
    rows = []
    try:
        cases: list[tuple[str, dict | None, str | None]] = [("no policy", None, None)]
        for alg, (key, jwk) in keys.items():
            cases.append((f"jwt local {alg}", provider({"keys": [jwk]}, None), alg))
            cases.append((f"jwt remote {alg}", provider(None, f"http://127.0.0.1:{jwks_port}/jwks.json"), alg))
        for name, prov, alg in cases:
            modes = [("", None)] if prov is None else [("1 token", "one"), (f"{DISTINCT} tokens", "many")]
            for mode_label, mode in modes:
                workdir = tmp / f"mg-{len(rows)}"
                workdir.mkdir()
                header = script = None
                if mode == "one":
                    key, jwk = keys[alg]
                    header = "Authorization: Bearer " + token(key, alg, jwk["kid"])
                elif mode == "many":
                    key, jwk = keys[alg]
                    tokens = workdir / "tokens.txt"
                    tokens.write_text("\n".join(token(key, alg, jwk["kid"], i) for i in range(DISTINCT)) + "\n")
                    script = workdir / "cycle.lua"
                    script.write_text(LUA_CYCLE % tokens)
                res, cpu = measure_gateway(workdir, up_port, policy(prov), args, header=header, script=script)
                label = f"{name} ({mode_label})" if mode_label else name
                rows.append(report(label, res, cpu, 34))
    finally:
        keyserver.terminate()
        keyserver.wait(5)
        upstream.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap)
    args = ap.parse_args()
    keys = signers()
    print("filter alone (on_request, best of 5):")
    for label, us in filter_alone(keys):
        print(f"  {label:20s} {us:8.1f} us")
    if args.skip_e2e or not find_wrk():
        return 0
    print(f"end to end (wrk -t1 -c{args.connections} -d{args.duration}s, meshgate 1 worker on its own CPU):")
    print_relative(end_to_end(keys, args), 34)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
