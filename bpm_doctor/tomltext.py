"""Find the lines of keys in TOML text, and reword tomllib's syntax errors.

tomllib returns no positions for a valid document, so a configuration error
about a value is placed by scanning the text for the key that set it. A
syntax error carries tomllib's position, but in parser wording such as
"Expected '=' after a key in a key/value pair", which `describe_error`
turns into a plain sentence.
"""

from __future__ import annotations

import ast
import bisect
import re
import tomllib

# Longest first, so that `"""` is not read as an empty string and a quote.
_QUOTES = ('"""', "'''", '"', "'")
_POSITION = re.compile(r"\s*\(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)$")

# NOTE: the patterns match the messages of CPython 3.11's tomllib. A message
# that none matches (from another Python version) keeps tomllib's wording.
_REWORDINGS = tuple((re.compile(pattern), wording) for pattern, wording in (
    (r"Invalid statement", "a line must start with a key, a [table] header or a comment"),
    (r"Expected newline or end of document after a statement",
     "unexpected text after the value: each key = value needs its own line"),
    (r"Expected '=' after a key in a key/value pair", "missing '=' after the key"),
    (r"Invalid initial character for a key part",
     "invalid key: use letters, digits, '_' and '-', or put the key in quotes"),
    (r"Expected '\]' at the end of a table declaration", "missing ']' at the end of the [table] header"),
    (r"Expected '\]\]' at the end of an array declaration", "missing ']]' at the end of the [[table]] header"),
    (r"Cannot declare (?P<key>.+) twice", "table {key} is declared twice"),
    (r"Cannot overwrite a value", "duplicate key: this key is already set"),
    (r"Cannot redefine namespace (?P<key>.+)", "table {key} has its own [header], so a dotted key cannot add to it"),
    (r"Cannot mutate immutable namespace (?P<key>.+)", "{key} is an inline table or array and cannot be extended"),
    (r"Duplicate inline table key (?P<key>.+)", "duplicate key {key} in an inline table"),
    (r"Unclosed array", "unclosed array: missing ']'"),
    (r"Unclosed inline table", "unclosed inline table: missing '}}'"),
    (r"Unterminated string", "unterminated string: missing the closing quote"),
    (r"(?:Illegal|Found invalid) character '\\n'", "unterminated string: missing the closing quote on this line"),
    (r"(?:Illegal|Found invalid) character (?P<key>.+)", "control character {key} is not allowed here"),
    (r"Expected \"'(?:'')?\"", "unterminated literal string: missing the closing quote"),
    (r"Expected (?P<key>.+)", "missing {key}"),
    (r"Unescaped '\\' in a string",
     "invalid escape sequence: write a backslash as \\\\, or use a 'literal string'"),
    (r"Invalid hex value", "invalid \\u or \\U escape: expected hex digits"),
    (r"Escaped character is not a Unicode scalar value", "invalid \\u or \\U escape: not a Unicode character"),
    (r"Invalid date or datetime", "invalid date or time"),
    (r"Invalid value", "invalid value: expected a quoted string, number, true, false, date, array or inline table"),
))


def describe_error(error: tomllib.TOMLDecodeError, text: str) -> tuple[int, str]:
    """Return the line of a syntax error in `text` and a plain description of it.

    tomllib gives no line for an error at the end of the document. When a
    value is still open there, the line is that of its key. Otherwise the
    line is the last one with content.
    """
    raw = str(error)
    position = _POSITION.search(raw)
    description = _reword(raw[:position.start()] if position else raw)
    if position and position["line"]:
        return int(position["line"]), f"{description} (column {position['column']})"
    open_line = _scan(text)[1]
    if open_line is not None:
        return open_line, f"{description} before the end of the file"
    return text.rstrip().count("\n") + 1, description


def key_lines(text: str) -> dict[tuple, int]:
    """Map each key path of a valid TOML document to the line that first sets it.

    A path is a tuple of keys: ("serve", "listen") for `listen` under
    `[serve]` and for `serve.listen = ...`. An entry of an array of tables
    adds its index, ("allow", 0, "unit"). A table that a header or dotted
    key creates gets the line of its first mention. Keys inside inline
    tables are not mapped.
    """
    return _scan(text)[0]


def _reword(message: str) -> str:
    for pattern, wording in _REWORDINGS:
        match = pattern.fullmatch(message)
        if match:
            return wording.format(**{name: _key_name(value) for name, value in match.groupdict().items()})
    return message[:1].lower() + message[1:] or "syntax error"


def _key_name(text: str) -> str:
    """Write tomllib's key tuple `('a', 'b')` as `a.b`, and return other text unchanged."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return ".".join(map(str, value)) if isinstance(value, tuple) else text


def _scan(text: str) -> tuple[dict[tuple, int], int | None]:
    """Return the key lines of `text`, and the line of a statement whose value is open at the end.

    The scan trusts the text to be valid TOML up to any open value, because
    it runs on a document that tomllib accepted or that failed at its end.
    """
    newlines = [match.start() for match in re.finditer("\n", text)]
    lines: dict[tuple, int] = {}
    array_counts: dict[tuple, int] = {}
    table: tuple = ()
    pos = 0
    while True:
        pos = _skip_blank(text, pos)
        if pos >= len(text):
            return lines, None
        line = bisect.bisect_left(newlines, pos) + 1
        if text.startswith("[", pos):
            table = _read_header(text, pos, array_counts, table)
            _record(lines, table, line)
            pos = _line_end(text, pos)
            continue
        equals = _find_on_line(text, pos, "=")
        if equals < 0:
            pos = _line_end(text, pos)
            continue
        key = _decode_key(text[pos:equals])
        if key:
            _record(lines, table + key, line)
        pos, is_open = _skip_value(text, equals + 1)
        if is_open:
            return lines, line


def _read_header(text: str, pos: int, array_counts: dict[tuple, int], table: tuple) -> tuple:
    """Return the table path that a `[table]` or `[[table]]` header at `pos` opens."""
    is_array = text.startswith("[[", pos)
    start = pos + (2 if is_array else 1)
    end = _find_on_line(text, start, "]")
    header = _decode_key(text[start:end]) if end >= 0 else None
    if not header:
        return table
    if not is_array:
        return _resolve(header, array_counts)
    path = _resolve(header[:-1], array_counts) + header[-1:]
    array_counts[path] = array_counts.get(path, -1) + 1
    return path + (array_counts[path],)


def _resolve(keys: tuple, array_counts: dict[tuple, int]) -> tuple:
    """Insert the current entry index after each key that names an array of tables."""
    path: tuple = ()
    for key in keys:
        path += (key,)
        if path in array_counts:
            path += (array_counts[path],)
    return path


def _record(lines: dict[tuple, int], path: tuple, line: int) -> None:
    for length in range(1, len(path) + 1):
        lines.setdefault(path[:length], line)


def _decode_key(key_text: str) -> tuple | None:
    """Decode a dotted key, quoted parts and escapes included, by letting tomllib parse it."""
    try:
        data = tomllib.loads(f"{key_text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    keys = []
    while isinstance(data, dict) and len(data) == 1:
        (key, data), = data.items()
        keys.append(key)
    return tuple(keys)


def _skip_blank(text: str, pos: int) -> int:
    while pos < len(text):
        if text[pos] == "#":
            pos = _line_end(text, pos)
        elif text[pos] in " \t\r\n":
            pos += 1
        else:
            break
    return pos


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _find_on_line(text: str, pos: int, char: str) -> int:
    """Return the index of `char` outside quotes on the line from `pos`, else -1."""
    while pos < len(text) and text[pos] != "\n":
        if text[pos] in "\"'":
            pos = _string_end(text, pos, text[pos])
            if pos < 0:
                return -1
            continue
        if text[pos] == char:
            return pos
        pos += 1
    return -1


def _skip_value(text: str, pos: int) -> tuple[int, bool]:
    """Return the end of the value that starts at `pos`, and whether it is still open at the end of the text."""
    depth = 0
    while pos < len(text):
        char = text[pos]
        if char == "\n" and depth == 0:
            return pos, False
        if char == "#":
            pos = _line_end(text, pos)
            continue
        quote = next((quote for quote in _QUOTES if text.startswith(quote, pos)), None)
        if quote:
            pos = _string_end(text, pos, quote)
            if pos < 0:
                return len(text), True
            continue
        if char in "[{":
            depth += 1
        elif char in "]}" and depth:
            depth -= 1
        pos += 1
    return pos, depth > 0


def _string_end(text: str, pos: int, quote: str) -> int:
    """Return the index after the string that opens with `quote` at `pos`, or -1 when it is not closed.

    A one-line string that reaches the end of its line counts as not closed.
    """
    escapes = quote.startswith('"')
    pos += len(quote)
    while pos < len(text):
        if escapes and text[pos] == "\\":
            pos += 2
            continue
        if text.startswith(quote, pos):
            end = pos + len(quote)
            # A multi-line string may end in up to two more quotes that belong to its content.
            while len(quote) == 3 and end - pos < 5 and text.startswith(quote[0], end):
                end += 1
            return end
        if len(quote) == 1 and text[pos] == "\n":
            return -1
        pos += 1
    return -1
