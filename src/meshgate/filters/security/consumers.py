"""Consumers (meshgate.dev/v1alpha1): who an authenticated request belongs to.

``ConsumerIndex`` is built once per compile from every Consumer and answers, for a
namespace, which Consumer owns an API-key client id, a basic-auth user or a JWT
identity. Builders ask it at compile time (the API-key and basic-auth filters keep the
answer beside each credential, so a request pays nothing for it); the JWT filter asks
``by_claims`` per request, a dict lookup.

A credential claimed by two Consumers of one namespace is a config error: the request
would otherwise belong to whichever Consumer happened to be read first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshgate.config.compile.inputs import ErrorSink, Inputs
    from meshgate.config.loader import LoadedResource

KIND = "Consumer"


class ConsumerIndex:
    def __init__(self, inputs: Inputs, errors: ErrorSink | None = None) -> None:
        self.inputs = inputs
        self._errors = errors
        # (namespace, credential...) -> Consumer name
        self._client_ids: dict[tuple[str, str], str] = {}
        self._users: dict[tuple[str, str], str] = {}
        self._subjects: dict[tuple[str, str, str], str] = {}
        # (namespace, issuer) -> [(claim name, value, Consumer name)], in Consumer order
        self._claims: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        self._claim_keys: dict[tuple[str, str, str, str], str] = {}
        self._labels: dict[tuple[str, str], dict[str, str]] = {}
        self._plans: dict[tuple[str, str], str] = {}  # (namespace, Consumer) -> Plan name
        for res in inputs.of_kind(KIND):
            self._add(res)

    # -- building -------------------------------------------------------------------

    def _claim(self, table: dict, key: tuple, res: LoadedResource, path: tuple, what: str) -> bool:
        owner = table.get(key)
        if owner is None:
            table[key] = res.name
            return True
        if owner != res.name and self._errors is not None:
            self._errors.add(
                res, path, f"{what} is already claimed by Consumer {res.namespace}/{owner}"
            )
        return False

    def _add(self, res: LoadedResource) -> None:
        ns, name, spec = res.namespace, res.name, res.obj.spec
        self._labels[(ns, name)] = dict(res.obj.metadata.labels)
        if spec.plan is not None:
            self._plans[(ns, name)] = spec.plan.name
            if self._errors is not None and self.inputs.get("Plan", ns, spec.plan.name) is None:
                self._errors.add(res, ("spec", "plan", "name"), f"Plan {ns}/{spec.plan.name} not found")
        for i, key in enumerate(spec.apiKeys):
            self._claim(
                self._client_ids, (ns, key.clientID), res, ("spec", "apiKeys", i, "clientID"),
                f"client id {key.clientID!r}",
            )
        for i, user in enumerate(spec.basicAuth):
            self._claim(
                self._users, (ns, user.username), res, ("spec", "basicAuth", i, "username"),
                f"basic-auth user {user.username!r}",
            )
        for i, ident in enumerate(spec.jwt):
            if ident.subject is not None:
                self._claim(
                    self._subjects, (ns, ident.issuer, ident.subject), res,
                    ("spec", "jwt", i, "subject"),
                    f"JWT subject {ident.subject!r} of issuer {ident.issuer!r}",
                )
                continue
            claim = ident.claim
            if self._claim(
                self._claim_keys, (ns, ident.issuer, claim.name, claim.value), res,
                ("spec", "jwt", i, "claim"),
                f"JWT claim {claim.name}={claim.value!r} of issuer {ident.issuer!r}",
            ):
                self._claims.setdefault((ns, ident.issuer), []).append((claim.name, claim.value, name))

    # -- lookups --------------------------------------------------------------------

    def is_consumer(self, namespace: str, name: str) -> bool:
        """Is there a Consumer of this name (so a bare credential must not use it)?"""
        return (namespace, name) in self._labels

    def by_client_id(self, namespace: str, client_id: str) -> str | None:
        """The Consumer (its name) whose API key credential is ``client_id``."""
        return self._client_ids.get((namespace, client_id))

    def by_username(self, namespace: str, username: str) -> str | None:
        """The Consumer (its name) that owns basic-auth user ``username``."""
        return self._users.get((namespace, username))

    def by_claims(self, namespace: str, claims: dict) -> str | None:
        """The Consumer whose JWT identity matches verified ``claims``: issuer + subject
        first, then issuer + claim (Consumers in name order; a list claim matches when it
        contains the value)."""
        issuer = claims.get("iss")
        if not isinstance(issuer, str):
            return None
        subject = claims.get("sub")
        if isinstance(subject, str):
            found = self._subjects.get((namespace, issuer, subject))
            if found is not None:
                return found
        for claim, value, consumer in self._claims.get((namespace, issuer), ()):
            have = claims.get(claim)
            if have is None:
                continue
            if isinstance(have, list):
                if any(_as_text(v) == value for v in have):
                    return consumer
            elif _as_text(have) == value:
                return consumer
        return None

    def labels(self, namespace: str, consumer: str) -> dict[str, str]:
        """The Consumer's ``metadata.labels`` ({} for a bare client id or user)."""
        return self._labels.get((namespace, consumer), {})

    def plan(self, namespace: str, consumer: str) -> str | None:
        """The name of the Plan the Consumer takes (same namespace), if any."""
        return self._plans.get((namespace, consumer))

    def with_plans(self, namespace: str) -> dict[str, str]:
        """Consumer name -> Plan name, for every Consumer of ``namespace`` with a plan."""
        return {c: p for (ns, c), p in self._plans.items() if ns == namespace}

    def describe(self) -> dict[str, Any]:
        return {
            "consumers": len(self._labels),
            "clientIDs": len(self._client_ids),
            "users": len(self._users),
            "jwtIdentities": len(self._subjects) + len(self._claim_keys),
        }


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None
