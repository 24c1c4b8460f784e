"""Runs the meshgate demo (what `make demo` calls): the two demo upstream instances,
then `meshgate gateway` on the config in this folder; waits until the gateway says it
is ready, prints what to try, and runs until Ctrl-C, then stops both children.

    python examples/run_demo.py            # interactive demo
    python examples/run_demo.py --check    # start, try every example request, stop;
                                           # exit 1 if any answer is not what the
                                           # README promises
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
GATEWAY_PORT = 8080  # examples/gateway.yaml
UPSTREAM_PORTS = {"v1": 8081, "v2": 8082}  # examples/services.yaml
ADMIN_PORT = 9901
START_DEADLINE = 30.0
STOP_GRACE = 10.0

GW = f"http://localhost:{GATEWAY_PORT}"
ADMIN = f"http://localhost:{ADMIN_PORT}"
TRIES = f"""\
  # Route by path: /api goes to v1; the route adds the header x-demo: meshgate
  curl -s {GW}/api/hello

  # Route by header: the same path with x-canary: true goes to v2
  curl -s -H 'x-canary: true' {GW}/api/hello

  # Weighted canary: /shop splits 90/10 between v1 and v2
  for i in $(seq 50); do curl -s {GW}/shop | grep '"instance"'; done | sort | uniq -c

  # Redirect: /old/... answers 301 with location /new/...  (add -L to follow it)
  curl -si {GW}/old/page

  # Rewrite: the client asks for /legacy/orders, the upstream sees /api/orders
  curl -s {GW}/legacy/orders

  # Admin: readiness, active config with its version, endpoints, metrics
  curl -s {ADMIN}/ready; curl -s {ADMIN}/config_dump; curl -s {ADMIN}/clusters
  curl -s {ADMIN}/metrics | head -30
"""


class DemoError(Exception):
    pass


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _meshgate_command() -> list[str]:
    beside = Path(sys.executable).with_name("meshgate")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("meshgate")
    if found:
        return [found]
    raise DemoError("the `meshgate` command is not installed; run `make demo` from the repo root")


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0):
    """(status, headers, body) of a GET; never follows redirects, never raises on 4xx/5xx."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _wait_until(what: str, ready, children: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        for child in children:
            if child.poll() is not None:
                raise DemoError(f"{child.args[0]} exited with status {child.returncode} "
                                f"while waiting for {what}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise DemoError(f"{what} not ready after {START_DEADLINE:.0f}s")


def start() -> list[subprocess.Popen]:
    """Start upstreams then gateway; on any failure stop what was started and raise."""
    busy = [p for p in (GATEWAY_PORT, *UPSTREAM_PORTS.values(), ADMIN_PORT) if _port_in_use(p)]
    if busy:
        raise DemoError(f"port(s) {', '.join(map(str, busy))} on {HOST} already in use "
                        "(another demo still running?)")
    gateway_cmd = _meshgate_command() + [
        "gateway", "--config", str(HERE), "--bind", HOST, "--admin-port", str(ADMIN_PORT),
    ]
    children: list[subprocess.Popen] = []
    try:
        # Own sessions: Ctrl-C reaches only this script, which then stops the children
        # in order (gateway first, so it drains before its upstreams go away).
        upstream_args = [f"{name}={HOST}:{port}" for name, port in UPSTREAM_PORTS.items()]
        children.append(subprocess.Popen(
            [sys.executable, str(HERE / "demo_upstream.py"), *upstream_args],
            stdin=subprocess.DEVNULL, start_new_session=True,
        ))
        _wait_until("demo upstreams",
                    lambda: all(_port_in_use(p) for p in UPSTREAM_PORTS.values()), children)
        print("$ " + " ".join(gateway_cmd), flush=True)
        children.append(subprocess.Popen(gateway_cmd, stdin=subprocess.DEVNULL,
                                         start_new_session=True))
        _wait_until("the gateway (/ready)", lambda: _get(f"{ADMIN}/ready", timeout=1)[0] == 200,
                    children)
    except BaseException:
        stop(children)
        raise
    return children


def stop(children: list[subprocess.Popen]) -> None:
    """SIGTERM newest first (gateway drains gracefully), SIGKILL after a grace period."""
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def check() -> list[str]:
    """Try every request the demo advertises; return what did not behave as promised."""
    failures: list[str] = []

    def expect(label: str, ok: bool, detail: object) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {label}" + ("" if ok else f": {detail}"))
        if not ok:
            failures.append(label)

    def echo(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        status, _, body = _get(GW + path, headers)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, {"raw": body[:200]}

    status, info = echo("/api/hello")
    expect("/api -> v1 with x-demo: meshgate",
           status == 200 and info.get("instance") == "v1"
           and info.get("headers", {}).get("x-demo") == "meshgate", (status, info))
    status, info = echo("/api/hello", {"x-canary": "true"})
    expect("/api + x-canary: true -> v2", status == 200 and info.get("instance") == "v2",
           (status, info))
    counts = Counter(echo("/shop")[1].get("instance") for _ in range(200))
    # 90/10 over 200 requests: v2 gets 20 on average; 5..45 holds for any sane balancer.
    expect("/shop splits 90/10", set(counts) <= {"v1", "v2"} and 5 <= counts["v2"] <= 45,
           dict(counts))
    status, headers, _ = _get(GW + "/old/page")
    location = headers.get("location", "")
    expect("/old/page -> 301 /new/page", status == 301 and location.endswith("/new/page"),
           (status, location))
    status, info = echo("/legacy/orders")
    expect("/legacy/orders rewritten to /api/orders",
           status == 200 and info.get("path") == "/api/orders", (status, info))
    status, _, _ = _get(GW + "/no-such-route")
    expect("unrouted path -> 404", status == 404, status)
    for path in ("/ready", "/healthz", "/config_dump", "/clusters", "/metrics"):
        status, _, _ = _get(ADMIN + path)
        expect(f"admin {path} -> 200", status == 200, status)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the meshgate demo.")
    parser.add_argument("--check", action="store_true",
                        help="try every example request, report, stop")
    args = parser.parse_args(argv)
    try:
        children = start()
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        if args.check:
            failures = check()
            print("all demo requests behave as documented" if not failures
                  else f"{len(failures)} demo request(s) misbehaved")
            return 1 if failures else 0
        print(f"\nmeshgate is up: gateway {GW}  admin {ADMIN}\n\nTry:\n\n{TRIES}\n"
              "Config: examples/*.yaml (edit a route and save: the gateway reloads it).\n"
              "Ctrl-C stops the gateway and the upstreams.\n", flush=True)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        exited = next(child for child in children if child.poll() is not None)
        print(f"demo: {exited.args[0]} exited with status {exited.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping the gateway and the upstreams...", flush=True)
        return 0
    finally:
        stop(children)


if __name__ == "__main__":
    sys.exit(main())
