"""A real Prometheus server (the Debian `prometheus` package's binary) for the e2e tests.

It runs with its own config and TSDB in a temp dir, listens on a port chosen at run
time (never :9090, which a packaged service may hold), scrapes the given targets every
second, and is stopped as the one process we started. `.ci/run` installs the package.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import yaml
from harness import LOCALHOST, _terminate, free_port

PROMETHEUS_BIN = Path("/usr/bin/prometheus")


class PrometheusServer:
    """`prometheus` scraping `targets` ("host:port") at `metrics_path` as job `job`."""

    def __init__(
        self,
        targets: list[str],
        job: str = "meshgate",
        metrics_path: str = "/metrics",
        scrape_interval: str = "1s",
        ready_timeout: float = 30.0,
    ) -> None:
        self.targets = list(targets)
        self.job = job
        self.metrics_path = metrics_path
        self.scrape_interval = scrape_interval
        self.ready_timeout = ready_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="meshgate-prometheus-"))
        self.config_path = self._dir / "prometheus.yml"
        self.log_path = self._dir / "prometheus.log"

    # -- lifecycle
    def config(self) -> dict:
        interval = self.scrape_interval
        return {
            "global": {
                "scrape_interval": interval,
                # Must not exceed the interval; Prometheus refuses such a config.
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }

    def command(self) -> list[str]:
        return [
            str(PROMETHEUS_BIN),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self._dir / 'data'}",
            f"--web.listen-address={LOCALHOST}:{self.port}",
            "--log.level=warn",
        ]

    def start(self) -> PrometheusServer:
        if not PROMETHEUS_BIN.exists():
            self.stop()
            raise AssertionError(
                f"{PROMETHEUS_BIN} not found: the Prometheus e2e test needs the Debian package "
                "`prometheus`, which .ci/run installs (apt-get install prometheus)"
            )
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        # free_port() releases the port before prometheus binds it; if something took it
        # in between, try again on another one.
        for attempt in range(3):
            self.port = free_port()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    self.command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=self._dir,
                )
            try:
                self.wait_ready(self.ready_timeout)
                return self
            except RuntimeError:
                lost_port = "address already in use" in self.log_text()
                self._stop_process()
                if not lost_port or attempt == 2:
                    self.stop()
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self.proc.returncode} before /-/ready:\n{self.log_text()[-4000:]}"
                )
            try:
                if httpx.get(self.url("/-/ready"), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)

    def _stop_process(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, 10)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM the prometheus we started, wait, SIGKILL it if it hangs; drop its files."""
        self._stop_process()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP API
    def url(self, path: str) -> str:
        return f"http://{LOCALHOST}:{self.port}{path}"

    def api(self, path: str, **params) -> dict:
        resp = httpx.get(self.url(f"/api/v1/{path}"), params=params, timeout=5)
        body = resp.json()
        assert body.get("status") == "success", f"{path} {params}: HTTP {resp.status_code} {body}"
        return body["data"]

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query's vector as {sorted label pairs: value}."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in data["result"]}

    def wait_for_query(
        self,
        expr: str,
        expected: Iterable[tuple[dict[str, str], float]],
        timeout: float = 30.0,
        interval: float = 0.2,
    ) -> dict:
        """Poll `expr` until its vector is exactly `expected`: (labels, value) pairs."""
        want = {tuple(sorted(labels.items())): float(v) for labels, v in expected}
        deadline = time.monotonic() + timeout
        got: dict = {}
        while True:
            got = self.query(expr)
            if got == want:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"after {timeout}s, {expr!r} gives {_readable(got)}, want {_readable(want)}\n"
                    f"targets: {self.target_health()}"
                )
            time.sleep(interval)

    def target_health(self) -> list[dict]:
        """Each active target's scrape URL, health and last error: what to show on failure."""
        active = self.api("targets", state="active")["activeTargets"]
        return [{k: t.get(k) for k in ("scrapeUrl", "health", "lastError")} for t in active]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _readable(vector: dict) -> list[str]:
    return [
        "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "} " + f"{value:g}"
        for labels, value in sorted(vector.items())
    ]
