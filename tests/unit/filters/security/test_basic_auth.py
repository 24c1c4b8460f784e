"""basicAuth: htpasswd with bcrypt and SHA entries, Envoy's answers, the bcrypt check off
the event loop with a cache of successes only, and malformed Authorization headers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time

import bcrypt
import pytest
import yaml

from meshgate.config.compile import compile_snapshot
from meshgate.config.compile.lookup import find_match
from meshgate.config.errors import ConfigInvalid
from meshgate.config.loader import load_texts
from meshgate.filters.base import overrides
from meshgate.filters.security import basic_auth as mod
from meshgate.filters.security.base import AUTH_FAILURES
from meshgate.filters.security.basic_auth import (
    BasicAuth,
    BcryptBasicAuth,
    parse_htpasswd,
)
from meshgate.http.headers import Headers
from meshgate.proxy.context import LocalReply, RequestContext

GROUP = "gateway.networking.k8s.io"
# Test-only credentials.
BCRYPT_ALICE = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
SHA_BOB = "{SHA}" + base64.b64encode(hashlib.sha1(b"bob-pw").digest()).decode()
BOTH = f"alice:{BCRYPT_ALICE}\nbob:{SHA_BOB}\n"
SHA_ONLY = f"bob:{SHA_BOB}\n"


def docs(htpasswd: str, *, basic=None, consumers=()) -> list[dict]:
    return [
        {"apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"gatewayClassName": "meshgate", "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}},
        {"apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
         "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "SecurityPolicy", "metadata": {"name": "p"},
         "spec": {"targetRefs": [{"group": GROUP, "kind": "HTTPRoute", "name": "r"}],
                  "basicAuth": basic or {"users": {"name": "users"}}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "users"}, "stringData": {".htpasswd": htpasswd}},
        *consumers,
    ]


def the_filter(htpasswd: str, **kw) -> BasicAuth:
    result = load_texts([("t.yaml", yaml.safe_dump_all(docs(htpasswd, **kw)))])
    assert result.errors == [], [str(e) for e in result.errors]
    match = find_match(compile_snapshot(result.resources), 8080, "gw.example", "/")
    (f,) = match.rule.filters
    return f


def errors_of(htpasswd: str, **kw) -> list[str]:
    result = load_texts([("t.yaml", yaml.safe_dump_all(docs(htpasswd, **kw)))])
    if result.errors:
        return [str(e) for e in result.errors]
    with pytest.raises(ConfigInvalid) as info:
        compile_snapshot(result.resources)
    return [str(e) for e in info.value.errors]


def request(authorization: str | None = None, **headers: str) -> RequestContext:
    pairs = list(headers.items()) + ([("authorization", authorization)] if authorization is not None else [])
    return RequestContext(
        "GET", "/a?b=1", "/a", "b=1", Headers.from_pairs(pairs), "gw.example", "gw.example", "http",
        "1.1", "127.0.0.1", 40000, 8080, "req-1", 0.0,
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def run(f: BasicAuth, ctx: RequestContext):
    result = f.on_request(ctx)
    if asyncio.iscoroutine(result):
        result = await result
    return result


# --- which hook ---------------------------------------------------------------------------


def test_sha_only_keeps_a_plain_hook_and_bcrypt_makes_it_async():
    sha = the_filter(SHA_ONLY)
    assert type(sha) is BasicAuth and not asyncio.iscoroutinefunction(sha.on_request)
    mixed = the_filter(BOTH)
    assert type(mixed) is BcryptBasicAuth and asyncio.iscoroutinefunction(mixed.on_request)
    assert overrides(mixed, "on_request")


# --- good and bad credentials ---------------------------------------------------------------


async def test_bcrypt_and_sha_users_pass():
    f = the_filter(BOTH)
    for user, pw in (("alice", "alice-pw"), ("bob", "bob-pw")):
        ctx = request(basic(user, pw))
        assert await run(f, ctx) is None
        assert ctx.consumer == user


@pytest.mark.parametrize("htpasswd", [SHA_ONLY, BOTH])
@pytest.mark.parametrize("user, pw", [("bob", "bob-pW"), ("bob", ""), ("nobody", "bob-pw"), ("", "bob-pw")])
async def test_wrong_password_or_unknown_user_is_401_with_envoys_answer(htpasswd, user, pw):
    before = AUTH_FAILURES.get(("basic_auth", "invalid"), 0)
    reply = await run(the_filter(htpasswd), request(basic(user, pw)))
    assert isinstance(reply, LocalReply) and reply.status == 401
    assert reply.body == b"User authentication failed. Invalid username/password combination."
    assert dict(reply.headers)["www-authenticate"] == 'Basic realm="http://gw.example/a?b=1"'
    assert AUTH_FAILURES[("basic_auth", "invalid")] == before + 1


async def test_missing_header_is_counted_as_missing():
    before = AUTH_FAILURES.get(("basic_auth", "missing"), 0)
    reply = await run(the_filter(BOTH), request())
    assert reply.status == 401 and reply.body.endswith(b"Missing username and password.")
    assert AUTH_FAILURES[("basic_auth", "missing")] == before + 1


@pytest.mark.parametrize(
    "header, body",
    [
        ("Basic !!!", b"Invalid basic credential format."),
        ("Basic " + base64.b64encode(b"bobbob-pw").decode(), b"Invalid basic credential format."),
        ("Basic ", b"Invalid basic credential format."),
        ("Bearer abc", b"Expected 'Basic' authentication scheme."),
        ("Basicxyz", b"Expected 'Basic' authentication scheme."),
        ("Basic " + base64.b64encode(b"\xff\xfe:bob-pw").decode(), b"Invalid username/password combination."),
    ],
)
async def test_malformed_authorization_headers(header, body):
    reply = await run(the_filter(BOTH), request(header))
    assert reply.status == 401 and reply.body.endswith(body)


async def test_scheme_is_case_insensitive_and_password_may_hold_colons():
    f = the_filter(f"carol:{{SHA}}{base64.b64encode(hashlib.sha1(b'a:b:c').digest()).decode()}\n")
    ctx = request("basic " + base64.b64encode(b"carol:a:b:c").decode())
    assert await run(f, ctx) is None and ctx.consumer == "carol"


async def test_realm_quotes_are_escaped():
    ctx = request()
    ctx.raw_target = '/x"y\\z'
    reply = await run(the_filter(SHA_ONLY), ctx)
    assert dict(reply.headers)["www-authenticate"] == 'Basic realm="http://gw.example/x\\"y\\\\z"'


# --- the bcrypt cache --------------------------------------------------------------------


async def test_cache_remembers_successes_only_and_never_accepts_a_wrong_password(monkeypatch):
    f = the_filter(BOTH)
    checks = []
    real = mod._bcrypt_check
    monkeypatch.setattr(mod, "_bcrypt_check", lambda pw, h: checks.append(pw) or real(pw, h))
    assert await run(f, request(basic("alice", "alice-pw"))) is None
    assert await run(f, request(basic("alice", "alice-pw"))) is None
    assert checks == [b"alice-pw"] and f.cached() == 1
    # After a cached success, a wrong password still pays bcrypt and fails, every time.
    for _ in range(3):
        assert (await run(f, request(basic("alice", "alice-pwX")))).status == 401
    assert checks == [b"alice-pw"] + [b"alice-pwX"] * 3
    assert f.cached() == 1


async def test_unknown_user_pays_a_bcrypt_check_too(monkeypatch):
    f = the_filter(BOTH)
    checks = []
    monkeypatch.setattr(mod, "_bcrypt_check", lambda pw, h: checks.append(h) or False)
    assert (await run(f, request(basic("mallory", "x")))).status == 401
    assert checks and checks[0].startswith(b"$2b$04$")


async def test_cache_is_bounded(monkeypatch):
    f = the_filter(BOTH)
    monkeypatch.setattr(mod, "CACHE_SIZE", 3)
    monkeypatch.setattr(mod, "_bcrypt_check", lambda pw, h: True)  # every password "right"
    for i in range(10):
        assert await run(f, request(basic("alice", f"pw{i}"))) is None
    assert f.cached() == 3


async def test_bcrypt_runs_off_the_event_loop(monkeypatch):
    f = the_filter(BOTH)
    release = threading.Event()
    loop_thread = threading.get_ident()
    seen = []

    def slow(pw, h):
        seen.append(threading.get_ident())
        release.wait(5)
        return True

    monkeypatch.setattr(mod, "_bcrypt_check", slow)
    pending = asyncio.ensure_future(run(f, request(basic("alice", "x"))))
    # While the check blocks its thread, the loop serves another (SHA) request.
    started = time.monotonic()
    while not seen:
        await asyncio.sleep(0.005)
        assert time.monotonic() - started < 5
    assert await run(f, request(basic("bob", "bob-pw"))) is None
    assert not pending.done()
    release.set()
    assert await pending is None
    assert seen[0] != loop_thread


async def test_identical_checks_in_flight_share_one_thread(monkeypatch):
    f = the_filter(BOTH)
    calls = []
    release = threading.Event()

    def slow(pw, h):
        calls.append(pw)
        release.wait(5)
        return False

    monkeypatch.setattr(mod, "_bcrypt_check", slow)
    tasks = [asyncio.ensure_future(run(f, request(basic("alice", "guess")))) for _ in range(5)]
    while not calls:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)
    release.set()
    replies = await asyncio.gather(*tasks)
    assert [r.status for r in replies] == [401] * 5
    assert calls == [b"guess"]
    # A different guess is a different check.
    release.set()
    assert (await run(f, request(basic("alice", "guess2")))).status == 401
    assert calls == [b"guess", b"guess2"]


async def test_real_bcrypt_long_password_is_truncated_like_htpasswd():
    hashed = bcrypt.hashpw(b"p" * 72, bcrypt.gensalt(rounds=4)).decode()
    f = the_filter(f"dave:{hashed}\n")
    assert await run(f, request(basic("dave", "p" * 80))) is None


# --- forwarded user name and consumers -------------------------------------------------------


async def test_forward_username_header_replaces_a_forged_one_and_encodes_safely():
    sha = base64.b64encode(hashlib.sha1(b"pw").digest()).decode()
    f = the_filter(
        f"bob:{{SHA}}{sha}\nj\u00fcrgen:{{SHA}}{sha}\n",
        basic={"users": {"name": "users"}, "forwardUsernameHeader": "x-user"},
    )
    ctx = request(basic("bob", "pw"), **{"x-user": "admin"})
    assert await run(f, ctx) is None and ctx.headers.get_all("x-user") == ["bob"]
    ctx = request("Basic " + base64.b64encode("j\u00fcrgen:pw".encode()).decode())
    assert await run(f, ctx) is None
    assert ctx.headers.get("x-user") == "j%C3%BCrgen" and ctx.consumer == "j\u00fcrgen"


async def test_a_consumer_that_claims_the_user_is_the_consumer():
    consumer = {"apiVersion": "meshgate.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": "ops"},
                "spec": {"basicAuth": [{"username": "bob"}]}}
    ctx = request(basic("bob", "bob-pw"))
    assert await run(the_filter(BOTH, consumers=[consumer]), ctx) is None
    assert ctx.consumer == "ops"


# --- the htpasswd file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, message",
    [
        ("eve:$apr1$abc$def", "line 2 (user 'eve'): MD5 (apr1) hashes are not supported"),
        ("eve:$1$abc$def", "MD5-crypt hashes are not supported"),
        ("eve:$6$abc$def", "SHA-512-crypt hashes are not supported"),
        ("eve:abJnggxhB/yWI", "line 2 (user 'eve'): crypt or plain-text hashes are not supported"),
        ("eve:{SHA}not-base64", "{SHA} must be followed by the base64"),
        ("eve:$2y$10$short", "malformed bcrypt hash"),
        ("eve", "line 2: expected user:hash"),
        ("bob:" + SHA_BOB, "line 2 (user 'bob'): duplicate user (first on line 1)"),
    ],
)
def test_unsupported_or_malformed_lines_are_errors_naming_the_line(line, message):
    errs = errors_of(f"bob:{SHA_BOB}\n{line}\n")
    assert len(errs) == 1, errs
    assert message in errs[0] and "spec.basicAuth.users" in errs[0]
    assert "use bcrypt (htpasswd -B) or SHA (htpasswd -s)" in errs[0] or "hashes" not in message


def test_error_never_shows_the_hash():
    errs = errors_of("eve:$apr1$salt$SECRETHASHVALUE\n")
    assert errs and "SECRETHASHVALUE" not in errs[0]


def test_blank_lines_comments_and_crlf_are_fine():
    entries, errors = parse_htpasswd(f"# users\r\n\r\nbob:{SHA_BOB}\r\n".encode())
    assert errors == [] and [e[1] for e in entries] == ["bob"]


def test_secret_without_htpasswd_key_and_empty_file_are_errors():
    d = docs(SHA_ONLY)
    d[4]["stringData"] = {"users": SHA_ONLY}
    result = load_texts([("t.yaml", yaml.safe_dump_all(d))])
    with pytest.raises(ConfigInvalid) as info:
        compile_snapshot(result.resources)
    assert "has no '.htpasswd' key" in str(info.value.errors[0])
    assert any("has no users" in e for e in errors_of("# nobody\n"))


def test_a_bare_user_may_not_take_the_name_of_a_consumer():
    """htpasswd user "bob" is not Consumer "bob" (who claims another user)."""
    consumer = {"apiVersion": "meshgate.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": "bob"},
                "spec": {"basicAuth": [{"username": "someone-else"}]}}
    (err,) = errors_of(f"bob:{SHA_BOB}\n", consumers=[consumer])
    assert "user 'bob' has the name of Consumer default/bob, which does not claim it" in err
