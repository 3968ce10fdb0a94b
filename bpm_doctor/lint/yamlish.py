"""A small, tolerant reader for the YAML that compose files use.

PyYAML is not a dependency, so this reads the subset compose files are
written in:

- block mappings and sequences, including a sequence at its key's indentation;
- flow sequences and mappings (`[a, "b"]`, `{}`), which may span lines;
- plain, single- and double-quoted scalars, and block scalars (`|`, `>`);
- comments, anchors, aliases and `<<` merge keys.

Every value keeps the 1-based line it starts on, and a mapping value keeps
the line of its key, so a finding about `command:` points at that line.
Scalars stay strings (`1`, `true`), because the linter compares them as
text. Input outside the subset is read as well as it can be and does not
raise. Only the first document of a multi-document stream is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

# Deeper flow nesting than this is kept as a plain string.
_MAX_FLOW_DEPTH = 64
_MAX_BLOCK_DEPTH = 64
_KEY = re.compile(r"""^(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"\[\]{},][^#]*?|\?)\s*:(?:\s+|$)""")

Value = Union[str, list["Node"], dict[str, "Node"], None]


@dataclass
class Node:
    """A YAML value and the line it starts on."""

    value: Value
    line: int

    def get(self, key: str) -> Node | None:
        if isinstance(self.value, dict):
            return self.value.get(key)
        return None


@dataclass
class _Line:
    number: int
    indent: int
    content: str
    raw: str


def load(text: str) -> Node | None:
    """Read the first YAML document of a text; return None when it is empty."""
    lines = _significant_lines(text)
    if not lines:
        return None
    reader = _Reader(lines, text.splitlines())
    return reader.block(0, lines[0].indent, 0)


def _significant_lines(text: str) -> list[_Line]:
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        expanded = raw.replace("\t", " ")
        stripped = expanded.strip()
        if stripped in ("---", "...") or stripped.startswith(("--- ", "%")):
            if lines and stripped.startswith("---"):
                break
            continue
        content = _strip_comment(expanded).rstrip()
        if not content.strip():
            continue
        indent = len(content) - len(content.lstrip(" "))
        lines.append(_Line(number, indent, content.strip(), expanded))
    return lines


def _strip_comment(text: str) -> str:
    quote = None
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"" and (index == 0 or text[index - 1] in " \t:[{,-"):
            quote = char
        elif char == "#" and (index == 0 or text[index - 1] in " \t"):
            return text[:index]
    return text


class _Reader:
    def __init__(self, lines: list[_Line], raw_lines: list[str]):
        self.lines = lines
        self.raw_lines = raw_lines
        self.position = 0
        self.anchors: dict[str, Node] = {}

    def block(self, position: int, indent: int, depth: int) -> Node | None:
        self.position = position
        if position >= len(self.lines) or depth > _MAX_BLOCK_DEPTH:
            return None
        line = self.lines[position]
        if _is_sequence_item(line.content):
            return self.sequence(line.indent, depth)
        if _KEY.match(line.content):
            return self.mapping(line.indent, depth)
        self.position += 1
        return self.inline(line.content, line, line.indent, depth)

    def mapping(self, indent: int, depth: int) -> Node:
        start = self.lines[self.position].number
        result: dict[str, Node] = {}
        while self.position < len(self.lines):
            line = self.lines[self.position]
            if line.indent != indent or _is_sequence_item(line.content):
                break
            match = _KEY.match(line.content)
            if match is None:
                self.position += 1
                continue
            key = _unquote(match.group("key").strip())
            rest = line.content[match.end():].strip()
            self.position += 1
            value = self.value_after_key(rest, line, indent, depth)
            if key == "<<":
                _merge(result, value)
            else:
                result[key] = Node(value.value if value is not None else None, line.number)
        return Node(result, start)

    def sequence(self, indent: int, depth: int) -> Node:
        start = self.lines[self.position].number
        items: list[Node] = []
        while self.position < len(self.lines):
            line = self.lines[self.position]
            if line.indent != indent or not _is_sequence_item(line.content):
                break
            rest = line.content[1:].lstrip()
            if not rest:
                self.position += 1
                child = self.child_block(indent, depth, allow_same_indent=False)
                items.append(child if child is not None else Node(None, line.number))
                continue
            offset = indent + (len(line.content) - len(rest))
            if _KEY.match(rest) and not rest.startswith(("'", '"', "[", "{")) or _quoted_key(rest):
                # `- key: value` opens a mapping whose keys line up with `key`.
                self.lines[self.position] = _Line(line.number, offset, rest, line.raw)
                items.append(self.mapping(offset, depth + 1))
                continue
            self.position += 1
            items.append(self.inline(rest, line, indent, depth))
        return Node(items, start)

    def child_block(self, indent: int, depth: int, allow_same_indent: bool) -> Node | None:
        if self.position >= len(self.lines):
            return None
        following = self.lines[self.position]
        if following.indent > indent:
            return self.block(self.position, following.indent, depth + 1)
        if allow_same_indent and following.indent == indent and _is_sequence_item(following.content):
            return self.block(self.position, indent, depth + 1)
        return None

    def value_after_key(self, rest: str, line: _Line, indent: int, depth: int) -> Node | None:
        anchor = None
        if rest.startswith("&"):
            anchor, _space, rest = rest[1:].partition(" ")
            rest = rest.strip()
        if rest.startswith("!"):
            _tag, _space, rest = rest.partition(" ")
            rest = rest.strip()
        if not rest:
            value = self.child_block(indent, depth, allow_same_indent=True)
        else:
            value = self.inline(rest, line, indent, depth)
        if anchor and value is not None:
            self.anchors[anchor] = value
        return value

    def inline(self, rest: str, line: _Line, indent: int, depth: int) -> Node | None:
        if rest.startswith("*"):
            return self.anchors.get(rest[1:].split()[0] if rest[1:].split() else "")
        if rest[:1] in ("|", ">"):
            return Node(self.block_scalar(rest, indent), line.number)
        if rest[:1] in ("[", "{"):
            text = self.gather_flow(rest)
            value, _end = _parse_flow(text, 0, 0, self.anchors)
            return Node(value.value if isinstance(value, Node) else value, line.number)
        if rest[:1] in ("'", '"') and not _closes(rest):
            rest = self.gather_quoted(rest)
        return Node(_scalar(rest), line.number)

    def block_scalar(self, header: str, indent: int) -> str:
        folded = header.startswith(">")
        collected: list[str] = []
        last_line = self.lines[self.position - 1].number
        while self.position < len(self.lines) and self.lines[self.position].indent > indent:
            self.position += 1
        end_line = self.lines[self.position].number - 1 if self.position < len(self.lines) else len(self.raw_lines)
        raw = self.raw_lines[last_line:end_line]
        nonblank = [text for text in raw if text.strip()]
        margin = min((len(text) - len(text.lstrip(" ")) for text in nonblank), default=0)
        for text in raw:
            collected.append(text[margin:] if len(text) >= margin else "")
        while collected and not collected[-1].strip():
            collected.pop()
        return " ".join(part.strip() for part in collected if part.strip()) if folded else "\n".join(collected)

    def gather_flow(self, rest: str) -> str:
        text = rest
        while not _balanced(text) and self.position < len(self.lines):
            text += " " + self.lines[self.position].content
            self.position += 1
        return text

    def gather_quoted(self, rest: str) -> str:
        text = rest
        while not _closes(text) and self.position < len(self.lines):
            text += " " + self.lines[self.position].content
            self.position += 1
        return text


def _is_sequence_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _quoted_key(text: str) -> bool:
    return text[:1] in ("'", '"') and bool(_KEY.match(text))


def _merge(target: dict[str, Node], value: Node | None) -> None:
    sources = value.value if value is not None and isinstance(value.value, list) else [value]
    for source in sources:
        if source is not None and isinstance(source.value, dict):
            for key, item in source.value.items():
                target.setdefault(key, item)


def _balanced(text: str) -> bool:
    depth = 0
    quote = None
    for char in text:
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth <= 0


def _closes(text: str) -> bool:
    return _closing_index(text) > 0


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return _double_quoted(text[1:-1])
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "/": "/", "0": "\0", " ": " "}


def _double_quoted(text: str) -> str:
    result = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            result.append(_ESCAPES.get(text[index + 1], text[index + 1]))
            index += 2
            continue
        result.append(char)
        index += 1
    return "".join(result)


def _scalar(text: str) -> str | None:
    text = text.strip()
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text[0] in ("'", '"'):
        end = _closing_index(text)
        return _unquote(text[: end + 1]) if end > 0 else text[1:]
    return text


def _closing_index(text: str) -> int:
    quote = text[0]
    index = 1
    while index < len(text):
        if text[index] == "\\" and quote == '"':
            index += 2
            continue
        if text[index] == quote:
            if quote == "'" and text[index + 1:index + 2] == "'":
                index += 2
                continue
            return index
        index += 1
    return -1


def _parse_flow(text: str, index: int, depth: int, anchors: dict[str, Node]) -> tuple[Node | str | None, int]:
    """Parse a flow value starting at `index`; return (value, index after it)."""
    index = _skip_space(text, index)
    if index >= len(text):
        return None, index
    char = text[index]
    if depth > _MAX_FLOW_DEPTH:
        return text[index:], len(text)
    if char == "[":
        items: list[Node] = []
        index += 1
        while True:
            index = _skip_space(text, index)
            if index >= len(text):
                break
            if text[index] == "]":
                index += 1
                break
            if text[index] == ",":
                index += 1
                continue
            item, after = _parse_flow(text, index, depth + 1, anchors)
            # A stray closing bracket of the other kind ends no item: step over it.
            index = after if after > index else index + 1
            items.append(item if isinstance(item, Node) else Node(item, 0))
        return Node(items, 0), index
    if char == "{":
        mapping: dict[str, Node] = {}
        index += 1
        while True:
            index = _skip_space(text, index)
            if index >= len(text):
                break
            if text[index] == "}":
                index += 1
                break
            if text[index] == ",":
                index += 1
                continue
            key, after = _flow_scalar(text, index, stop=":,}")
            index = after if after > index or text[index] == ":" else index + 1
            index = _skip_space(text, index)
            value: Node | str | None = None
            if index < len(text) and text[index] == ":":
                value, index = _parse_flow(text, index + 1, depth + 1, anchors)
            mapping[key or ""] = value if isinstance(value, Node) else Node(value, 0)
        return Node(mapping, 0), index
    if char == "*":
        name, index = _flow_scalar(text, index + 1, stop=",]}")
        return anchors.get(name or ""), index
    value, index = _flow_scalar(text, index, stop=",]}")
    return value, index


def _flow_scalar(text: str, index: int, stop: str) -> tuple[str | None, int]:
    index = _skip_space(text, index)
    if index < len(text) and text[index] in "'\"":
        end = _closing_index(text[index:])
        if end < 0:
            return text[index + 1:], len(text)
        return _unquote(text[index:index + end + 1]), index + end + 1
    start = index
    while index < len(text) and text[index] not in stop:
        if text[index] == ":" and ":" in stop and index + 1 < len(text) and text[index + 1] not in " ,}":
            index += 1
            continue
        index += 1
    return _scalar(text[start:index]), index


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\n":
        index += 1
    return index
