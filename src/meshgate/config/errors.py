"""Config errors: where a problem is (file, YAML document, resource, field path) and what.

``ConfigError`` prints as ``file:document:Kind/namespace/name:field.path: message``, the
format ``meshgate validate`` shows. ``errors_from_validation`` is the one place pydantic's
errors become ConfigErrors, so every caller gets the same paths and wording.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigError:
    file: str
    document: int  # 1-based index of the YAML document in the file; 0 when not known
    kind_name: str  # "HTTPRoute/default/my-route", or "" when not known
    path: str  # "spec.rules[0].matches[1].path.value", or "" for the whole document
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.document}" if self.document else self.file
        parts = [where]
        if self.kind_name:
            parts.append(self.kind_name)
        if self.path:
            parts.append(self.path)
        return ":".join(parts) + f": {self.message}"


class ConfigInvalid(Exception):
    """Raised when a config cannot be used; ``errors`` says every reason found."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def format_path(loc: Iterable[str | int]) -> str:
    """("spec", "rules", 0, "matches") -> "spec.rules[0].matches"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def errors_from_validation(
    exc: ValidationError,
    model: type[BaseModel],
    *,
    file: str,
    document: int,
    kind_name: str,
) -> list[ConfigError]:
    """Turn a pydantic ValidationError for ``model`` into ConfigErrors, one per problem."""
    errors: list[ConfigError] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        message = err["msg"]
        ctx = err.get("ctx") or {}
        original = ctx.get("error")
        # A FieldError from a model validator names a sub-path of the object it checked.
        subpath = getattr(original, "subpath", None)
        if subpath is not None:
            loc = loc + tuple(subpath)
            message = original.message
        elif err["type"] == "value_error" and message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        elif err["type"] == "extra_forbidden":
            message = _unknown_field_message(model, loc)
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "string_type" and isinstance(err.get("input"), (bool, int, float)):
            # YAML reads 1, 1.0, yes, on as numbers and booleans.
            message = f"must be a string, got {err['input']!r}; quote the value in YAML"
        path = format_path(loc)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        errors.append(ConfigError(file, document, kind_name, path, message))
    return errors


def _unknown_field_message(model: type[BaseModel], loc: Loc) -> str:
    name = loc[-1]
    parent = _model_at(model, loc[:-1])
    if parent is None:
        return f'unknown field "{name}"'
    supported = ", ".join(
        (info.alias or field) for field, info in parent.model_fields.items()
    )
    return f'unknown field "{name}"; supported: {supported}'


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the object at ``loc`` under ``model``."""
    current: Any = model
    for part in loc:
        current = _unwrap(current, part)
        if current is None:
            return None
    return _as_model(current)


def _unwrap(annotation: Any, part: str | int) -> Any:
    model = _as_model(annotation)
    if model is not None:
        if isinstance(part, int):
            return None
        for field, info in model.model_fields.items():
            if part in (field, info.alias):
                return info.annotation
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _unwrap(args[0], part)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            found = _unwrap(arg, part)
            if found is not None:
                return found
        return None
    if origin is list and isinstance(part, int):
        return args[0] if args else None
    if origin is dict and isinstance(part, str):
        return args[1] if len(args) > 1 else None
    return None


def _as_model(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if _as_model(a) is not None]
        return _as_model(models[0]) if len(models) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
