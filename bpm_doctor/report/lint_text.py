"""Text report of `bpm-doctor lint`, one finding per line as compilers print them.

    deploy/quill-runtime.service:44: critical direct-run-unit: unit ... bypassing the Blueprint Manager
        ExecStart: /srv/quill/bin/quill-operator run

A finding about a whole file has no line number. Evidence follows on
indented lines, secret values already redacted. The last line sums up the
run; suppressed findings are counted there, not listed.

Control characters in file names, and so in the messages that quote them,
are escaped (`\\n`, `\\t`, `\\x1b`), so a name cannot split a finding
over two lines or send escape sequences to the terminal.
"""

from __future__ import annotations

from bpm_doctor.lint import LintResult
from bpm_doctor.model import Finding, Severity
from bpm_doctor.report import escape_controls

def location(finding: Finding) -> str:
    path = finding.path if isinstance(finding.path, str) else ",".join(finding.path or [])
    return f"{path}:{finding.line}" if finding.line is not None else path


def render(result: LintResult) -> str:
    lines = []
    for finding in result.findings:
        message = finding.summary
        if finding.allowed_reason:
            message += f" (allowed: {finding.allowed_reason})"
        lines.append(escape_controls(f"{location(finding)}: {finding.severity.label} {finding.id}: {message}"))
        lines.extend(f"    {escape_controls(item)}" for item in finding.evidence)
    lines.append(summary(result))
    return "\n".join(lines) + "\n"


def summary(result: LintResult) -> str:
    counts = {severity: 0 for severity in Severity}
    for finding in result.findings:
        counts[finding.severity] += 1
    text = (f"bpm-doctor lint: {len(result.findings)} finding(s) ({counts[Severity.CRITICAL]} critical, "
            f"{counts[Severity.WARNING]} warning, {counts[Severity.INFO]} info), "
            f"{len(result.suppressed)} suppressed, in {len(result.files)} file(s)")
    if result.errors:
        text += f"; {len(result.errors)} path(s) could not be checked"
    return text
