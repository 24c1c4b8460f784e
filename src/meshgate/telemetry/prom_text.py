"""A parser of Prometheus text exposition format 0.0.4: samples (name, labels, value,
optional timestamp) plus the `# HELP` and `# TYPE` of each family.

Sans-IO: text in, an `Exposition` out. Strict where a mistake would give a wrong number
(bad escapes, unterminated label values, a value that is not a float) and raises
`PromTextError` naming the line; other comments and blank lines are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_BLANKS = " \t"
_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
_LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HELP_ESCAPES = {"\\": "\\", "n": "\n"}


class PromTextError(ValueError):
    """The text is not valid exposition format; `lineno` is 1-based."""

    def __init__(self, lineno: int, message: str, line: str) -> None:
        super().__init__(f"line {lineno}: {message}: {line!r}")
        self.lineno = lineno


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass
class Exposition:
    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)  # family -> counter, histogram, ...
    help: dict[str, str] = field(default_factory=dict)  # family -> docstring

    def named(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name]


def parse(text: str) -> Exposition:
    out = Exposition()
    # Lines end with "\n" only (str.splitlines would also split inside a label value
    # on characters such as \x85 that the format allows unescaped).
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        if not line.strip(_BLANKS):
            continue
        if line.lstrip(_BLANKS).startswith("#"):
            _parse_comment(line, lineno, out)
        else:
            out.samples.append(_parse_sample(line, lineno))
    return out


def _parse_comment(line: str, lineno: int, out: Exposition) -> None:
    parts = line.lstrip(_BLANKS)[1:].lstrip(_BLANKS).split(None, 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
        return  # an ordinary comment
    keyword, name = parts[0], parts[1]
    if not _METRIC_NAME.fullmatch(name):
        raise PromTextError(lineno, f"bad metric name in # {keyword}", line)
    rest = parts[2] if len(parts) > 2 else ""
    if keyword == "TYPE":
        kind = rest.strip(_BLANKS)
        if kind not in _TYPES:
            raise PromTextError(lineno, f"unknown metric type {kind!r}", line)
        if name in out.types:
            raise PromTextError(lineno, f"second # TYPE for {name}", line)
        out.types[name] = kind
    else:
        out.help[name] = _unescape(rest, _HELP_ESCAPES, lineno, line)


def _unescape(text: str, escapes: dict[str, str], lineno: int, line: str) -> str:
    if "\\" not in text:
        return text
    chars: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in escapes:
                raise PromTextError(lineno, f"invalid escape sequence \\{nxt}", line)
            chars.append(escapes[nxt])
            i += 2
        else:
            chars.append(c)
            i += 1
    return "".join(chars)


def _parse_sample(line: str, lineno: int) -> Sample:
    pos = _skip_blanks(line, 0)
    m = _METRIC_NAME.match(line, pos)
    if not m:
        raise PromTextError(lineno, "expected a metric name", line)
    name = m.group()
    pos = _skip_blanks(line, m.end())
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        pos = _parse_labels(line, pos + 1, lineno, labels)
    fields = line[pos:].split()
    if not fields or len(fields) > 2:
        raise PromTextError(lineno, "expected a value and an optional timestamp", line)
    value = _parse_float(fields[0], lineno, line)
    timestamp = None
    if len(fields) == 2:
        try:
            timestamp = int(fields[1])
        except ValueError:
            raise PromTextError(lineno, "timestamp is not an integer", line) from None
    return Sample(name, labels, value, timestamp)


def _parse_labels(line: str, pos: int, lineno: int, labels: dict[str, str]) -> int:
    """Parse `name="value",...}` starting after the `{`; return the index after `}`."""
    while True:
        pos = _skip_blanks(line, pos)
        if pos < len(line) and line[pos] == "}":
            return pos + 1  # also accepts a trailing comma and `{}`
        m = _LABEL_NAME.match(line, pos)
        if not m:
            raise PromTextError(lineno, "expected a label name", line)
        label = m.group()
        if label in labels:
            raise PromTextError(lineno, f"label {label} given twice", line)
        pos = _skip_blanks(line, m.end())
        if line[pos : pos + 1] != "=":
            raise PromTextError(lineno, f"expected = after label {label}", line)
        pos = _skip_blanks(line, pos + 1)
        if line[pos : pos + 1] != '"':
            raise PromTextError(lineno, f'expected " to open the value of {label}', line)
        labels[label], pos = _label_value(line, pos + 1, lineno)
        pos = _skip_blanks(line, pos)
        if line[pos : pos + 1] == ",":
            pos += 1
        elif line[pos : pos + 1] != "}":
            raise PromTextError(lineno, "expected , or } after a label", line)


def _label_value(line: str, pos: int, lineno: int) -> tuple[str, int]:
    """The unescaped value starting after its opening quote, and the index after its
    closing quote."""
    chars: list[str] = []
    while pos < len(line):
        c = line[pos]
        if c == '"':
            return "".join(chars), pos + 1
        if c == "\\":
            nxt = line[pos + 1 : pos + 2]
            if nxt not in _LABEL_ESCAPES:
                raise PromTextError(lineno, f"invalid escape sequence \\{nxt} in a label value", line)
            chars.append(_LABEL_ESCAPES[nxt])
            pos += 2
        else:
            chars.append(c)
            pos += 1
    raise PromTextError(lineno, "unterminated label value", line)


def _parse_float(text: str, lineno: int, line: str) -> float:
    # float() also takes "1_000"; Go's ParseFloat, which Prometheus uses, does not.
    if "_" not in text:
        try:
            return float(text)  # accepts +Inf, -Inf, NaN as the format requires
        except ValueError:
            pass
    raise PromTextError(lineno, f"value {text!r} is not a float", line)


def _skip_blanks(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in _BLANKS:
        pos += 1
    return pos
