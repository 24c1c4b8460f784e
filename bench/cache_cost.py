"""What a CachePolicy costs, and saves, per request.

    .venv/bin/python bench/cache_cost.py [--duration 10] [--connections 50] [--rounds 3]

End to end, as bench/run.py measures (requests per proxy CPU-second; the proxy on its
own CPU, wrk and the upstream on the others): a `meshgate gateway` with one route and
no policy, then with a CachePolicy (memory store, defaultTTL 60s) on the route, wrk
asking for the same URL, so every request after the first is a hit answered by the
gateway without an upstream request.

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from peers import find_wrk, free_port, pin_cpus
from policy_cost import add_options, measure_gateway, print_relative, report
from upstream import start_upstream

CASES = {
    "no policy": None,
    "cache hit (memory store)": ("CachePolicy", "bench-cache", {"defaultTTL": "60s"}),
}


def end_to_end(args: argparse.Namespace) -> list[tuple[str, float, float, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="meshgate-cache-bench-"))
    pin_cpus()
    up_port = free_port()
    upstream, _ = start_upstream(tmp / "upstream", up_port)
    best: dict[str, tuple[str, float, float, int]] = {}
    try:
        for round_ in range(args.rounds):
            for i, (name, policy) in enumerate(CASES.items()):
                workdir = tmp / f"mg-{round_}-{i}"
                workdir.mkdir()
                res, cpu = measure_gateway(workdir, up_port, policy, args)
                row = report(name, res, cpu, 26)
                if name not in best or row[1] > best[name][1]:
                    best[name] = row
    finally:
        upstream.stop()
    return [best[name] for name in CASES if name in best]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap)
    ap.add_argument("--rounds", type=int, default=3, help="run every case this often; keep the best")
    args = ap.parse_args()
    if args.skip_e2e or not find_wrk():
        print("wrk not found (bench/install-peers.sh installs it)")
        return 0
    print(f"end to end (wrk -t1 -c{args.connections} -d{args.duration}s, meshgate 1 worker on its own CPU):")
    rows = end_to_end(args)
    print_relative(rows, 26)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
