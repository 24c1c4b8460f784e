"""examples/security/jwt: the config loads and compiles cleanly, and a token minted by
its script (TEST-ONLY key) passes /api with its claims upstream, while /public needs
none and an expired or foreign-audience token is refused."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.loader import load_paths
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, RequestContext

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "security" / "jwt"


def _mint():
    spec = importlib.util.spec_from_file_location("mint_token", EXAMPLE / "mint_token.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mint


def _request(path: str, token: str | None) -> RequestContext:
    fields = [("host", "localhost:8170"), ("x-user", "mallory")]
    if token:
        fields.append(("authorization", f"Bearer {token}"))
    return RequestContext("GET", path, path, "", Headers(fields), "localhost", "localhost:8170", "http", "1.1",
                          "127.0.0.1", 5000, 8170, "r", time.monotonic())


def test_example_end_to_end_in_process():
    result = load_paths([EXAMPLE])
    assert result.errors == [] and result.warnings == []
    snapshot = compile_snapshot(result.resources)
    api = find_match(snapshot, 8170, "localhost", "/api/hello").rule
    public = find_match(snapshot, 8170, "localhost", "/public/hello").rule
    (f,) = [f for f in api.filters if f.name == "jwt"]
    assert not [f for f in public.filters if f.name == "jwt"]
    mint = _mint()
    ctx = _request("/api/hello", mint())
    assert f.on_request(ctx) is None
    assert ctx.headers.get_all("x-user") == ["alice"] and ctx.headers.get("x-team") == "blue"
    for bad in (None, mint(ttl=-120), mint(aud="elsewhere"), mint(iss="https://evil")):
        assert isinstance(f.on_request(_request("/api/hello", bad)), LocalReply)
