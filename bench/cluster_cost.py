"""What the cluster layer adds per request: circuit-breaker accounting, retry-budget
deposit, host pick and outlier bookkeeping, outside any I/O.

    .venv/bin/python bench/cluster_cost.py
"""

import asyncio
import timeit

from meshgate.config.snapshot import Cluster, Endpoint, Limits
from meshgate.config.traffic import ClusterPolicy, OutlierDetection
from meshgate.upstream.cluster import ClusterRuntime


async def main():
    for label, pol, n in (("1 host, no outlier", ClusterPolicy(), 1), ("3 hosts LeastRequest + outlier", ClusterPolicy(outlier=OutlierDetection()), 3)):
        c = ClusterRuntime(Cluster("c", tuple(Endpoint("127.0.0.1", 9000+i) for i in range(n)), policy=pol), Limits())
        h = c.hosts[0]
        def req():
            c.begin_request(); host = c.pick(None)
            host.rq_total += 1
            if host.detector is not None: host.detector.on_response(host, 200)
            c.end_request()
        t = min(timeit.repeat(req, number=100000, repeat=5)) / 100000
        print(f"{label}: {t*1e6:.2f} us per request")
asyncio.run(main())
