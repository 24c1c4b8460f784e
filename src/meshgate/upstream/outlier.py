"""Passive health checking: Envoy's consecutive-error outlier detection for one cluster.

The request path reports every upstream answer (``on_response``) and every
local-origin event (``on_local_failure`` / ``on_local_success``: connect failure,
reset, timeout / connection made); the detector keeps the per-host consecutive
counters on ``Host`` and ejects a host the moment one reaches its threshold. The
owner calls ``sweep()`` every ``interval`` to bring hosts back and to decay their
ejection multiplier. Success-rate and failure-percentage detection are not
implemented.

Envoy rules followed (config.cluster.v3.OutlierDetection, arch_overview/outlier,
``outlier_detection_impl.cc``):

- a 5xx counts toward ``consecutive_5xx``, a 502/503/504 also toward
  ``consecutive_gateway_errors``; any non-5xx answer resets both. A threshold of 0
  disables that detector.
- ``split_external_local_origin_errors`` off: a local-origin failure is a 503 (so it
  counts toward both); a successful connect says nothing about the HTTP outcome
  and changes no counter. On: local-origin failures count only toward
  ``consecutive_local_origin_failures``, which a successful connect resets.
- an ejection is refused when it would make more than ``max_ejection_percent`` of
  the cluster's hosts ejected (Envoy >= 1.27 checks the percentage *after* the
  ejection). "At least one host regardless of the percentage" is Envoy's opt-in
  ``always_eject_one_host`` (1.31, default off); it applies only while no host is
  ejected. Whether or not the ejection happened, the counter that triggered it
  restarts, so an overflowed host is tried again after another full streak.
- ejection time = ``base_ejection_time * multiplier``, capped at
  ``max(base_ejection_time, max_ejection_time)``; the multiplier (``Host.ejections``)
  grows on each ejection until the cap is reached and shrinks by one at every
  sweep the host spends un-ejected. Un-ejection happens at a sweep, so a host is out
  for its ejection time rounded up to the interval, and its counters restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshgate.config.traffic import OutlierDetection
    from meshgate.upstream.host import Host


class OutlierDetector:
    def __init__(
        self,
        cfg: OutlierDetection,
        hosts: Callable[[], Sequence[Host]],
        on_change: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        *,
        always_eject_one_host: bool = False,
    ) -> None:
        self.cfg = cfg
        self._hosts = hosts
        self._on_change = on_change
        self._clock = clock
        self._always_eject_one = always_eject_one_host
        # Thresholds, read once: on_response runs per request.
        self._max_5xx = cfg.consecutive_5xx
        self._max_gateway = cfg.consecutive_gateway_errors
        self._max_local = cfg.consecutive_local_origin_failures
        self._split = cfg.split_external_local_origin_errors
        self._base = cfg.base_ejection_time
        self._cap = max(cfg.base_ejection_time, cfg.max_ejection_time)
        self._max_percent = cfg.max_ejection_percent
        # Counters for /metrics.
        self.ejections_total = 0  # ejections performed
        self.ejections_overflow = 0  # ejections refused by max_ejection_percent

    def __repr__(self) -> str:
        ejected = sum(1 for h in self._hosts() if h.ejected)
        return f"<OutlierDetector ejected={ejected} total={self.ejections_total} overflow={self.ejections_overflow}>"

    # -- events from the request path (hot) ------------------------------------------

    def on_response(self, host: Host, status: int) -> None:
        """The upstream answered with ``status``."""
        if status < 500:
            host.consecutive_5xx = 0
            host.consecutive_gateway = 0
            return
        if 502 <= status <= 504:
            n = host.consecutive_gateway + 1
            host.consecutive_gateway = n
            if n == self._max_gateway:  # 0 never matches: detector off
                self._outlier(host)
                host.consecutive_gateway = 0
        else:
            host.consecutive_gateway = 0
        n = host.consecutive_5xx + 1
        host.consecutive_5xx = n
        if n == self._max_5xx:
            self._outlier(host)
            host.consecutive_5xx = 0

    def on_local_failure(self, host: Host) -> None:
        """Connect failure, reset or timeout before an answer (local origin)."""
        if not self._split:
            self.on_response(host, 503)  # Envoy's mapping when the origins are not split
            return
        n = host.consecutive_local + 1
        host.consecutive_local = n
        if n == self._max_local:
            self._outlier(host)
            host.consecutive_local = 0

    def on_local_success(self, host: Host) -> None:
        """The connection was made / the request went out."""
        if self._split:
            host.consecutive_local = 0

    # -- ejection bookkeeping --------------------------------------------------------

    def _outlier(self, host: Host) -> None:
        """A threshold was reached: eject ``host`` unless the percentage forbids it."""
        if host.ejected:
            return
        hosts = self._hosts()
        total = len(hosts) or 1
        ejected = sum(1 for h in hosts if h.ejected)
        allowed = (ejected + 1) * 100.0 <= self._max_percent * total or (
            self._always_eject_one and ejected == 0
        )
        if not allowed:
            self.ejections_overflow += 1
            return
        base = self._base
        if host.ejections * base < self._cap:  # stop growing once the cap is reached
            host.ejections += 1
        now = self._clock()
        host.ejected = True
        host.ejected_at = now
        host.ejected_until = now + min(base * host.ejections, self._cap)
        self.ejections_total += 1
        self._on_change()

    def sweep(self) -> None:
        """Every ``interval``: return hosts whose time is up; decay the multiplier of
        hosts that stayed in service."""
        now = self._clock()
        changed = False
        for host in self._hosts():
            if host.ejected:
                if host.ejected_until <= now:
                    host.ejected = False
                    # Fresh counters: a host that was one error short of a threshold
                    # must not be ejected again by a single error.
                    host.consecutive_5xx = 0
                    host.consecutive_gateway = 0
                    host.consecutive_local = 0
                    changed = True
            elif host.ejections > 0:
                host.ejections -= 1
        if changed:
            self._on_change()

    # -- views -----------------------------------------------------------------------

    def describe(self, host: Host) -> dict[str, Any]:
        return {
            "ejected": host.ejected,
            "ejected_until": round(max(0.0, host.ejected_until - self._clock()), 3) if host.ejected else 0.0,
            "ejections": host.ejections,
            "consecutive_5xx": host.consecutive_5xx,
            "consecutive_gateway_errors": host.consecutive_gateway,
            "consecutive_local_origin_failures": host.consecutive_local,
        }
