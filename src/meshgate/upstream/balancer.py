"""Load-balancing algorithms over a cluster's routable hosts, with Envoy's semantics.

``make_balancer(lb)`` returns one ``Balancer`` per cluster. ``update(hosts)`` is called
when the routable set changes (health, outliers, reloads) and does all the precomputing;
``pick(ctx, exclude)`` is the per-request hot path and only reads what ``update`` built.
``exclude`` is the host the previous try used: a retry goes elsewhere when it can.

- RoundRobin: one cycle of nginx's smooth weighted round robin is precomputed (weights
  reduced by their gcd), so a pick is an index step and weights interleave (5:1:1 gives
  a a b a c a a). Equal weights make that cycle the host list itself. During slow start,
  or when a cycle would be too long, it is Envoy's EDF scheduler instead.
- LeastRequest: equal weights -> power of two choices (two distinct hosts at random, the
  one with fewer active requests). Unequal weights (or slow start) -> Envoy's EDF where a
  host is rescheduled, when picked, with weight / (active_requests + 1) ** 1.0; as in
  Envoy, the other hosts' deadlines reflect their load when they were last picked.
- Random: uniform, weights ignored (as Envoy's random LB).
- ConsistentHash: Maglev, Envoy's table build (offset and skip from two hashes of the
  host address, weights relative to the largest). Unlike Envoy, hosts are sorted by
  address first, so every replica builds the same table whatever order it got the
  endpoints in; the hash is blake2b (64 bits), not xxHash64. Keys: the source IP, a
  header, or a cookie, issued (16 hex digits, ``Set-Cookie: name=value; Max-Age=ttl;
  attributes``) when absent and a TTL is configured. No key: a random host.

Slow start (RoundRobin and LeastRequest): a host younger than the window weighs
``weight * max(0.1, (age / window) ** (1 / 1.0))``. While any host is in its window the
pick reads the clock and refreshes effective weights at most every window / 20.
"""

from __future__ import annotations

import heapq
import math
import random
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING

from meshgate.config.traffic import (
    CONSISTENT_HASH,
    HASH_COOKIE,
    HASH_HEADER,
    HASH_SOURCE_IP,
    LEAST_REQUEST,
    RANDOM,
    ROUND_ROBIN,
    LoadBalancing,
)

if TYPE_CHECKING:
    from meshgate.proxy.context import RequestContext
    from meshgate.upstream.host import Host

# Envoy's slow-start defaults (min_weight_percent, aggression).
SLOW_START_MIN_WEIGHT = 0.1
SLOW_START_AGGRESSION = 1.0
# Effective weights are refreshed this many times per slow-start window.
SLOW_START_REFRESHES = 20
# Bound on (cycle length x hosts), the cost of precomputing a round-robin cycle;
# beyond it (huge, coprime weights) the live EDF is used instead.
MAX_RR_CYCLE_WORK = 1 << 18
# Hash keys (source IPs, header and cookie values) whose Maglev slot is remembered;
# the memo is cleared when full.
KEY_MEMO = 4096


class Balancer(ABC):
    """Chooses a host per request; ``update`` precomputes, ``pick`` is the hot path."""

    __slots__ = ("hosts",)

    def __init__(self) -> None:
        self.hosts: Sequence[Host] = ()

    def update(self, hosts: Sequence[Host]) -> None:
        self.hosts = tuple(hosts)

    @abstractmethod
    def pick(self, ctx: RequestContext | None, exclude: Host | None = None) -> Host:
        """The host for this request; another than ``exclude`` when one exists."""


def make_balancer(lb: LoadBalancing, clock: Callable[[], float] = time.monotonic) -> Balancer:
    kind = lb.kind
    if kind == ROUND_ROBIN:
        return RoundRobinBalancer(lb, clock)
    if kind == LEAST_REQUEST:
        return LeastRequestBalancer(lb, clock)
    if kind == RANDOM:
        return RandomBalancer()
    if kind == CONSISTENT_HASH:
        return MaglevBalancer(lb)
    raise ValueError(f"unknown load balancer type {kind!r}")


# -- weights -------------------------------------------------------------------------


def slow_start_factor(age: float, window: float) -> float:
    """Envoy's slow-start multiplier for a host ``age`` seconds old (1.0 once past)."""
    if age >= window:
        return 1.0
    f = (max(age, 0.001) / window) ** (1.0 / SLOW_START_AGGRESSION)
    return max(SLOW_START_MIN_WEIGHT, f)


class _Weighted(Balancer):
    """Base weights, slow-start bookkeeping and Envoy's EDF scheduler."""

    __slots__ = ("clock", "heap", "refresh_at", "seq", "slow", "uniform", "weights", "window")

    def __init__(self, lb: LoadBalancing, clock: Callable[[], float]) -> None:
        super().__init__()
        self.clock = clock
        self.window = lb.slow_start_window
        self.weights: list[float] = []  # effective weights, slow start applied
        self.uniform = True  # all effective weights equal (and not in slow start)
        self.slow = False  # some host is inside its slow-start window
        self.refresh_at = 0.0
        self.heap: list[tuple[float, int, int]] = []  # (deadline, seq, host index)
        self.seq = 0

    def update(self, hosts: Sequence[Host]) -> None:
        self.hosts = tuple(hosts)
        self._reweigh(self.clock() if self.window > 0 else 0.0)
        self._reschedule()

    def _reweigh(self, now: float) -> None:
        """Effective weights at ``now``; sets ``slow`` and ``uniform``."""
        base = [max(h.weight, 1) for h in self.hosts]
        window = self.window
        slow = False
        if window > 0:
            for i, h in enumerate(self.hosts):
                age = now - h.added_at
                if age < window:
                    slow = True
                    base[i] = base[i] * slow_start_factor(age, window)
        self.slow = slow
        self.refresh_at = now + window / SLOW_START_REFRESHES
        self.weights = [float(w) for w in base]
        self.uniform = not slow and len(set(base)) <= 1

    def _reschedule(self) -> None:
        """A fresh EDF: every host's first deadline is 1 / weight, ties in host order."""
        n = len(self.hosts)
        self.heap = [(1.0 / w, i, i) for i, w in enumerate(self.weights)]
        heapq.heapify(self.heap)
        self.seq = n

    def _refresh_if_due(self) -> None:
        now = self.clock()
        if now >= self.refresh_at:
            was_slow = self.slow
            self._reweigh(now)
            if was_slow and not self.slow:
                self._reschedule()  # leaving slow start may switch to a fast path

    def _edf_pick(self, exclude: Host | None, loaded: bool) -> Host:
        """Pop the earliest deadline; reschedule it by its current weight (divided by
        its active requests + 1 when ``loaded``, as Envoy's least request)."""
        heap = self.heap
        hosts = self.hosts
        held = None
        if exclude is not None and len(heap) > 1 and hosts[heap[0][2]] is exclude:
            held = heapq.heappop(heap)  # set aside; it keeps its deadline
        deadline, _, i = heap[0]
        host = hosts[i]
        w = self.weights[i]
        if loaded:
            w = w / (host.active_requests + 1)
        self.seq += 1
        heapq.heapreplace(heap, (deadline + 1.0 / w, self.seq, i))
        if held is not None:
            heapq.heappush(heap, held)
        return host


# -- round robin ---------------------------------------------------------------------


def smooth_cycle(weights: Sequence[int]) -> list[int]:
    """One cycle of nginx's smooth weighted round robin, as host indices."""
    total = sum(weights)
    current = [0] * len(weights)
    cycle = []
    for _ in range(total):
        best = 0
        for i, w in enumerate(weights):
            current[i] += w
            if current[i] > current[best]:
                best = i
        current[best] -= total
        cycle.append(best)
    return cycle


class RoundRobinBalancer(_Weighted):
    __slots__ = ("cycle", "next")

    def __init__(self, lb: LoadBalancing, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(lb, clock)
        self.cycle: list[Host] = []  # empty: use the EDF
        self.next = random.randrange(1 << 16)  # replicas don't all start on host 0

    def update(self, hosts: Sequence[Host]) -> None:
        super().update(hosts)
        self._build_cycle()

    def _build_cycle(self) -> None:
        self.cycle = []
        if self.slow or not self.hosts:
            return
        base = [max(h.weight, 1) for h in self.hosts]
        g = math.gcd(*base)
        reduced = [w // g for w in base]
        if sum(reduced) * len(reduced) > MAX_RR_CYCLE_WORK:
            return
        hosts = self.hosts
        self.cycle = [hosts[i] for i in smooth_cycle(reduced)]
        self.next %= len(self.cycle)

    def pick(self, ctx: RequestContext | None, exclude: Host | None = None) -> Host:
        if self.slow:
            self._refresh_if_due()
            if not self.slow:
                self._build_cycle()
        cycle = self.cycle
        if not cycle:
            return self._edf_pick(exclude, False)
        n = len(cycle)
        i = self.next
        host = cycle[i]
        i += 1
        if i == n:
            i = 0
        if host is exclude and len(self.hosts) > 1:
            while cycle[i] is exclude:  # a heavy host may hold several slots in a row
                i += 1
                if i == n:
                    i = 0
            host = cycle[i]
            i += 1
            if i == n:
                i = 0
        self.next = i
        return host


# -- least request -------------------------------------------------------------------


class LeastRequestBalancer(_Weighted):
    __slots__ = ("rng",)

    def __init__(
        self,
        lb: LoadBalancing,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(lb, clock)
        self.rng = rng or random.Random()

    def pick(self, ctx: RequestContext | None, exclude: Host | None = None) -> Host:
        if self.slow:
            self._refresh_if_due()
        hosts = self.hosts
        n = len(hosts)
        if n == 1:
            return hosts[0]
        if not self.uniform:
            return self._edf_pick(exclude, True)
        # Power of two choices over two distinct hosts.
        rand = self.rng.random
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        a = hosts[i]
        b = hosts[j]
        if a is exclude:
            return b
        if b is exclude:
            return a
        return b if b.active_requests < a.active_requests else a


# -- random --------------------------------------------------------------------------


class RandomBalancer(Balancer):
    __slots__ = ("rng",)

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__()
        self.rng = rng or random.Random()

    def pick(self, ctx: RequestContext | None, exclude: Host | None = None) -> Host:
        return _random_host(self.hosts, self.rng, exclude)


def _random_host(hosts: Sequence[Host], rng: random.Random, exclude: Host | None) -> Host:
    n = len(hosts)
    i = int(rng.random() * n)
    host = hosts[i]
    if host is exclude and n > 1:
        j = int(rng.random() * (n - 1))
        host = hosts[j + 1 if j >= i else j]
    return host


# -- consistent hash (Maglev) --------------------------------------------------------


def hash64(key: str) -> int:
    """A stable 64-bit hash of a request's key (the same in every process and on every
    replica, unlike ``hash()``)."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little")


def _address_hash(address: str, person: bytes) -> int:
    # Two independent hashes of one address (Envoy: xxHash64 with seeds 0 and 1).
    return int.from_bytes(
        blake2b(address.encode(), digest_size=8, person=person).digest(), "little"
    )


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    for d in range(2, math.isqrt(n) + 1):
        if n % d == 0:
            return False
    return True


def maglev_table(hosts: Sequence[Host], size: int) -> list[Host]:
    """Envoy's Maglev table: each host walks its own permutation of the slots
    (offset + i * skip, from two hashes of its address) and takes the next free slot
    in turn; a host of weight w takes a turn in round r only when r * w reaches its
    target, which grows by the largest weight per turn (so the heaviest host takes
    every round, one of a third its weight every third)."""
    entries = sorted(hosts, key=lambda h: h.address)  # the same table whatever the order
    n = len(entries)
    pos = []
    skip = []
    for h in entries:
        pos.append(_address_hash(h.address, b"maglev-offset") % size)
        skip.append(_address_hash(h.address, b"maglev-skip") % (size - 1) + 1)
    weight = [max(h.weight, 1) for h in entries]
    top = max(weight)
    weighted = min(weight) != top
    target = [0] * n
    table: list[Host | None] = [None] * size
    filled = 0
    rnd = 1
    while True:
        for k in range(n):
            if weighted:
                if rnd * weight[k] < target[k]:
                    continue
                target[k] += top
            c = pos[k]
            s = skip[k]
            while table[c] is not None:
                c += s
                if c >= size:
                    c -= size
            table[c] = entries[k]
            c += s
            if c >= size:
                c -= size
            pos[k] = c
            filled += 1
            if filled == size:
                return table  # type: ignore[return-value]
        rnd += 1


class MaglevBalancer(Balancer):
    __slots__ = ("built_weights", "cookie_suffix", "key_slots", "lb", "rng", "size", "table")

    def __init__(self, lb: LoadBalancing, rng: random.Random | None = None) -> None:
        super().__init__()
        if not is_prime(lb.table_size):
            raise ValueError(f"maglev table size {lb.table_size} is not a prime")
        self.lb = lb
        self.size = lb.table_size
        self.table: list[Host] = []
        self.built_weights: tuple[int, ...] = ()
        self.key_slots: dict[str, int] = {}  # hash key -> table slot
        self.rng = rng or random.Random()
        # "; Max-Age=60; Path=/; HttpOnly", built once.
        parts = []
        ttl = lb.cookie_ttl
        if ttl:
            parts.append(f"Max-Age={int(ttl)}")
        for name, value in lb.cookie_attributes:
            parts.append(f"{name}={value}" if value else name)
        self.cookie_suffix = "".join("; " + p for p in parts)

    def update(self, hosts: Sequence[Host]) -> None:
        hosts = tuple(hosts)
        weights = tuple(h.weight for h in hosts)
        if hosts == self.hosts and weights == self.built_weights:
            return  # the same Host objects with the same weights: the table stands
        self.hosts = hosts
        self.built_weights = weights
        # One host needs no table; every key maps to it.
        self.table = maglev_table(self.hosts, self.size) if len(self.hosts) > 1 else []

    def pick(self, ctx: RequestContext | None, exclude: Host | None = None) -> Host:
        slot = self._slot(ctx) if ctx is not None else -1
        table = self.table
        if not table:
            return self.hosts[0]
        if slot < 0:  # no key: Envoy falls back to a random host
            return _random_host(self.hosts, self.rng, exclude)
        host = table[slot]
        if host is exclude:
            size = self.size
            while host is exclude:  # every host holds a slot, so this ends
                slot += 1
                if slot == size:
                    slot = 0
                host = table[slot]
        return host

    def _slot(self, ctx: RequestContext) -> int:
        """The table slot for this request's key, or -1 when it has none."""
        lb = self.lb
        on = lb.hash_on
        if on == HASH_SOURCE_IP:
            key = ctx.client_ip
        elif on == HASH_HEADER:
            key = ctx.headers.get(lb.hash_header) if lb.hash_header else None
        elif on == HASH_COOKIE:
            key = cookie_value(ctx, lb.cookie_name) if lb.cookie_name else None
            if key is None:
                return self._issue_cookie(ctx)
        else:
            return -1
        if key is None:
            return -1
        # Clients repeat their keys; remembering the slot saves hashing them again.
        slots = self.key_slots
        slot = slots.get(key)
        if slot is None:
            if len(slots) >= KEY_MEMO:
                slots.clear()
            slot = slots[key] = hash64(key) % self.size
        return slot

    def _issue_cookie(self, ctx: RequestContext) -> int:
        """No cookie yet: with a TTL configured, make one up, route on it and send it
        back (Set-Cookie) so the client's next requests stick; without, no key."""
        lb = self.lb
        if lb.cookie_ttl is None:
            return -1
        value = secrets.token_hex(8)  # 16 hex digits, a 64-bit value like Envoy's
        added = ctx.response_headers_to_add
        if added is None:
            added = ctx.response_headers_to_add = []
        added.append(("set-cookie", f"{lb.cookie_name}={value}{self.cookie_suffix}"))
        return hash64(value) % self.size


def cookie_value(ctx: RequestContext, name: str) -> str | None:
    """The value of cookie ``name`` in the request's Cookie field(s), unquoted."""
    for n, v in ctx.headers.items():
        if n != "cookie" or name not in v:
            continue
        for part in v.split(";"):
            key, sep, value = part.partition("=")
            if sep and key.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                    value = value[1:-1]
                return value
    return None
