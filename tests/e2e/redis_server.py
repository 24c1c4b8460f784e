"""A real Redis (the Debian `redis-server` package's binary) for the tests.

It runs with no config file and no persistence, in a temp dir, on 127.0.0.1 and a
port chosen at run time (never :6379, which a packaged service may hold). `kill()`
stops it hard (SIGKILL: an outage, as a crash looks to clients) and `start()` brings
it back on the same port, empty. Only the process started here is ever signalled.
`.ci/run` installs the package. Standard library only, so unit tests can use it too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
LOCALHOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, port: int | None = None, ready_timeout: float = 10.0) -> None:
        self.port = port or 0
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="meshgate-redis-"))
        self.log_path = self._dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            REDIS_BIN,
            "--port", str(self.port),
            "--bind", LOCALHOST,
            "--dir", str(self._dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "no",
        ]

    def start(self) -> RedisServer:
        if not os.path.exists(REDIS_BIN):
            raise AssertionError(
                f"{REDIS_BIN} not found: these tests need the Debian package `redis-server`, "
                "which .ci/run installs (apt-get install redis-server)"
            )
        keep_port = bool(self.port)
        for attempt in range(3):
            if not keep_port:
                self.port = _free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=self._dir,
                )
            deadline = time.monotonic() + self.ready_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if _ping(self.port):
                    return self
                time.sleep(0.02)
            self._stop_process(signal.SIGKILL)
            if attempt == 2 or "in use" not in self.log_text():
                break
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.log_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL, as a crash: clients see their connections reset."""
        self._stop_process(signal.SIGKILL)

    def _stop_process(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def stop(self) -> None:
        self._stop_process(signal.SIGTERM)
        shutil.rmtree(self._dir, ignore_errors=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
