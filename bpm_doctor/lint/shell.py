"""Split shell text into simple commands, with line numbers and here-documents.

This is a tolerant reader of the POSIX shell grammar, enough to find which
programs a deploy script starts and which files it writes. It removes
comments, joins backslash-newline continuations, removes quotes, and reads
here-document bodies (`<<EOF`, `<<-EOF`, `<<'EOF'`). It does not expand
variables or run anything. Control-flow keywords are skipped, so commands
inside `if`, loops and functions are read in text order. Unbalanced quotes
and other syntax errors do not raise: the rest of the text is read as well
as it can be, which the property tests in tests/lint check on random text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Operators, longest first so that `&&` wins over `&`.
_OPERATORS = (
    "&>>", "<<<", "<<-", "&&", "||", ";;", "|&", "&>", ">>", ">&", "<<", "<&", "<>", ">|",
    ";", "&", "|", "(", ")", "<", ">",
)
_SEPARATORS = {";", "&", "&&", "||", "|", "|&", "(", ")", ";;", "\n"}
_REDIRECTIONS = {"&>>", "<<<", "<<-", "&>", ">>", ">&", "<<", "<&", "<>", ">|", "<", ">"}
# Words that start or end a compound command; the command they introduce
# follows them on the same line.
_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "esac", "time"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")


@dataclass
class HereDocument:
    """A here-document: its delimiter and body lines with their 1-based line numbers."""

    delimiter: str
    quoted: bool
    strip_tabs: bool
    line: int
    body: list[tuple[int, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(line for _number, line in self.body)

    @property
    def first_body_line(self) -> int:
        return self.body[0][0] if self.body else self.line + 1


@dataclass
class Redirection:
    """A redirection operator with its target word, or its here-document."""

    operator: str
    target: str | None
    here_document: HereDocument | None = None


@dataclass
class Command:
    """One simple command: leading assignments, words, redirections.

    `line` is the line of the first word or assignment. `background` is True
    for a command followed by `&`; `pipeline` is True when it is part of a
    pipeline (`|`).
    """

    assignments: list[tuple[str, str]] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    redirections: list[Redirection] = field(default_factory=list)
    line: int = 0
    background: bool = False
    pipeline: bool = False

    @property
    def here_documents(self) -> list[HereDocument]:
        return [r.here_document for r in self.redirections if r.here_document is not None]

    def output_targets(self) -> list[str]:
        """Return the files this command writes with `>`, `>>`, `>|` or `&>`."""
        return [r.target for r in self.redirections
                if r.operator in (">", ">>", ">|", "&>", "&>>") and r.target is not None]


@dataclass
class _Token:
    kind: str  # "word", "op" or "newline"
    text: str
    line: int
    here_document: HereDocument | None = None


class _Lexer:
    def __init__(self, text: str, first_line: int):
        self.text = text
        self.position = 0
        self.line = first_line
        self.tokens: list[_Token] = []
        self.pending: list[HereDocument] = []
        self.expect_delimiter: tuple[str, HereDocument] | None = None

    def run(self) -> list[_Token]:
        text = self.text
        while self.position < len(text):
            char = text[self.position]
            if char == "\\" and text.startswith("\\\n", self.position):
                self.position += 2
                self.line += 1
            elif char in " \t\r":
                self.position += 1
            elif char == "\n":
                self.tokens.append(_Token("newline", "\n", self.line))
                self.position += 1
                self.line += 1
                self._read_here_documents()
            elif char == "#":
                end = text.find("\n", self.position)
                self.position = len(text) if end < 0 else end
            elif char in ";&|()<>":
                self._read_operator()
            else:
                self._read_word()
        return self.tokens

    def _read_operator(self, prefix: str = "") -> None:
        for operator in _OPERATORS:
            if self.text.startswith(operator, self.position):
                self.position += len(operator)
                self.tokens.append(_Token("op", prefix + operator, self.line))
                if operator in ("<<", "<<-"):
                    document = HereDocument("", False, operator == "<<-", self.line)
                    self.expect_delimiter = (operator, document)
                return
        self.position += 1

    def _read_word(self) -> None:
        text = self.text
        start_line = self.line
        parts: list[str] = []
        quoted = False
        while self.position < len(text):
            char = text[self.position]
            if char == "\\":
                if text.startswith("\\\n", self.position):
                    self.position += 2
                    self.line += 1
                    continue
                if self.position + 1 < len(text):
                    parts.append(text[self.position + 1])
                self.position += 2
                quoted = True
            elif char == "'":
                quoted = True
                parts.append(self._read_until("'", self.position + 1))
            elif char == '"':
                quoted = True
                parts.append(self._read_double_quoted())
            elif char == "`":
                parts.append("`" + self._read_until("`", self.position + 1) + "`")
            elif char == "$" and text.startswith("$(", self.position):
                parts.append(self._read_balanced("(", ")"))
            elif char == "$" and text.startswith("${", self.position):
                parts.append(self._read_balanced("{", "}"))
            elif char in " \t\r\n;&|()<>":
                break
            else:
                parts.append(char)
                self.position += 1
        word = "".join(parts)
        if not quoted and word.isdigit() and self.position < len(text) and text[self.position] in "<>":
            self._read_operator(prefix=word)
            return
        token = _Token("word", word, start_line)
        if self.expect_delimiter is not None:
            _operator, document = self.expect_delimiter
            document.delimiter = word
            document.quoted = quoted
            self.pending.append(document)
            token.here_document = document
            self.expect_delimiter = None
        self.tokens.append(token)

    def _read_until(self, closing: str, start: int) -> str:
        end = self.text.find(closing, start)
        if end < 0:
            end = len(self.text)
        value = self.text[start:end]
        self.line += value.count("\n")
        self.position = end + 1
        return value

    def _read_double_quoted(self) -> str:
        text = self.text
        self.position += 1
        parts: list[str] = []
        while self.position < len(text):
            char = text[self.position]
            if char == "\\" and self.position + 1 < len(text):
                following = text[self.position + 1]
                if following == "\n":
                    self.line += 1
                elif following in '"\\$`':
                    parts.append(following)
                else:
                    parts.append(char + following)
                self.position += 2
            elif char == '"':
                self.position += 1
                break
            elif char == "$" and text.startswith("$(", self.position):
                parts.append(self._read_balanced("(", ")"))
            else:
                if char == "\n":
                    self.line += 1
                parts.append(char)
                self.position += 1
        return "".join(parts)

    def _read_balanced(self, opening: str, closing: str) -> str:
        # Reads `$(...)` or `${...}` with nesting; quotes inside are kept as text.
        text = self.text
        start = self.position
        self.position += 2
        depth = 1
        quote: str | None = None
        while self.position < len(text) and depth:
            char = text[self.position]
            if char == "\n":
                self.line += 1
            if quote is not None:
                if char == "\\" and quote == '"':
                    self.position += 1
                elif char == quote:
                    quote = None
            elif char in "'\"":
                quote = char
            elif char == "\\":
                self.position += 1
            elif char == opening:
                depth += 1
            elif char == closing:
                depth -= 1
            self.position += 1
        return text[start:self.position]

    def _read_here_documents(self) -> None:
        lines = self.text[self.position:].split("\n")
        consumed = 0
        for document in self.pending:
            while consumed < len(lines):
                raw = lines[consumed]
                consumed += 1
                candidate = raw.lstrip("\t") if document.strip_tabs else raw
                if candidate.rstrip() == document.delimiter:
                    break
                document.body.append((self.line, candidate))
                self.line += 1
            else:
                continue
            self.line += 1
        self.pending = []
        if consumed:
            skipped = "\n".join(lines[:consumed])
            self.position += len(skipped) + (1 if consumed < len(lines) else 0)


def parse(text: str, first_line: int = 1) -> list[Command]:
    """Split shell text into simple commands in text order.

    `first_line` is the line number of the text's first line, so commands
    parsed from an excerpt (a code block, a `-c` string) keep file lines.
    """
    tokens = _Lexer(text, first_line).run()
    commands: list[Command] = []
    current = Command()
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token.kind == "newline" or (token.kind == "op" and token.text in _SEPARATORS):
            if current.words or current.assignments or current.redirections:
                current.background = token.text == "&"
                current.pipeline = current.pipeline or token.text in ("|", "|&")
                commands.append(current)
            current = Command(pipeline=token.text in ("|", "|&"))
            continue
        if token.kind == "op":
            operator = token.text.lstrip("0123456789")
            if operator in _REDIRECTIONS:
                target_token = tokens[index] if index < len(tokens) and tokens[index].kind == "word" else None
                if target_token is not None:
                    index += 1
                current.redirections.append(Redirection(
                    operator,
                    target_token.text if target_token else None,
                    target_token.here_document if target_token else None,
                ))
                if not current.line:
                    current.line = token.line
            continue
        word = token.text
        if not current.words and not current.assignments and word in _KEYWORDS:
            continue
        if not current.line:
            current.line = token.line
        if not current.words and _ASSIGNMENT.match(word):
            name, _equals, value = word.partition("=")
            current.assignments.append((name.rstrip("+"), value))
            continue
        current.words.append(word)
    if current.words or current.assignments or current.redirections:
        commands.append(current)
    return [command for command in commands if not _is_compound_header(command)]


def _is_compound_header(command: Command) -> bool:
    """Return True for `for x in ...`, `case ... in` and `function f` headers, which start nothing."""
    return bool(command.words) and command.words[0] in ("for", "case", "select", "function")
