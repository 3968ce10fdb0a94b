"""Read environment files the two ways a manager box reads them.

The same settings file is often both a unit's `EnvironmentFile=` (read by
systemd) and cargo-tangle's `--settings-file` (read by the `dotenv` crate,
version 0.15). The two disagree on inline comments, `export` lines, quotes
and `$VAR` references. dotenv does not override a variable already set, so
when both read one file the manager ends up with systemd's reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Assignment:
    """One `NAME=value` assignment and the 1-based line it starts on."""

    name: str
    value: str
    line: int


def parse_systemd(text: str) -> list[Assignment]:
    """Parse an `EnvironmentFile=` the way systemd 252 does.

    Lines starting with `#` or `;` are comments. A `#` later in the line is
    part of the value. A trailing backslash joins the next line. Quotes may
    wrap all or part of a value. `export NAME=value` is not a valid name, so
    systemd ignores the line.
    """
    assignments: list[Assignment] = []
    for start_line, logical in _logical_lines(text):
        stripped = logical.strip()
        if not stripped or stripped[0] in "#;":
            continue
        name, equals, raw_value = stripped.partition("=")
        name = name.strip()
        if not equals or not _NAME.match(name):
            continue
        assignments.append(Assignment(name, _systemd_value(raw_value.strip()), start_line))
    return assignments


def _logical_lines(text: str) -> list[tuple[int, str]]:
    joined: list[tuple[int, str]] = []
    pending: str | None = None
    pending_start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if pending is not None:
            pending += line
        else:
            pending, pending_start = line, number
        if pending.endswith("\\") and not pending.endswith("\\\\"):
            pending = pending[:-1]
            continue
        joined.append((pending_start, pending))
        pending = None
    if pending is not None:
        joined.append((pending_start, pending))
    return joined


def _systemd_value(raw: str) -> str:
    # systemd concatenates quoted and unquoted parts and drops the quotes;
    # whitespace outside quotes is kept only between words.
    value: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(raw):
        char = raw[index]
        if quote is None and char in "\"'":
            quote = char
        elif quote is not None and char == quote:
            quote = None
        elif char == "\\" and index + 1 < len(raw) and quote != "'":
            index += 1
            value.append(raw[index])
        elif quote is None and char.isspace():
            while index + 1 < len(raw) and raw[index + 1].isspace():
                index += 1
            if index + 1 < len(raw) and raw[index + 1] not in "\"'":
                value.append(" ")
        else:
            value.append(char)
        index += 1
    return "".join(value)


def parse_dotenv(text: str) -> list[Assignment]:
    """Parse a settings file the way the dotenv 0.15 crate does.

    `export ` before a name is allowed. An unquoted value ends at whitespace
    followed by `#`. Single quotes are literal; double quotes allow escapes.
    `$NAME` and `${NAME}` are expanded from earlier lines of the same file;
    a name defined nowhere in the file is kept as written, because its value
    would come from the process environment, which a file alone does not show.
    """
    assignments: list[Assignment] = []
    known: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = split_dotenv_line(line)
        if parsed is None:
            continue
        name, raw_value, quote, _comment = parsed
        if quote == "'":
            value = raw_value
        else:
            value = _expand(raw_value, known)
        known[name] = value
        assignments.append(Assignment(name, value, number))
    return assignments


def split_dotenv_line(line: str) -> tuple[str, str, str, str] | None:
    """Split one dotenv line into (name, raw value, quote, inline comment).

    Returns None for blank lines, comments and lines that are not assignments.
    The raw value has its quotes removed; `quote` is `"`, `'` or "".
    """
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith("export "):
        stripped = stripped[len("export "):].lstrip()
    name, equals, rest = stripped.partition("=")
    name = name.strip()
    if not equals or not _NAME.match(name):
        return None
    rest = rest.lstrip()
    if rest[:1] in ("'", '"'):
        quote = rest[0]
        closing = _find_closing_quote(rest, quote)
        if closing < 0:
            return name, rest[1:], quote, ""
        after = rest[closing + 1:].strip()
        comment = after if after.startswith("#") else ""
        return name, rest[1:closing], quote, comment
    match = re.search(r"\s#", rest)
    if match:
        return name, rest[: match.start()].rstrip(), "", rest[match.start():].strip()
    return name, rest.rstrip(), "", ""


def _find_closing_quote(text: str, quote: str) -> int:
    index = 1
    while index < len(text):
        if text[index] == "\\" and quote == '"':
            index += 2
            continue
        if text[index] == quote:
            return index
        index += 1
    return -1


def _expand(value: str, known: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return known.get(name, match.group(0))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", substitute, value)


def as_dict(assignments: list[Assignment]) -> dict[str, str]:
    """Return the assignments as a mapping; a later line wins, as in both readers."""
    return {assignment.name: assignment.value for assignment in assignments}


@dataclass(frozen=True)
class Divergence:
    """A variable that systemd and dotenv read differently."""

    name: str
    line: int
    systemd_value: str | None
    dotenv_value: str | None


def divergences(text: str) -> list[Divergence]:
    """List the variables whose systemd and dotenv readings differ, by line."""
    systemd = {a.name: a for a in parse_systemd(text)}
    dotenv = {a.name: a for a in parse_dotenv(text)}
    found: list[Divergence] = []
    for name in sorted(set(systemd) | set(dotenv), key=lambda n: (dotenv.get(n) or systemd[n]).line):
        left = systemd.get(name)
        right = dotenv.get(name)
        left_value = left.value if left else None
        right_value = right.value if right else None
        if left_value != right_value:
            line = (right or left).line
            found.append(Divergence(name, line, left_value, right_value))
    return found
