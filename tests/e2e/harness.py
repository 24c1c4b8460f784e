"""Real processes on 127.0.0.1 for the e2e tests: echo upstreams, a meshgate gateway,
a raw-socket client, and the Gateway API conformance config generator.

Everything here starts what it needs on ports chosen at run time, waits on readiness
with a deadline (never a fixed sleep), and stops exactly the processes it started.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from echo_server import pattern_bytes  # noqa: F401 - re-exported: the download body

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE_DIR = REPO_ROOT / "tests" / "conformance" / "manifests"
ECHO_SERVER = Path(__file__).with_name("echo_server.py")
LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on right now (bound then released by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = ""):
    """Poll `predicate` until it returns something truthy; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def _terminate(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM the process we started, wait, then SIGKILL its own process group."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None or _group_alive(proc.pid):
        # start_new_session=True made the process the leader of a group holding only
        # it and its own children (workers): that is exactly what we started.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    return proc.returncode


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# --------------------------------------------------------------------------- echo upstream


class EchoServer:
    """`echo_server.py` as a subprocess; `requests()` reads what it received."""

    def __init__(self, pod: str = "echo-0", namespace: str = "default", port: int = 0) -> None:
        self.pod = pod
        self.namespace = namespace
        self.port = port
        self._dir = Path(tempfile.mkdtemp(prefix="meshgate-echo-"))
        self.log_path = self._dir / "requests.jsonl"
        self.log_path.touch()
        self.proc: subprocess.Popen | None = None
        self._mark = 0
        self._record_mark = 0

    def start(self, timeout: float = 10.0) -> EchoServer:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ECHO_SERVER),
                "--port",
                str(self.port),
                "--pod",
                self.pod,
                "--namespace",
                self.namespace,
                "--log",
                str(self.log_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        line = _read_line(self.proc.stdout, timeout)
        if not line.startswith(b"READY "):
            self.stop()
            raise RuntimeError(f"echo server {self.pod} did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, 3)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def all_records(self) -> list[dict]:
        text = self.log_path.read_text() if self.log_path.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def all_requests(self) -> list[dict]:
        """Request heads received (one per request, written before its body is read)."""
        return [r for r in self.all_records() if "method" in r]

    def completed(self) -> list[dict]:
        """Requests received in full (body included) since the last `mark()`."""
        return [r for r in self.all_records()[self._record_mark :] if r.get("complete")]

    def received_anything(self) -> bool:
        """Any bytes at all since the last `mark()`: a head, a partial head, garbage."""
        return len(self.all_records()) > self._record_mark

    def requests(self) -> list[dict]:
        """Requests received since the last `mark()`."""
        return self.all_requests()[self._mark :]

    def mark(self) -> None:
        self._mark = len(self.all_requests())
        self._record_mark = len(self.all_records())

    def count(self) -> int:
        return len(self.requests())


def _read_line(stream, timeout: float) -> bytes:
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(stream.fileno(), 1)
            if not chunk:
                break
            buf += chunk
    finally:
        sel.close()
    return buf.strip()


def start_echo_servers(specs: Iterable[tuple[str, str]]) -> list[EchoServer]:
    """Start one echo server per (pod, namespace), in parallel; stop them all on failure."""
    servers = [EchoServer(pod, ns) for pod, ns in specs]
    started: list[EchoServer] = []
    try:
        for server in servers:  # Popen all first, then wait for each: parallel start-up
            server.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ECHO_SERVER),
                    "--pod",
                    server.pod,
                    "--namespace",
                    server.namespace,
                    "--log",
                    str(server.log_path),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            started.append(server)
        for server in servers:
            line = _read_line(server.proc.stdout, 10)
            if not line.startswith(b"READY "):
                raise RuntimeError(f"echo server {server.pod} did not start: {line!r}")
            server.port = int(line.split()[1])
    except BaseException:
        for server in started:
            server.stop()
        raise
    return servers


# --------------------------------------------------------------------------- gateway


def meshgate_command() -> list[str]:
    exe = REPO_ROOT / ".venv" / "bin" / "meshgate"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "meshgate.cli.main"]


def dump_yaml(docs: Iterable[dict] | str) -> str:
    if isinstance(docs, str):
        return docs
    return yaml.safe_dump_all(list(docs), sort_keys=False)


class Gateway:
    """A `meshgate gateway` process serving the YAML a test gives it.

    Use as a context manager or call `start()`/`stop()`. The config lives in a temp
    directory (`config_dir`, file `config.yaml`); `write_config()` replaces it atomically
    so the gateway's watcher never sees half a file.
    """

    def __init__(
        self,
        config: Iterable[dict] | str,
        gateways: Iterable[str] = (),
        workers: int | None = None,
        extra_args: Iterable[str] = (),
        ready_timeout: float = 30.0,
    ) -> None:
        self.config_dir = Path(tempfile.mkdtemp(prefix="meshgate-gw-"))
        self.config_path = self.config_dir / "config.yaml"
        self.gateways = list(gateways)
        self.workers = workers
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.admin_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._stdout = self.config_dir.parent / (self.config_dir.name + ".stdout")
        self._stderr = self.config_dir.parent / (self.config_dir.name + ".stderr")
        self.write_config(config)

    # -- lifecycle
    def command(self) -> list[str]:
        cmd = [*meshgate_command(), "gateway", "--config", str(self.config_dir)]
        cmd += ["--bind", LOCALHOST, "--admin-port", str(self.admin_port)]
        for gw in self.gateways:
            cmd += ["--gateway", gw]
        if self.workers is not None:
            cmd += ["--workers", str(self.workers)]
        return cmd + self.extra_args

    def start(self) -> Gateway:
        with open(self._stdout, "wb") as out, open(self._stderr, "wb") as err:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=err, start_new_session=True, cwd=REPO_ROOT
            )
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"meshgate exited with {self.proc.returncode} before /ready:\n{self.stderr_text()[-4000:]}"
                )
            try:
                if httpx.get(self.admin_url("/ready"), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"meshgate not ready after {timeout}s:\n{self.stderr_text()[-4000:]}")
            time.sleep(0.03)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, SIGKILL the process group if still there."""
        if self.proc is not None:
            self.returncode = _terminate(self.proc, timeout)
            self.proc = None
        return self.returncode

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.config_dir, ignore_errors=True)
        for path in (self._stdout, self._stderr):
            path.unlink(missing_ok=True)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- config
    def write_config(self, config: Iterable[dict] | str) -> None:
        # Written beside the watched file under a name the *.yaml glob skips, then renamed.
        tmp = self.config_dir / ".config.yaml.tmp"
        tmp.write_text(dump_yaml(config))
        os.replace(tmp, self.config_path)

    def config_version(self):
        return self.admin_json("/config_dump").get("version")

    def reload(self, config: Iterable[dict] | str, timeout: float = 10.0):
        """Write a new config and wait until /config_dump shows a new version."""
        before = self.config_version()
        # mtime granularity: make sure the new file does not look unchanged.
        self.write_config(config)
        return wait_until(
            lambda: (v := self.config_version()) != before and v, timeout, 0.02, "config reload"
        )

    # -- access
    def url(self, port: int, path: str = "") -> str:
        return f"http://{LOCALHOST}:{port}{path}"

    def admin_url(self, path: str) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}{path}"

    def admin(self, path: str, method: str = "GET") -> httpx.Response:
        return httpx.request(method, self.admin_url(path), timeout=5)

    def admin_json(self, path: str) -> dict:
        return self.admin(path).json()

    def stderr_text(self) -> str:
        return self._stderr.read_text(errors="replace") if self._stderr.exists() else ""

    def stdout_text(self) -> str:
        return self._stdout.read_text(errors="replace") if self._stdout.exists() else ""


# --------------------------------------------------------------------------- raw client


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


def parse_responses(data: bytes, head_only: Iterable[int] = ()) -> list[RawResponse]:
    """Complete HTTP/1.x responses at the start of `data` (interim 1xx included)."""
    out: list[RawResponse] = []
    head_only = list(head_only)
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return out
        lines = data[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            return out
        status = int(parts[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        rest = data[end + 4 :]
        lower = {k.lower(): v for k, v in headers}
        body = b""
        if 100 <= status < 200 or status in (204, 304) or len(out) in head_only:
            pass
        elif "chunked" in lower.get("transfer-encoding", "").lower():
            chunks = []
            pos = 0
            while True:
                eol = rest.find(b"\r\n", pos)
                if eol < 0:
                    return out
                size = int(rest[pos:eol].split(b";")[0], 16)
                if size == 0:
                    tend = rest.find(b"\r\n\r\n", eol)
                    if tend < 0 and rest[eol + 2 : eol + 4] != b"\r\n":
                        return out
                    pos = eol + 4 if rest[eol + 2 : eol + 4] == b"\r\n" else tend + 4
                    break
                if len(rest) < eol + 2 + size + 2:
                    return out
                chunks.append(rest[eol + 2 : eol + 2 + size])
                pos = eol + 2 + size + 2
            body, rest = b"".join(chunks), rest[pos:]
        elif "content-length" in lower:
            n = int(lower["content-length"])
            if len(rest) < n:
                return out
            body, rest = rest[:n], rest[n:]
        else:
            # Delimited by close: complete only at EOF; the caller decides.
            body, rest = rest, b""
        out.append(RawResponse(status, parts[2] if len(parts) > 2 else "", headers, body))
        data = rest


def raw_request(
    port: int,
    data: bytes | Iterable[bytes],
    timeout: float = 3.0,
    expect_responses: int | None = None,
    pause: float = 0.0,
) -> tuple[bytes, bool]:
    """Send raw bytes to 127.0.0.1:port and read what comes back.

    Returns (everything received, closed) where `closed` is True if the peer closed
    (EOF or reset) within `timeout`. With `expect_responses=N` it stops as soon as N
    complete final responses arrived (closed is then False unless EOF came with them).
    `data` may be a list of parts sent `pause` seconds apart.
    """
    parts = [data] if isinstance(data, bytes) else list(data)
    received = b""
    closed = False
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as sock:
        deadline = time.monotonic() + timeout
        try:
            for i, part in enumerate(parts):
                if i and pause:
                    time.sleep(pause)
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        while not closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
            if expect_responses is not None:
                finals = [r for r in parse_responses(received) if r.status >= 200]
                if len(finals) >= expect_responses:
                    break
    return received, closed


# --------------------------------------------------------------------------- conformance


GATEWAY_CLASS = "meshgate"
HTTP_ECHO_SERVICES = {  # Services of base.yaml backed by the HTTP echo server.
    ("gateway-conformance-infra", "infra-backend-v1"),
    ("gateway-conformance-infra", "infra-backend-v2"),
    ("gateway-conformance-infra", "infra-backend-v3"),
    ("gateway-conformance-app-backend", "app-backend-v1"),
    ("gateway-conformance-app-backend", "app-backend-v2"),
    ("gateway-conformance-web-backend", "web-backend"),
}
SERVED_KINDS = {"Namespace", "Gateway", "HTTPRoute", "Service", "ReferenceGrant", "EndpointSlice", "Backend"}


def load_manifest(path: Path) -> list[dict]:
    text = path.read_text().replace("{GATEWAY_CLASS_NAME}", GATEWAY_CLASS)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _key(doc: dict) -> tuple[str, str]:
    meta = doc.get("metadata", {})
    return meta.get("namespace", "default"), meta["name"]


def base_replicas() -> dict[tuple[str, str], int]:
    """(namespace, service) -> pods to start, from base.yaml's Deployments (at most 2)."""
    out = {}
    for doc in load_manifest(CONFORMANCE_DIR / "base.yaml"):
        if doc["kind"] == "Deployment" and _key(doc) in HTTP_ECHO_SERVICES:
            out[_key(doc)] = min(2, doc["spec"].get("replicas", 1))
    return out


class BackendPool:
    """Echo servers for every HTTP Service of base.yaml, pod names `<service>-<i>`."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], list[EchoServer]] = {}

    def start(self) -> BackendPool:
        replicas = base_replicas()
        specs = [(f"{name}-{i}", ns) for (ns, name), n in sorted(replicas.items()) for i in range(n)]
        servers = start_echo_servers(specs)
        for server in servers:
            name = server.pod.rsplit("-", 1)[0]
            self.pods.setdefault((server.namespace, name), []).append(server)
        return self

    def stop(self) -> None:
        for servers in self.pods.values():
            for server in servers:
                server.stop()
        self.pods.clear()

    def servers(self, service: str, namespace: str = "gateway-conformance-infra") -> list[EchoServer]:
        return self.pods[(namespace, service)]

    def mark(self) -> None:
        for servers in self.pods.values():
            for server in servers:
                server.mark()

    def received(self, service: str, namespace: str = "gateway-conformance-infra") -> list[dict]:
        return [r for s in self.servers(service, namespace) for r in s.requests()]


def endpoint_slices(service: dict, servers: list[EchoServer]) -> list[dict]:
    """One EndpointSlice per echo pod (each pod has its own port on 127.0.0.1)."""
    ns, name = _key(service)
    slices = []
    for server in servers:
        ports = []
        for sp in service["spec"].get("ports", []):
            port = {"port": server.port, "protocol": "TCP"}
            if sp.get("name"):
                port["name"] = sp["name"]
            if port not in ports:
                ports.append(port)
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": server.pod,
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": [
                    {
                        "addresses": [LOCALHOST],
                        "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "name": server.pod, "namespace": ns},
                    }
                ],
            }
        )
    return slices


@dataclass
class ConformanceConfig:
    docs: list[dict]
    gateways: list[str]
    ports: dict[tuple[str, int], int] = field(default_factory=dict)  # ("ns/gw", port) -> real

    def port(self, gateway: str = "gateway-conformance-infra/same-namespace", original: int = 80) -> int:
        return self.ports[(gateway, original)]


def conformance_config(
    manifest: str | Path,
    gateways: Iterable[str],
    pool: BackendPool,
    drop: Callable[[dict], bool] = lambda doc: False,
) -> ConformanceConfig:
    """base.yaml + one test manifest, made servable on 127.0.0.1.

    - only the Gateways in `gateways` ("ns/name") are kept; each of their listener ports
      is replaced by a free port (per Gateway, so Gateways sharing port 80 do not clash),
      and HTTPRoute parentRef ports follow;
    - parentRefs to Gateways not served are removed (a route left without parents too);
    - Deployments, ConfigMaps and non-HTTP Services are dropped; every remaining Service
      gets EndpointSlices pointing at the pool's echo servers.
    """
    manifest = Path(manifest)
    if not manifest.is_absolute():
        manifest = CONFORMANCE_DIR / "tests" / manifest
    gateways = list(gateways)
    docs = [d for d in load_manifest(CONFORMANCE_DIR / "base.yaml") + load_manifest(manifest)]
    out: list[dict] = []
    ports: dict[tuple[str, int], int] = {}
    for doc in docs:
        doc = copy.deepcopy(doc)
        kind = doc.get("kind")
        if kind not in SERVED_KINDS or drop(doc):
            continue
        ns, name = _key(doc)
        if kind == "Gateway":
            gw = f"{ns}/{name}"
            if gw not in gateways:
                continue
            for listener in doc["spec"]["listeners"]:
                real = ports.setdefault((gw, listener["port"]), free_port())
                listener["port"] = real
        elif kind == "Service" and (ns, name) not in HTTP_ECHO_SERVICES:
            continue
        out.append(doc)
    for doc in out:
        if doc["kind"] != "HTTPRoute":
            continue
        ns = _key(doc)[0]
        kept = []
        for ref in doc["spec"].get("parentRefs", []):
            if ref.get("kind", "Gateway") != "Gateway":
                kept.append(ref)
                continue
            gw = f"{ref.get('namespace', ns)}/{ref['name']}"
            if gw not in gateways:
                continue
            if "port" in ref:
                ref["port"] = ports.get((gw, ref["port"]), ref["port"])
            kept.append(ref)
        doc["spec"]["parentRefs"] = kept
    out = [d for d in out if d["kind"] != "HTTPRoute" or d["spec"]["parentRefs"]]
    for doc in list(out):
        if doc["kind"] == "Service":
            out.extend(endpoint_slices(doc, pool.servers(doc["metadata"]["name"], _key(doc)[0])))
    return ConformanceConfig(out, gateways, ports)


# --------------------------------------------------------------------------- small configs


def service_docs(name: str, servers: Iterable[EchoServer], namespace: str = "default", port: int = 8080) -> list[dict]:
    """A Service `name` (port `port`) and one EndpointSlice per echo server."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": "http", "port": port, "targetPort": 3000}]},
    }
    return [service, *endpoint_slices(service, list(servers))]


def gateway_doc(port: int, name: str = "gw", namespace: str = "default", hostname: str | None = None) -> dict:
    listener = {"name": "http", "port": port, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
    if hostname:
        listener["hostname"] = hostname
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": [listener]},
    }


def route_doc(name: str, rules: list[dict], gateway: str = "gw", namespace: str = "default", hostnames=None) -> dict:
    spec: dict = {"parentRefs": [{"name": gateway}], "rules": rules}
    if hostnames:
        spec["hostnames"] = list(hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def prefix_rule(prefix: str, service: str, port: int = 8080, **extra) -> dict:
    rule = {
        "matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
        "backendRefs": [{"name": service, "port": port}],
    }
    rule.update(extra)
    return rule


def backend_doc(name: str, port: int, namespace: str = "default") -> dict:
    """An Envoy Gateway `Backend` with one static 127.0.0.1 endpoint."""
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"endpoints": [{"ip": {"address": LOCALHOST, "port": port}}]},
    }


def simple_config(listener_port: int, routes: dict[str, EchoServer], timeouts: dict | None = None) -> list[dict]:
    """One Gateway on `listener_port` and one HTTPRoute whose PathPrefix rules send each
    prefix to its own echo server (Service `svc-<i>`)."""
    docs: list[dict] = [gateway_doc(listener_port)]
    rules = []
    for i, (prefix, server) in enumerate(routes.items()):
        docs += service_docs(f"svc-{i}", [server])
        extra = {"timeouts": timeouts} if timeouts else {}
        rules.append(prefix_rule(prefix, f"svc-{i}", **extra))
    docs.append(route_doc("route", rules))
    return docs


def policy_doc(
    kind: str,
    name: str,
    spec: dict,
    target: str = "route",
    target_kind: str = "HTTPRoute",
    namespace: str = "default",
) -> dict:
    """A policy of ``kind`` (Envoy Gateway's, or meshgate.dev's for meshgate kinds)
    whose ``spec`` targets the HTTPRoute (or ``target_kind``) ``target``."""
    group = "meshgate.dev" if kind in MESHGATE_KINDS else "gateway.envoyproxy.io"
    return {
        "apiVersion": f"{group}/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": target_kind, "name": target}],
            **spec,
        },
    }


MESHGATE_KINDS = ("CachePolicy", "ValidationPolicy", "TransformPolicy", "IntrospectionPolicy", "Plan", "Consumer")


@contextlib.contextmanager
def serving(
    docs: list[dict],
    port: int,
    *args: str,
    workers: int | None = None,
    access_log: bool = False,
    echo: EchoServer | None = None,
):
    """A started Gateway on ``docs`` with ``.base`` (its URL on ``port``), ``.echo`` and,
    with ``access_log``, ``.access_log`` (a JSON-lines file next to its config, which the
    config watcher skips); stopped on exit."""
    gw = Gateway(docs, workers=workers, extra_args=args)
    if access_log:
        gw.access_log = gw.config_dir / "access.log"
        gw.extra_args += ["--access-log", str(gw.access_log)]
    gw.base = f"http://127.0.0.1:{port}"
    gw.echo = echo
    try:
        gw.start()
        yield gw
    finally:
        gw.cleanup()
