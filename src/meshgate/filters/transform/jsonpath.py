"""Field paths into JSON documents, and the three edits TransformPolicy makes with them.

Two spellings, parsed once at config load into the same segments:

- a dotted path ``order.items.0.sku``: a segment of digits indexes an array (or is a
  key of an object), ``*`` is every element of an array / every value of an object,
  ``-`` (last segment, ``set`` only) appends to an array;
- a JSON pointer (RFC 6901) ``/order/items/0/sku``: for keys with dots or other
  special characters (``~1`` is ``/``, ``~0`` is ``~``); ``-`` appends as in RFC 6902;
  no wildcards (``*`` is a plain key).

Edits never fail a request: a path that does not exist is left alone by ``remove`` and
``rename``; ``set`` creates missing objects on the way but never replaces a value of
another type by an object, and an array index past the end is skipped.
"""

from __future__ import annotations

from typing import Any

WILD = object()
APPEND = object()


class PathError(ValueError):
    pass


def parse_path(text: str, allow_append: bool = False, allow_wild: bool = True) -> tuple:
    """Segments of a dotted path or JSON pointer; raises PathError."""
    if not text:
        raise PathError(
            "a path is required (a dotted path like a.b or a JSON pointer like /a/b)"
        )
    if text.startswith("/"):
        raw = [s.replace("~1", "/").replace("~0", "~") for s in text[1:].split("/")]
        for s in text[1:].split("/"):
            if "~" in s.replace("~0", "").replace("~1", ""):
                raise PathError(f"{text!r}: '~' must be written ~0 in a JSON pointer")
        segs: list[Any] = [APPEND if s == "-" else s for s in raw]
    else:
        raw = text.split(".")
        if any(s == "" for s in raw):
            raise PathError(
                f"{text!r}: empty segment (for keys with dots use a JSON pointer: /a.b)"
            )
        segs = [WILD if s == "*" else APPEND if s == "-" else s for s in raw]
        if WILD in segs and not allow_wild:
            raise PathError(f"{text!r}: '*' is not allowed here")
    if APPEND in segs[:-1]:
        raise PathError(f"{text!r}: '-' (append) can only be the last segment")
    if segs[-1] is APPEND and not allow_append:
        raise PathError(f"{text!r}: '-' (append) is only allowed in set")
    return tuple(segs)


def has_wild(segs: tuple) -> bool:
    return WILD in segs


def _children(node: Any, seg: Any) -> list:
    """The values at ``seg`` under ``node`` that exist."""
    if seg is WILD:
        if isinstance(node, dict):
            return list(node.values())
        if isinstance(node, list):
            return list(node)
        return []
    if isinstance(node, dict):
        return [node[seg]] if seg in node else []
    if isinstance(node, list) and isinstance(seg, str) and seg.isdigit():
        i = int(seg)
        return [node[i]] if i < len(node) else []
    return []


def parents(doc: Any, segs: tuple) -> list:
    """Every existing container that the path's last segment applies to."""
    nodes = [doc]
    for seg in segs[:-1]:
        nodes = [c for n in nodes for c in _children(n, seg)]
        if not nodes:
            break
    return nodes


def remove(doc: Any, segs: tuple) -> None:
    last = segs[-1]
    for node in parents(doc, segs):
        if isinstance(node, dict):
            if last is WILD:
                node.clear()
            else:
                node.pop(last, None)
        elif isinstance(node, list):
            if last is WILD:
                node.clear()
            elif isinstance(last, str) and last.isdigit() and int(last) < len(node):
                del node[int(last)]


def set_value(doc: Any, segs: tuple, value: Any) -> None:
    nodes = [doc]
    for i, seg in enumerate(segs[:-1]):
        nxt: list = []
        for node in nodes:
            if seg is WILD:
                nxt.extend(_children(node, WILD))
            elif isinstance(node, dict):
                child = node.get(seg)
                if child is None and seg not in node:
                    child = [] if segs[i + 1] is APPEND else {}
                    node[seg] = child
                if isinstance(child, (dict, list)):
                    nxt.append(child)
            elif isinstance(node, list):
                nxt.extend(
                    c for c in _children(node, seg) if isinstance(c, (dict, list))
                )
        nodes = nxt
    last = segs[-1]
    for node in nodes:
        if isinstance(node, dict):
            if last is WILD:
                for k in node:
                    node[k] = _fresh(value)
            elif last is not APPEND:
                node[last] = _fresh(value)
        elif isinstance(node, list):
            if last is APPEND:
                node.append(_fresh(value))
            elif last is WILD:
                node[:] = [_fresh(value) for _ in node]
            elif isinstance(last, str) and last.isdigit() and int(last) < len(node):
                node[int(last)] = _fresh(value)


def _fresh(value: Any) -> Any:
    # One configured value may land in many places: never share a mutable one.
    if isinstance(value, (dict, list)):
        import copy

        return copy.deepcopy(value)
    return value


def rename(doc: Any, src: tuple, dst: tuple) -> None:
    """Move the value at ``src`` to ``dst``. With wildcards in ``src``, ``dst`` names a
    sibling (same segments but the last), renamed in every matching object."""
    if has_wild(src):
        old, new = src[-1], dst[-1]
        for node in parents(doc, src):
            if isinstance(node, dict) and old in node:
                node[new] = node.pop(old)
        return
    found = parents(doc, src)
    if not found:
        return
    node, last = found[0], src[-1]
    if isinstance(node, dict) and last in node:
        value = node.pop(last)
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        value = node.pop(int(last))
    else:
        return
    set_value(doc, dst, value)
