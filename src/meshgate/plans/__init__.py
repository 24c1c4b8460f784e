"""Plans without the proxy: the periods counters live in (``periods``), the counters
themselves in memory or Redis (``counters``), compiled Plans and which Consumer takes
which (``book``), and per-consumer usage for the admin API (``usage``). The filter that
enforces them is ``meshgate.filters.plans``.
"""
