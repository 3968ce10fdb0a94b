"""Inline suppressions: `# bpm-doctor: ignore[ID,...] reason`.

A suppression comment silences the findings with the listed ids on its own
line or on the line just below it. In Markdown it may be an HTML comment
(`<!-- bpm-doctor: ignore[ID] reason -->`). Findings without a line (about
a whole file) are silenced by a suppression in the file's leading comment
block. A file linter may also name an anchor line for a finding, such as
the opening fence of a code block or the command that writes a
here-document. A suppression on or just above the anchor applies as well.

A suppression needs a reason. One without a reason silences nothing and is
reported as `suppression-without-reason`, so a finding cannot disappear
without someone saying why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bpm_doctor.model import Finding

_MARKER = re.compile(
    r"(?:#|;|//|<!--)[^\n]*?\bbpm-doctor:\s*ignore\[(?P<ids>[^\]]*)\](?P<reason>[^\n]*)$"
)
_COMMENT_START = ("#", ";", "<!--", "//")


@dataclass(frozen=True)
class Suppression:
    """One suppression comment: the ids it names, its reason and its line."""

    ids: frozenset[str]
    reason: str
    line: int


def find(text: str) -> list[Suppression]:
    """Return the suppression comments of a file, in line order."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _MARKER.search(line)
        if match is None:
            continue
        ids = frozenset(part.strip() for part in match.group("ids").split(",") if part.strip())
        reason = match.group("reason").strip()
        reason = reason.removesuffix("-->").strip()
        found.append(Suppression(ids, reason, number))
    return found


def leading_comment_lines(text: str) -> set[int]:
    """Return the lines of a file's leading comment block (after any `#!` line)."""
    lines: set[int] = set()
    in_html_comment = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if number == 1 and stripped.startswith("#!"):
            continue
        if in_html_comment:
            lines.add(number)
            in_html_comment = "-->" not in stripped
            continue
        if not stripped:
            continue
        if stripped.startswith("<!--"):
            lines.add(number)
            in_html_comment = "-->" not in stripped
            continue
        if stripped.startswith(_COMMENT_START):
            lines.add(number)
            continue
        break
    return lines


def apply(findings: list[Finding], text: str, anchors: dict[int, int] | None = None,
          make_finding=None, path: str = "") -> tuple[list[Finding], list[Finding], list[Finding]]:
    """Split findings into (active, suppressed) and report suppressions without a reason.

    Returns (active, suppressed, reasonless) where `reasonless` contains one
    `suppression-without-reason` finding per comment that gives no reason,
    built with `make_finding(id, summary, path=..., line=...)`.
    """
    anchors = anchors or {}
    suppressions = find(text)
    if not suppressions:
        return list(findings), [], []
    header = leading_comment_lines(text)
    by_line = {s.line: s for s in suppressions}
    active: list[Finding] = []
    suppressed: list[Finding] = []
    for finding in findings:
        match = _matching(finding, by_line, header, anchors)
        if match is None or not match.reason:
            active.append(finding)
            continue
        finding.suppressed = True
        finding.allowed_reason = match.reason
        finding.evidence.append(f"suppressed by the comment at line {match.line}")
        suppressed.append(finding)
    reasonless = []
    for suppression in suppressions:
        if suppression.reason or make_finding is None:
            continue
        ids = ", ".join(sorted(suppression.ids)) or "no id"
        reasonless.append(make_finding(
            "suppression-without-reason",
            f"the suppression of {ids} gives no reason, so it silences nothing",
            path=path, line=suppression.line,
        ))
    return active, suppressed, reasonless


def _matching(finding: Finding, by_line: dict[int, Suppression], header: set[int],
              anchors: dict[int, int]) -> Suppression | None:
    if finding.line is None:
        candidates = sorted(line for line in by_line if line in header)
    else:
        targets = [finding.line]
        if finding.line in anchors:
            targets.append(anchors[finding.line])
        candidates = [line for target in targets for line in (target, target - 1)]
    for line in candidates:
        suppression = by_line.get(line)
        if suppression is not None and finding.id in suppression.ids:
            return suppression
    return None
