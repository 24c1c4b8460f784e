"""The resources a compile reads, indexed by kind, and the errors it collects.

``Inputs`` answers the lookups the compiler makes (a Service by namespace and name, the
EndpointSlices of a Service, the labels of a namespace, the ReferenceGrants of a
namespace). ``ErrorSink`` turns (resource, field path, message) into ``ConfigError`` in
one place so every error names file, document, kind/name and field path the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from meshgate.config.errors import ConfigError, format_path

if TYPE_CHECKING:
    from meshgate.config.loader import LoadedResource

Path = tuple[str | int, ...]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# The API server sets this label on every Namespace; selectors commonly use it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def kind_name(res: LoadedResource) -> str:
    """``Kind/namespace/name`` (``Kind/name`` when cluster-scoped), as the loader says it."""
    if res.namespace:
        return f"{res.kind}/{res.namespace}/{res.name}"
    return f"{res.kind}/{res.name}"


class ErrorSink:
    """Collects every error of one compile; the compile raises them all at the end."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, res: LoadedResource, path: Path, message: str) -> None:
        self.errors.append(
            ConfigError(res.file, res.document, kind_name(res), format_path(path), message)
        )

    def add_unbound(self, source: str, kind_name: str, message: str) -> None:
        """An error no resource holds (a Gateway selected on the command line, say)."""
        self.errors.append(ConfigError(source, 0, kind_name, "", message))

    def __bool__(self) -> bool:
        return bool(self.errors)


class Inputs:
    """Resources by kind, namespace and name."""

    def __init__(self, resources: Iterable[LoadedResource], errors: ErrorSink) -> None:
        self.resources = list(resources)
        self._by_kind: dict[str, dict[tuple[str, str], LoadedResource]] = defaultdict(dict)
        self._slices: dict[tuple[str, str], list[LoadedResource]] = defaultdict(list)
        self._grants: dict[str, list[LoadedResource]] = defaultdict(list)
        for res in self.resources:
            table = self._by_kind[res.kind]
            key = (res.namespace, res.name)
            first = table.get(key)
            if first is not None:
                errors.add(
                    res,
                    ("metadata", "name"),
                    f"duplicate {res.kind} {res.namespace}/{res.name} "
                    f"(first defined in {first.file}, document {first.document})",
                )
                continue
            table[key] = res
            if res.kind == "EndpointSlice":
                service = res.obj.metadata.labels.get(SERVICE_NAME_LABEL)
                if service:
                    self._slices[(res.namespace, service)].append(res)
            elif res.kind == "ReferenceGrant":
                self._grants[res.namespace].append(res)

    def of_kind(self, kind: str) -> list[LoadedResource]:
        """Every resource of ``kind``, sorted by namespace and name (stable output)."""
        table = self._by_kind.get(kind, {})
        return [table[k] for k in sorted(table)]

    def get(self, kind: str, namespace: str, name: str) -> LoadedResource | None:
        return self._by_kind.get(kind, {}).get((namespace, name))

    def endpoint_slices(self, namespace: str, service: str) -> list[LoadedResource]:
        return sorted(self._slices.get((namespace, service), ()), key=lambda r: r.name)

    def reference_grants(self, namespace: str) -> list[LoadedResource]:
        return self._grants.get(namespace, [])

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        """Labels of the ``Namespace`` resource (none when it is not declared), plus the
        ``kubernetes.io/metadata.name`` label the API server puts on every namespace."""
        res = self.get("Namespace", "", namespace)  # cluster-scoped: namespace ""
        labels: dict[str, Any] = dict(res.obj.metadata.labels) if res is not None else {}
        labels.setdefault(NAMESPACE_NAME_LABEL, namespace)
        return labels
