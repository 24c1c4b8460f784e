"""Header lists: ordered, lowercase names, latin-1 ``str`` values.

One type serves requests and responses, downstream and upstream. Names are stored
lowercase (HTTP field names are case-insensitive; HTTP/2 requires lowercase), values as
received. Lookups are linear: a request has ~10-30 fields, a dict would cost more to
build than the scans it saves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class Headers:
    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        # Invariant: names are lowercase. Callers that already hold lowercase pairs
        # (the parsers) pass them straight in.
        self._items: list[tuple[str, str]] = list(items) if items is not None else []

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        """Build from pairs whose names may have any case."""
        return cls((n.lower(), v) for n, v in pairs)

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for n, v in self._items:
            if n == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self._items if n == name]

    def get_joined(self, name: str) -> str | None:
        """All values of ``name`` joined with ", " (RFC 9110 5.3), or None."""
        values = self.get_all(name)
        return ", ".join(values) if values else None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.lower()
        for n, _ in self._items:
            if n == name:
                return True
        return False

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with one value, keeping the first position."""
        name = name.lower()
        items = self._items
        for i, (n, _) in enumerate(items):
            if n == name:
                items[i] = (name, value)
                self._items = items[: i + 1] + [p for p in items[i + 1 :] if p[0] != name]
                return
        items.append((name, value))

    def setdefault(self, name: str, value: str) -> str:
        existing = self.get(name)
        if existing is None:
            self._items.append((name.lower(), value))
            return value
        return existing

    def add(self, name: str, value: str) -> None:
        self._items.append((name.lower(), value))

    def remove(self, name: str) -> None:
        name = name.lower()
        self._items = [p for p in self._items if p[0] != name]

    def items(self) -> list[tuple[str, str]]:
        return self._items

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        return Headers(self._items)

    def encode(self) -> bytes:
        """The field lines, each ending in CRLF, ready to follow a start line."""
        return "".join([f"{n}: {v}\r\n" for n, v in self._items]).encode("latin-1")

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


_CONNECTION_OPTIONS = frozenset(("close", "keep-alive"))


def connection_options(value: str) -> set[str]:
    """Field names a Connection header lists, beyond close / keep-alive."""
    return {t.strip().lower() for t in value.split(",")} - _CONNECTION_OPTIONS - {""}
