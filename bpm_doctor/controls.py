"""Escape control characters so that text from the host cannot break a line or steer a terminal.

Argv words, paths and unit names come from other users' processes and
files. Reports and snapshots write them one per line, where a raw line
break would start a fake line and an escape sequence would reach the
reader's terminal.
"""

from __future__ import annotations

import re

# C0 and C1 control characters and DEL, and the Unicode line and paragraph
# separators, which str.splitlines also treats as line breaks. Also the
# bidirectional marks, embeddings, overrides and isolates, because they can
# make a terminal show text in another order than it has.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """Write each control character in `text` as a backslash escape, the way repr() does.

    Backslashes already in the text are kept, so `\\n` in the output can
    also come from a name that contains a backslash and an n.
    """
    return _CONTROL.sub(_escape_one, text)


def _escape_one(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
