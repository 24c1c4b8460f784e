"""`meshgate top` against a real gateway carrying a known load: the figures it prints
are the traffic's, it fails clearly when the admin listener is not there, and Ctrl-C
ends the live view cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import httpx
import pytest
from harness import Gateway, free_port, meshgate_command, simple_config, wait_until

RATE = 40.0  # requests per second the load sends
ENV = {**os.environ, "COLUMNS": "200"}  # a wide table: no cell is folded


class PacedLoad(threading.Thread):
    """GETs `url` at `rate` per second (never faster: a late request does not make
    the next one early) until stopped, for at most `max_seconds`."""

    def __init__(self, url: str, rate: float, max_seconds: float = 15.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.period = 1.0 / rate
        self.max_seconds = max_seconds
        self.limit = int(rate * max_seconds)
        self.statuses: list[object] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        deadline = next_at + self.max_seconds
        with httpx.Client(timeout=5) as client:
            for _ in range(self.limit):
                if self.stopping.wait(max(0.0, next_at - time.monotonic())):
                    break
                if time.monotonic() > deadline:
                    break
                try:
                    self.statuses.append(client.get(self.url).status_code)
                except httpx.HTTPError as exc:
                    self.statuses.append(repr(exc))
                next_at = max(next_at + self.period, time.monotonic())


def top_command(gw: Gateway, *args: str) -> list[str]:
    return [*meshgate_command(), "top", "--admin", f"http://127.0.0.1:{gw.admin_port}", *args]


def table_row(output: str, route: str) -> list[str]:
    """The cells of the table row for `route` (box drawing or ASCII borders)."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line)[1:-1]]
        if cells and cells[0] == route:
            return cells
    raise AssertionError(f"no row for {route!r} in:\n{output}")


@pytest.fixture
def gateway_under_load(echo):
    port = free_port()
    with Gateway(simple_config(port, {"/": echo})) as gw:
        load = PacedLoad(gw.url(port, "/top"), RATE)
        load.start()
        try:
            wait_until(lambda: len(load.statuses) >= 5, 10, what="load to start")
            yield gw, load
        finally:
            load.stopping.set()
            load.join(10)


def test_once_shows_the_route_with_its_rate_and_full_success(gateway_under_load) -> None:
    gw, load = gateway_under_load
    started = time.monotonic()
    result = subprocess.run(
        top_command(gw, "--once", "--interval", "2"), capture_output=True, text=True, timeout=30, env=ENV, check=False
    )
    took = time.monotonic() - started
    load.stopping.set()
    load.join(10)

    assert result.returncode == 0, result.stderr
    assert 2.0 <= took < 20
    _, rps, success, p50, p99, total = table_row(result.stdout, "default/route")
    assert 0.5 * RATE <= float(rps) <= 1.2 * RATE, result.stdout
    assert success == "100.00%"
    assert 0 < float(p50) <= float(p99) < 1000  # ms, from the window's own requests
    assert 2 * 0.5 * RATE <= int(total) <= len(load.statuses)
    assert set(load.statuses) == {200}


def test_unreachable_admin_is_a_clear_error() -> None:
    port = free_port()
    result = subprocess.run(
        [*meshgate_command(), "top", "--admin", f"http://127.0.0.1:{port}", "--once", "--interval", "0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        check=False,
    )
    assert result.returncode == 1
    assert f"cannot reach http://127.0.0.1:{port}/metrics" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_ctrl_c_ends_the_live_view_with_status_0(gateway_under_load) -> None:
    gw, _ = gateway_under_load
    proc = subprocess.Popen(
        top_command(gw, "--interval", "0.5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    )
    try:
        time.sleep(2.0)  # a live view has no readiness signal: let a few windows pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert "Aborted" not in err and "Traceback" not in err
    # Not a terminal: the live view prints its last table when it stops.
    _, rps, success, *_ = table_row(out, "default/route")
    assert float(rps) > 0 and success == "100.00%"
