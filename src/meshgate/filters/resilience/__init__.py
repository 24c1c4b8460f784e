"""Resilience filters: what Envoy Gateway's BackendTrafficPolicy adds to a route's
filter chain (fault injection).

Built once per snapshot by the config compiler from a compiled ``config.traffic``
setting, then called per request.
"""

from meshgate.filters.resilience.fault import FaultAbort, FaultDelay, fault_filters

__all__ = ["FaultAbort", "FaultDelay", "fault_filters"]
