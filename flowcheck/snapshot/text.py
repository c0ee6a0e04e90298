"""A snapshot's text: written by :func:`format_snapshot`, read back by :func:`parse_snapshot`.

A snapshot holds one section per loss (and, once gradient sites exist, one per site: a
``tape.gradient`` call, ``optimizer.minimize``, a Keras ``train_step``, keyed by its kind and
``file:line``). Each section maps every variable name, as the report shows it, to its verdict and,
for a blocked variable, the barriers that cut it: kind, op type, file (relative to the snapshot's
folder, so the file is the same in every clone) and line. Nothing else (no op names, no flowcheck
version) goes in, so the bytes change only when the gradient flow does.

The text is a small subset of TOML, sorted, one variable a line, read back by :func:`parse_snapshot`
without a TOML library::

    # flowcheck gradient-flow snapshot: review changes like code; rewrite with --update
    format = 1
    target = "loss_fn"
    raises = ["no_gradient DenseBincount at model.py:12"]    (only when the tape would raise)

    [loss."loss"]
    "w1" = { verdict = "blocked", cut = ["stop_gradient StopGradient at model.py:26"] }
    "w2" = { verdict = "receives" }

    [site."tape.gradient"."train.py:42"]                      (reserved for gradient sites)

A report is made one by :mod:`flowcheck.snapshot.build`; comparing two snapshots is :mod:`flowcheck.snapshot.diff`. Nothing here imports TensorFlow or
touches disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Final

from flowcheck._model import Verdict
from flowcheck.errors import SnapshotError
from flowcheck.snapshot.model import FORMAT_VERSION, SECTION_KINDS, Cut, Flow, Section, Snapshot

__all__ = ["format_snapshot", "parse_snapshot"]

_HEADER: Final = "# flowcheck gradient-flow snapshot: review changes like code; rewrite with --update"

_STRING: Final = r'"(?:[^"\\]|\\.)*"'
_TOKEN: Final = re.compile(rf"\s*({_STRING}|[A-Za-z_][A-Za-z0-9_-]*|-?\d+|[\[\]{{}},=.])")
_CUT: Final = re.compile(r"^(?P<kind>\w+) (?P<op>\S+)(?: at (?P<file>.+):(?P<line>\d+))?$")
_UNESCAPES: Final = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def format_snapshot(snapshot: Snapshot) -> str:
    """The snapshot's text: deterministic bytes, one variable a line, valid TOML."""
    lines = [_HEADER, f"format = {snapshot.version}", f"target = {_quote(snapshot.target)}"]
    if snapshot.raises:
        lines.append(f"raises = {_array(str(c) for c in snapshot.raises)}")
    for section in snapshot.sections:
        lines.append("")
        keys = [section.kind, section.name]
        if section.kind == "site":
            keys.append(f"{section.file}:{section.line}")
        lines.append("[" + ".".join([keys[0], *map(_quote, keys[1:])]) + "]")
        for name, flow in sorted(section.variables):
            cut = f", cut = {_array(str(c) for c in flow.cuts)}" if flow.cuts else ""
            lines.append(f"{_quote(name)} = {{ verdict = {_quote(flow.verdict.value)}{cut} }}")
    return "\n".join(lines) + "\n"


def _array(items: Iterator[str]) -> str:
    return "[" + ", ".join(_quote(i) for i in items) + "]"


_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _quote(text: str) -> str:
    """A TOML basic string (control characters escaped, as TOML requires)."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def parse_snapshot(text: str, name: str = "snapshot") -> Snapshot:
    """Read a snapshot written by :func:`format_snapshot`.

    Args:
        text: The file's text.
        name: What to call it in errors (its path).

    Raises:
        SnapshotError: the text is not a snapshot of a format this flowcheck reads, with the
            line at fault (``name:line``).
    """
    top: dict[str, object] = {}
    sections: list[Section] = []
    current: tuple[list[str], list[tuple[str, Flow]]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{name}:{number}"
        tokens = _tokens(line, where)
        if tokens[0] == "[":
            if current is not None:
                sections.append(_section(*current, where))
            current = (_header(tokens, where), [])
            continue
        if len(tokens) < 3 or tokens[1] != "=":
            raise SnapshotError(f"{where}: expected 'key = value', found {line!r}")
        key, value = _key(tokens[0], where), _value(tokens[2:], where)
        if current is None:
            top[key] = value
        else:
            current[1].append((key, _flow(key, value, where)))
    if current is not None:
        sections.append(_section(*current, f"{name}:end"))
    return _snapshot(top, sections, name)


def _snapshot(top: dict[str, object], sections: list[Section], name: str) -> Snapshot:
    version = top.get("format")
    if version != FORMAT_VERSION:
        said = "no 'format = N' line" if version is None else f"format {version!r}"
        raise SnapshotError(f"{name}: {said}; this flowcheck reads snapshot format {FORMAT_VERSION} "
                            "(rewrite the snapshot with --update)")
    raises = top.get("raises", [])
    if not isinstance(raises, list):
        raise SnapshotError(f"{name}: 'raises' must be a list of barriers")
    keys = [(s.kind, s.name, s.file, s.line) for s in sections]
    if len(set(keys)) != len(keys):
        raise SnapshotError(f"{name}: a section appears twice")
    return Snapshot(
        target=str(top.get("target", "")), sections=tuple(sections),
        raises=tuple(_cut(c, name) for c in raises), version=version,
    )


def _tokens(line: str, where: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(line):
        if line[pos:].strip() == "" or line[pos:].lstrip().startswith("#"):
            break
        match = _TOKEN.match(line, pos)
        if match is None:
            raise SnapshotError(f"{where}: cannot read {line[pos:].strip()!r}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def _key(token: str, where: str) -> str:
    return _unquote(token, where) if token.startswith('"') else token


def _unquote(token: str, where: str) -> str:
    if not token.startswith('"'):
        raise SnapshotError(f"{where}: expected a quoted string, found {token!r}")
    body, out, i = token[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]
        if esc in _UNESCAPES:
            out.append(_UNESCAPES[esc])
            i += 2
        elif esc in "uU":
            width = 4 if esc == "u" else 8
            out.append(chr(int(body[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            raise SnapshotError(f"{where}: unknown escape \\{esc}")
    return "".join(out)


def _value(tokens: list[str], where: str) -> object:
    """A string, an integer, a list of strings, or an inline table of those."""
    value, rest = _one(tokens, where)
    if rest:
        raise SnapshotError(f"{where}: unexpected {rest[0]!r}")
    return value


def _one(tokens: list[str], where: str) -> tuple[object, list[str]]:
    if not tokens:
        raise SnapshotError(f"{where}: a value is missing")
    head, rest = tokens[0], tokens[1:]
    if head.startswith('"'):
        return _unquote(head, where), rest
    if head.lstrip("-").isdigit():
        return int(head), rest
    if head in "[{":
        close, items, table = "]" if head == "[" else "}", [], {}
        while rest and rest[0] != close:
            if head == "{":
                if len(rest) < 2 or rest[1] != "=":
                    raise SnapshotError(f"{where}: expected 'key = value' in a table")
                key = _key(rest[0], where)
                table[key], rest = _one(rest[2:], where)
            else:
                item, rest = _one(rest, where)
                items.append(item)
            if rest and rest[0] == ",":
                rest = rest[1:]
        if not rest:
            raise SnapshotError(f"{where}: {head!r} is not closed")
        return (items if head == "[" else table), rest[1:]
    raise SnapshotError(f"{where}: cannot read the value {head!r}")


def _header(tokens: list[str], where: str) -> list[str]:
    if tokens[-1] != "]" or len(tokens) < 5 or tokens[2] != ".":
        raise SnapshotError(f"{where}: expected a section such as [loss.\"loss\"]")
    parts = [tokens[1], *(_key(t, where) for t in tokens[3:-1:2])]
    if parts[0] not in SECTION_KINDS:
        raise SnapshotError(f"{where}: unknown section kind {parts[0]!r}; expected one of {', '.join(SECTION_KINDS)}")
    if len(parts) != (3 if parts[0] == "site" else 2):
        raise SnapshotError(f"{where}: a {parts[0]} section is [loss.\"NAME\"] or [site.\"KIND\".\"FILE:LINE\"]")
    return parts


def _section(parts: list[str], flows: list[tuple[str, Flow]], where: str) -> Section:
    if parts[0] == "site":
        file, _, line = parts[2].rpartition(":")
        if not file or not line.isdigit():
            raise SnapshotError(f"{where}: a site is keyed by FILE:LINE, not {parts[2]!r}")
        return Section("site", parts[1], tuple(sorted(flows)), file, int(line))
    return Section(parts[0], parts[1], tuple(sorted(flows)))


def _flow(name: str, value: object, where: str) -> Flow:
    if not isinstance(value, dict) or not isinstance(value.get("verdict"), str):
        raise SnapshotError(f"{where}: {name!r} needs {{ verdict = \"...\" }}")
    try:
        verdict = Verdict(value["verdict"])
    except ValueError:
        allowed = ", ".join(v.value for v in Verdict)
        raise SnapshotError(f"{where}: unknown verdict {value['verdict']!r}; expected one of {allowed}") from None
    cuts = value.get("cut", [])
    if not isinstance(cuts, list):
        raise SnapshotError(f"{where}: 'cut' must be a list of barriers")
    return Flow(verdict, tuple(sorted({_cut(c, where) for c in cuts})))


def _cut(text: object, where: str) -> Cut:
    match = _CUT.match(text) if isinstance(text, str) else None
    if match is None:
        raise SnapshotError(f"{where}: a barrier is 'KIND OP_TYPE at FILE:LINE', not {text!r}")
    file = str(PurePosixPath(match["file"])) if match["file"] else ""
    return Cut(match["kind"], match["op"], file, int(match["line"] or 0))
