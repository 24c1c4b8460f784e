"""Reading config files into validated resource models.

``load_paths`` takes files and directories (a directory means its ``*.yaml`` / ``*.yml``
files, sorted by name, not recursing into subdirectories); ``load_texts`` takes
(name, text) pairs, for tests and for a control plane that receives config over the
wire. Both return a ``LoadResult``: the resources, every error found (the caller must
check ``errors``: loading is all-or-nothing from its point of view) and warnings for
kinds that are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from meshgate.config.errors import ConfigError, errors_from_validation
from meshgate.config.models import (
    MODELS,
    NOT_SUPPORTED_YET,
    Resource,
    supported_versions,
)

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

CLUSTER_SCOPED_KINDS = frozenset({"Namespace"})


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe YAML loading that rejects duplicate mapping keys (PyYAML keeps the last
    one silently, which would hide half of a user's config)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable key: let the base constructor report it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class LoadedResource:
    file: str
    document: int  # 1-based index of the YAML document in the file
    obj: Resource

    @property
    def kind(self) -> str:
        return self.obj.kind

    @property
    def namespace(self) -> str:
        """The namespace; "" for cluster-scoped kinds (Namespace)."""
        return "" if self.obj.kind in CLUSTER_SCOPED_KINDS else self.obj.metadata.namespace

    @property
    def name(self) -> str:
        return self.obj.metadata.name

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.document}"

    @property
    def age_key(self) -> tuple[int, float]:
        """Sorts oldest ``metadata.creationTimestamp`` first (a naive one is UTC); one
        without a timestamp sorts after all that have one. Gateway API's tie-break
        between routes, and between policies on the same target."""
        ts = getattr(self.obj.metadata, "creationTimestamp", None)
        if ts is None:
            return (1, 0.0)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return (0, ts.timestamp())


@dataclass
class LoadResult:
    resources: list[LoadedResource] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def load_paths(paths: Sequence[str | Path]) -> LoadResult:
    """Load every resource in ``paths`` (files, or directories of *.yaml / *.yml)."""
    result = LoadResult()
    texts: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml")
            )
            if not files:
                result.errors.append(
                    ConfigError(str(path), 0, "", "", "directory has no *.yaml or *.yml files")
                )
        else:
            files = [path]
        for file in files:
            try:
                texts.append((str(file), file.read_text(encoding="utf-8")))
            except FileNotFoundError:
                result.errors.append(ConfigError(str(file), 0, "", "", "no such file or directory"))
            except (OSError, UnicodeDecodeError) as exc:
                result.errors.append(ConfigError(str(file), 0, "", "", f"cannot read: {exc}"))
    _load_into(result, texts)
    return result


def load_texts(texts: Iterable[tuple[str, str]]) -> LoadResult:
    """Load resources from (name, YAML text) pairs; ``name`` stands in for the file."""
    result = LoadResult()
    _load_into(result, texts)
    return result


def _load_into(result: LoadResult, texts: Iterable[tuple[str, str]]) -> None:
    first_seen: dict[tuple[str, str, str], LoadedResource] = {}
    for name, text in texts:
        for document, data in _documents(name, text, result):
            loaded = _load_document(name, document, data, result)
            if loaded is None:
                continue
            previous = first_seen.get(loaded.key)
            if previous is not None:
                result.errors.append(
                    ConfigError(
                        name,
                        document,
                        _kind_name(loaded.kind, loaded.namespace, loaded.name),
                        "metadata.name",
                        f"duplicate {loaded.kind} {_ns_name(loaded.namespace, loaded.name)}: "
                        f"already defined at {previous.where}",
                    )
                )
                continue
            first_seen[loaded.key] = loaded
            result.resources.append(loaded)


def _documents(name: str, text: str, result: LoadResult) -> Iterable[tuple[int, Any]]:
    """(1-based document number, parsed data) for each non-empty YAML document."""
    document = 0
    try:
        for data in yaml.load_all(text, Loader=_Loader):
            document += 1
            if data is not None:
                yield document, data
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}: {problem}" if context and problem != context else problem
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        result.errors.append(
            ConfigError(name, document + 1, "", "", f"YAML syntax error at {where}{detail}")
        )


def _load_document(name: str, document: int, data: Any, result: LoadResult) -> LoadedResource | None:
    def error(kind_name: str, path: str, message: str) -> None:
        result.errors.append(ConfigError(name, document, kind_name, path, message))

    if not isinstance(data, dict):
        error("", "", f"a document must be a mapping with apiVersion and kind, got {type(data).__name__}")
        return None
    api_version, kind = data.get("apiVersion"), data.get("kind")
    meta = data.get("metadata")
    obj_name = meta.get("name") if isinstance(meta, dict) else None
    namespace = meta.get("namespace", "default") if isinstance(meta, dict) else "default"
    if not isinstance(api_version, str) or not api_version:
        error(kind if isinstance(kind, str) else "", "apiVersion", "required field is missing")
        return None
    if not isinstance(kind, str) or not kind:
        error("", "kind", "required field is missing")
        return None
    if kind in CLUSTER_SCOPED_KINDS:
        namespace = ""
    kind_name = _kind_name(kind, namespace, obj_name)

    group = api_version.rpartition("/")[0]
    model = MODELS.get((group, kind))
    if model is None:
        label = f'{api_version} {kind} "{obj_name}"' if obj_name else f"{api_version} {kind}"
        reason = (
            "not supported yet"
            if (group, kind) in NOT_SUPPORTED_YET
            else "meshgate does not serve this kind"
        )
        result.warnings.append(f"{name}:{document}: skipping {label}: {reason}")
        return None
    versions = supported_versions(model)
    if api_version not in versions:
        error(
            kind_name,
            "apiVersion",
            f'"{api_version}" is not supported for {kind}; supported: {", ".join(versions)}',
        )
        return None
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        result.errors.extend(
            errors_from_validation(exc, model, file=name, document=document, kind_name=kind_name)
        )
        return None
    return LoadedResource(name, document, obj)  # type: ignore[arg-type]


def _ns_name(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _kind_name(kind: str, namespace: Any, name: Any) -> str:
    if not isinstance(name, str) or not name:
        return kind
    if not isinstance(namespace, str):
        namespace = "?"
    return f"{kind}/{_ns_name(namespace, name)}"
