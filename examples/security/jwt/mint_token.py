#!/usr/bin/env python3
"""Mint a token the example's policy accepts, signed with the TEST-ONLY key committed
beside this script (TEST-ONLY-private-key.pem). Anyone can read that key: it exists so
the example runs, and must never be trusted anywhere else.

    python examples/security/jwt/mint_token.py [--sub alice] [--team blue] [--ttl 600]
        [--aud example-api] [--iss https://issuer.example.test]

Prints the token. Try it (after `meshgate gateway --config examples/security/jwt` and
`python examples/demo_upstream.py v1=127.0.0.1:8171`):

    TOKEN=$(python examples/security/jwt/mint_token.py)
    curl -i localhost:8170/api/hello -H "Authorization: Bearer $TOKEN"   # 200, x-user: alice
    curl -i localhost:8170/api/hello                                     # 401 Jwt is missing
    curl -i localhost:8170/public/hello                                  # 200, no token needed
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jwt

KEY = Path(__file__).with_name("TEST-ONLY-private-key.pem")
KID = "example-test-only"


def mint(sub: str = "alice", team: str = "blue", ttl: int = 600, aud: str = "example-api",
         iss: str = "https://issuer.example.test") -> str:
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "sub": sub, "org": {"team": team}, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, KEY.read_bytes(), algorithm="RS256", headers={"kid": KID})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sub", default="alice")
    ap.add_argument("--team", default="blue")
    ap.add_argument("--ttl", type=int, default=600, help="seconds until exp (negative: already expired)")
    ap.add_argument("--aud", default="example-api")
    ap.add_argument("--iss", default="https://issuer.example.test")
    a = ap.parse_args()
    print(mint(a.sub, a.team, a.ttl, a.aud, a.iss))


if __name__ == "__main__":
    main()
