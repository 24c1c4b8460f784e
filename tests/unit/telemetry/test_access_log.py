"""Access log lines: fields, formats, sampling that never hides a failure."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from meshgate.config.snapshot import Endpoint
from meshgate.http.headers import Headers
from meshgate.proxy.context import RequestContext
from meshgate.telemetry.access_log import FIELDS, AccessLog


def exchange(status: int = 200, flag: str = "") -> SimpleNamespace:
    ctx = RequestContext(
        "GET", "/a?b=1", "/a", "b=1", Headers([("host", "h")]), "h", "h", "http", "1.1",
        "10.0.0.1", 5555, 8080, "rid-1", time.monotonic() - 0.005,
    )
    ctx.flag = flag
    return SimpleNamespace(
        ctx=ctx, status=status, body_received=3, bytes_sent=100, upstream_attempts=1,
        upstream=Endpoint("127.0.0.1", 9000),
    )


def lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_json_line_has_every_field(tmp_path):
    log = AccessLog(str(tmp_path / "a.log"))
    log.log_exchange(exchange(), time.monotonic())
    log.close()
    record = json.loads(lines(tmp_path / "a.log")[0])
    assert set(record) == set(FIELDS)
    assert record["status"] == 200 and record["path"] == "/a?b=1"
    assert record["upstream_host"] == "127.0.0.1:9000" and record["duration_ms"] >= 5


def test_fields_select_and_order_the_record(tmp_path):
    log = AccessLog(str(tmp_path / "a.log"), fields=("status", "request_id"))
    log.log_exchange(exchange(), time.monotonic())
    log.close()
    assert lines(tmp_path / "a.log") == ['{"status":200,"request_id":"rid-1"}']


def test_text_format_reads_like_envoys(tmp_path):
    log = AccessLog(str(tmp_path / "a.log"), fmt="text")
    log.log_exchange(exchange(503, "UF"), time.monotonic())
    log.log_rejected("10.0.0.2", 400, "bad request")
    log.close()
    first, second = lines(tmp_path / "a.log")
    assert '"GET /a?b=1 HTTP/1.1" 503 UF 3 100 ' in first and '"127.0.0.1:9000" "rid-1" "h"' in first
    assert " 400 DPE " in second and "10.0.0.2" in second


def test_sampling_drops_successes_but_keeps_every_failure(tmp_path):
    log = AccessLog(str(tmp_path / "a.log"), sample=0.0)
    log.log_exchange(exchange(200), time.monotonic())
    log.log_exchange(exchange(404, "NR"), time.monotonic())
    log.log_exchange(exchange(502, "UC"), time.monotonic())
    log.close()
    assert [json.loads(x)["status"] for x in lines(tmp_path / "a.log")] == [404, 502]


def test_unknown_field_or_format_is_refused():
    with pytest.raises(ValueError, match="supported: start_time"):
        AccessLog("-", fields=("nope",))
    with pytest.raises(ValueError, match="supported: json, text"):
        AccessLog("-", fmt="xml")
