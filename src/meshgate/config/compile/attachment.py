"""Policy attachment, as Envoy Gateway defines it for its policy kinds
(BackendTrafficPolicy, SecurityPolicy, ClientTrafficPolicy) and meshgate's own.

A policy applies to targets in its own namespace only. For a route rule served on a
listener, the most specific policy wins, whole (no merging): HTTPRoute with
sectionName == the rule's name, then the HTTPRoute, then the Gateway with sectionName
== the listener's name, then the Gateway. When several policies target the same
thing, the oldest (``metadata.creationTimestamp``; none = newest) wins, then
``namespace/name`` alphabetically; the others are Conflicted for that target. Each
policy's status per target (like ``status.ancestors``) goes to /config_dump.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshgate.config.compile.inputs import Inputs

if TYPE_CHECKING:
    from meshgate.config.loader import LoadedResource

# Policy condition reasons (Gateway API PolicyConditionReason).
ACCEPTED = "Accepted"
CONFLICTED = "Conflicted"
TARGET_NOT_FOUND = "TargetNotFound"

# Target precedence, most specific first.
ROUTE_RULE, ROUTE, LISTENER, GATEWAY = range(4)


def _condition(reason: str, message: str = "") -> dict[str, str]:
    return {
        "type": "Accepted",
        "status": "True" if reason == ACCEPTED else "False",
        "reason": reason,
        "message": message,
    }


@dataclass(slots=True)
class _Holder:
    policy: Any  # the compiled policy
    overrides: set[str] = field(default_factory=set)  # routes where a more specific one won


class PolicyIndex(ABC):
    """Every policy of one kind in a compile, attached to its targets.

    ``for_rule`` answers which policy applies to a rule served on a listener; ``dump``
    is the status of each policy (per target, like ``status.ancestors``) for
    /config_dump.
    """

    kind = ""  # the policy kind, set by subclasses

    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        self._slots: dict[tuple[int, str, str, str | None], _Holder] = {}
        self._status: dict[str, dict[str, Any]] = {}
        policies = sorted(inputs.of_kind(self.kind), key=lambda r: (r.age_key, r.namespace, r.name))
        for res in policies:
            self._attach(res, inputs)

    @abstractmethod
    def compile(self, key: str, res: LoadedResource) -> Any:
        """The compiled policy (anything with a ``key``); raise to reject the config."""

    def _attach(self, res: LoadedResource, inputs: Inputs) -> None:
        key = f"{res.namespace}/{res.name}"
        compiled = self.compile(key, res)
        holder = _Holder(compiled)
        targets: list[dict[str, Any]] = []
        self._status[key] = {
            "source": {"file": str(res.file), "document": res.document},
            "targets": targets,
        }
        for ref in res.obj.spec.targets():
            entry: dict[str, Any] = {
                "targetRef": {
                    "group": ref.group,
                    "kind": ref.kind,
                    "namespace": res.namespace,
                    "name": ref.name,
                    "sectionName": ref.sectionName,
                }
            }
            targets.append(entry)
            missing = _missing_target(inputs, res.namespace, ref)
            if missing:
                entry["conditions"] = [_condition(TARGET_NOT_FOUND, missing)]
                continue
            if ref.kind == "HTTPRoute":
                level = ROUTE if ref.sectionName is None else ROUTE_RULE
            else:
                level = GATEWAY if ref.sectionName is None else LISTENER
            slot = (level, res.namespace, ref.name, ref.sectionName)
            winner = self._slots.get(slot)
            if winner is not None:
                entry["conditions"] = [
                    _condition(
                        CONFLICTED,
                        f"{self.kind} {winner.policy.key} already targets this {ref.kind}"
                        + (f" section {ref.sectionName}" if ref.sectionName else "")
                        + " (older, or as old and first by namespace/name)",
                    )
                ]
                continue
            self._slots[slot] = holder
            entry["conditions"] = [_condition(ACCEPTED)]
            entry["_holder"] = holder

    def for_rule(
        self, route_ns: str, route: str, rule_name: str | None, gateway: str, listener: str
    ) -> Any:
        """The policy for a rule of ``route_ns/route`` served on ``gateway``'s
        ``listener`` ("ns/name" and listener name), or None."""
        gw_ns, _, gw_name = gateway.partition("/")
        candidates = []
        if rule_name is not None:
            candidates.append(self._slots.get((ROUTE_RULE, route_ns, route, rule_name)))
        candidates.append(self._slots.get((ROUTE, route_ns, route, None)))
        candidates.append(self._slots.get((LISTENER, gw_ns, gw_name, listener)))
        candidates.append(self._slots.get((GATEWAY, gw_ns, gw_name, None)))
        found = [h for h in candidates if h is not None]
        if not found:
            return None
        for shadowed in found[1:]:
            if shadowed is not found[0]:
                shadowed.overrides.add(f"{route_ns}/{route}")
        return found[0].policy

    def for_gateway_listener(self, gateway: str, listener: str) -> Any:
        """The policy for ``gateway``'s ("ns/name") ``listener``, for kinds that attach to
        Gateways only (ClientTrafficPolicy): the listener's own, else the Gateway's."""
        gw_ns, _, gw_name = gateway.partition("/")
        own = self._slots.get((LISTENER, gw_ns, gw_name, listener))
        whole = self._slots.get((GATEWAY, gw_ns, gw_name, None))
        if own is not None and whole is not None and whole is not own:
            whole.overrides.add(f"{gateway}/{listener}")
        found = own or whole
        return found.policy if found is not None else None

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, status in self._status.items():
            targets = []
            for entry in status["targets"]:
                entry = dict(entry)
                holder = entry.pop("_holder", None)
                if holder is not None and holder.overrides:
                    routes = ", ".join(sorted(holder.overrides))
                    entry["conditions"] = entry["conditions"] + [
                        {
                            "type": "Overridden",
                            "status": "True",
                            "reason": "Overridden",
                            "message": f"a more specific {self.kind} applies to: {routes}",
                        }
                    ]
                targets.append(entry)
            out[key] = {"source": status["source"], "targets": targets}
        return dict(sorted(out.items()))


def _missing_target(inputs: Inputs, namespace: str, ref: Any) -> str:
    """Why the target does not exist ("" when it does). Only the policy's namespace is
    searched: Envoy Gateway ignores targets elsewhere."""
    res = inputs.get(ref.kind, namespace, ref.name)
    if res is None:
        return f"{ref.kind} {namespace}/{ref.name} not found"
    if ref.sectionName is None:
        return ""
    if ref.kind == "Gateway":
        names = [lst.name for lst in res.obj.spec.listeners or ()]
        what = "listener"
    else:
        names = [rule.name for rule in res.obj.spec.rules or () if rule.name]
        what = "rule"
    if ref.sectionName not in names:
        return f"{ref.kind} {namespace}/{ref.name} has no {what} named {ref.sectionName}"
    return ""
