"""Token bucket math under a clock the test sets: bursts, continuous refill, the
figures clients see in X-RateLimit-* and Retry-After, and forgetting idle buckets."""

from __future__ import annotations

from meshgate.ratelimit.bucket import BucketTable, take


def test_a_full_bucket_admits_a_burst_of_the_limit_then_refuses():
    table = BucketTable(requests=5, window=60)
    results = [take(table, table.refill("", 100.0), 1) for _ in range(6)]
    assert [r[0] for r in results] == [True] * 5 + [False]
    assert [r[1] for r in results] == [4, 3, 2, 1, 0, 0]
    # Empty: full again in 60 s; the next token in 12 s (5 per minute).
    allowed, remaining, reset, retry_after = results[-1]
    assert (reset, retry_after) == (60, 12)


def test_tokens_come_back_continuously_at_limit_per_window():
    table = BucketTable(requests=10, window=1)
    for _ in range(10):
        assert take(table, table.refill("", 0.0), 1)[0]
    assert not take(table, table.refill("", 0.05), 1)[0]  # half a token
    assert take(table, table.refill("", 0.1), 1)[0]  # one token per 100 ms
    assert not take(table, table.refill("", 0.1), 1)[0]
    # Never above the limit, however long the bucket idles.
    bucket = table.refill("", 1000.0)
    assert bucket.tokens == 10


def test_a_refused_request_takes_nothing():
    table = BucketTable(requests=2, window=10)
    bucket = table.refill("", 0.0)
    take(table, bucket, 1)
    take(table, bucket, 1)
    for _ in range(5):
        assert not take(table, table.refill("", 0.0), 1)[0]
    assert take(table, table.refill("", 5.0), 1)[0]  # one token after 5 s, not later


def test_cost_takes_several_tokens_and_zero_only_checks():
    table = BucketTable(requests=5, window=60)
    bucket = table.refill("", 0.0)
    assert take(table, bucket, 2)[:2] == (True, 3)
    assert take(table, bucket, 0)[:2] == (True, 3)  # a check costs nothing
    assert take(table, bucket, 2)[:2] == (True, 1)
    assert take(table, bucket, 2)[0] is False  # 1 left, 2 needed
    assert take(table, bucket, 0)[0] is True  # one whole token is still there
    assert take(table, bucket, 1)[:2] == (True, 0)
    assert take(table, bucket, 0)[0] is False


def test_zero_requests_refuses_everything():
    table = BucketTable(requests=0, window=60)
    allowed, remaining, _, retry_after = take(table, table.refill("", 0.0), 1)
    assert (allowed, remaining, retry_after) == (False, 0, 60)


def test_distinct_keys_have_their_own_buckets():
    table = BucketTable(requests=1, window=60)
    assert take(table, table.refill("alice", 0.0), 1)[0]
    assert not take(table, table.refill("alice", 0.0), 1)[0]
    assert take(table, table.refill("bob", 0.0), 1)[0]


def test_buckets_full_again_are_forgotten_when_the_table_grows():
    table = BucketTable(requests=1, window=10, sweep_above=100)
    for i in range(100):
        take(table, table.refill(f"client-{i}", 0.0), 1)
    take(table, table.refill("late", 5.0), 1)  # 5 s later: nobody is full yet
    assert len(table.buckets) == 101
    for i in range(100, 250):  # 20 s later: the first hundred are full again
        take(table, table.refill(f"client-{i}", 20.0), 1)
    assert "client-0" not in table.buckets
    assert "late" in table.buckets or len(table.buckets) <= 151
    assert len(table.buckets) < 250
    # A forgotten bucket comes back full: nothing was lost by forgetting it.
    assert take(table, table.refill("client-0", 20.0), 1)[:2] == (True, 0)
