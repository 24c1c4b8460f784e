"""Rate limiting without the proxy: compiled rules and their selectors (``rules``),
token buckets (``bucket``) and the Redis counters of global limits
(``redis_counters``). The filters that use them are in ``meshgate.filters.ratelimit``.
"""
