"""Plans compiled once per config, and which Consumer takes which.

``PlanIndex`` compiles every Plan of a compile (route costs checked against the
HTTPRoutes, errors with their field paths) and hands out one ``PlanBook`` per
namespace: the Consumers of that namespace that take a plan, each with its counter
names worked out once (``ConsumerPlan``), so a request pays for a dict lookup and the
period arithmetic only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshgate.plans.counters import KEY_PREFIX
from meshgate.plans.periods import Period

if TYPE_CHECKING:
    from meshgate.config.compile.inputs import ErrorSink, Inputs
    from meshgate.config.loader import LoadedResource

KIND = "Plan"

# One Period per name, shared: a Month caches its bounds.
PERIODS = {name: Period(name) for name in ("Second", "Minute", "Hour", "Day", "Month")}


@dataclass(frozen=True, slots=True)
class CompiledPlan:
    key: str  # "namespace/name"
    windows: tuple[tuple[Period, int], ...]  # rate limits: (unit, requests)
    quotas: tuple[tuple[Period, int], ...]  # (period, cost units)
    # (route "ns/name", rule name or None for every rule) -> cost
    route_costs: dict[tuple[str, str | None], int]
    # X-RateLimit-Limit of each window, as the rate-limit filters write it
    window_headers: tuple[str, ...] = ()

    def cost(self, route: str, rule: str | None) -> int:
        """What a request to ``route`` (rule named ``rule``) takes from the quotas."""
        costs = self.route_costs
        if not costs:
            return 1
        if rule is not None:
            found = costs.get((route, rule))
            if found is not None:
                return found
        return costs.get((route, None), 1)

    def describe(self) -> dict[str, Any]:
        return {
            "rateLimits": [{"requests": n, "unit": p.name} for p, n in self.windows],
            "quotas": [{"requests": n, "period": p.name} for p, n in self.quotas],
            "routeCosts": [
                {"route": r, "rule": rule, "cost": c} for (r, rule), c in sorted(
                    self.route_costs.items(), key=lambda i: (i[0][0], i[0][1] or "")
                )
            ],
        }


@dataclass(frozen=True, slots=True)
class ConsumerPlan:
    """A Consumer's plan with the names of its counters (without the period start)."""

    consumer: str  # "namespace/name"
    plan: CompiledPlan
    window_keys: tuple[str, ...]  # one per plan.windows
    quota_keys: tuple[str, ...]  # one per plan.quotas


class PlanBook:
    """The Consumers with a plan in one namespace. Also a (do-nothing) service of the
    filter that uses it, so the admin API finds the active books in the snapshot."""

    def __init__(self, namespace: str, consumers: dict[str, ConsumerPlan], plans: dict[str, CompiledPlan]) -> None:
        self.namespace = namespace
        self.consumers = consumers  # Consumer name -> its plan
        self.plans = plans  # Plan name -> compiled

    async def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "plans": {p.key: p.describe() for p in self.plans.values()},
            "consumers": {c.consumer: c.plan.key for c in self.consumers.values()},
        }


class PlanIndex:
    """Every Plan of a compile; one book per namespace that has Plans."""

    def __init__(self, inputs: Inputs, errors: ErrorSink, consumers: Any) -> None:
        self.inputs = inputs
        self.errors = errors
        self.consumers = consumers  # filters.security.consumers.ConsumerIndex
        self.plans: dict[tuple[str, str], CompiledPlan] = {}
        for res in inputs.of_kind(KIND):
            self.plans[(res.namespace, res.name)] = self._compile(res)
        self._books: dict[str, PlanBook | None] = {}
        self._filters: dict[str, Any] = {}

    def _compile(self, res: LoadedResource) -> CompiledPlan:
        spec = res.obj.spec
        costs: dict[tuple[str, str | None], int] = {}
        for i, entry in enumerate(spec.routeCosts):
            ns, _, name = entry.route.rpartition("/")
            ns = ns or res.namespace
            route = self.inputs.get("HTTPRoute", ns, name)
            path = ("spec", "routeCosts", i)
            if route is None:
                self.errors.add(res, (*path, "route"), f"HTTPRoute {ns}/{name} not found")
                continue
            if entry.rule is not None:
                names = {getattr(r, "name", None) for r in route.obj.spec.rules or ()}
                if entry.rule not in names:
                    self.errors.add(
                        res, (*path, "rule"), f"HTTPRoute {ns}/{name} has no rule named {entry.rule!r}"
                    )
                    continue
            costs[(f"{ns}/{name}", entry.rule)] = entry.cost
        windows = tuple((PERIODS[r.unit], r.requests) for r in spec.rateLimits)
        return CompiledPlan(
            key=f"{res.namespace}/{res.name}",
            windows=windows,
            window_headers=tuple(f"{n}, {n};w={p.seconds}" for p, n in windows),
            quotas=tuple((PERIODS[q.period], q.requests) for q in spec.quotas),
            route_costs=costs,
        )

    def book(self, namespace: str) -> PlanBook | None:
        """The book of ``namespace``, or None when it has no Plans (nothing to enforce
        or count there)."""
        if namespace in self._books:
            return self._books[namespace]
        plans = {name: p for (ns, name), p in self.plans.items() if ns == namespace}
        book = None
        if plans:
            consumers = {}
            for consumer, plan_name in self.consumers.with_plans(namespace).items():
                plan = plans.get(plan_name)
                if plan is None:
                    continue  # reported on the Consumer (spec.plan.name)
                head = f"{KEY_PREFIX}{namespace}/{consumer}:"
                consumers[consumer] = ConsumerPlan(
                    consumer=f"{namespace}/{consumer}",
                    plan=plan,
                    window_keys=tuple(f"{head}rl:{p.name}:" for p, _ in plan.windows),
                    quota_keys=tuple(f"{head}quota:{p.name}:" for p, _ in plan.quotas),
                )
            book = PlanBook(namespace, consumers, plans)
        self._books[namespace] = book
        return book

    def filter_for(self, namespace: str) -> Any:
        """The plans filter of ``namespace`` (one per compile), or None without Plans."""
        if namespace not in self._filters:
            book = self.book(namespace)
            if book is None:
                self._filters[namespace] = None
            else:
                from meshgate.filters.plans import plan_filter

                self._filters[namespace] = plan_filter(book)
        return self._filters[namespace]

    def dump(self) -> dict[str, Any]:
        return {plan.key: plan.describe() for plan in self.plans.values()}
