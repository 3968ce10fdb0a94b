"""Render a check's result: the verdict plus text, JSON and Nagios formats."""

from __future__ import annotations

from dataclasses import dataclass, field

from bpm_doctor.controls import escape_controls  # noqa: F401 - the reports' escaping, used from here
from bpm_doctor.diagnose.view import HostView
from bpm_doctor.model import Finding, Severity, Snapshot

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

# Read errors that hide something a finding could depend on. A process that
# vanished between two reads does not: it is gone.
BLOCKING_REASON_PREFIXES = ("permission-denied", "systemctl-failed", "proc-unreadable", "unreadable:")


@dataclass
class CheckResult:
    """One check: the findings, the classified host, and the verdict."""

    findings: list[Finding]
    view: HostView
    snapshot: Snapshot
    exit_code: int = OK
    blind_spots: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return STATUS_NAMES[self.exit_code]

    def count(self, severity: Severity) -> int:
        return sum(1 for finding in self.findings if finding.severity == severity)


def printable(text: str) -> str:
    """Return text that encodes as strict UTF-8, with each undecodable byte written as `\\xNN`.

    argv, paths and unit names come from the host through os.listdir and
    psutil, which decode with surrogateescape, so they may carry lone
    surrogates that a UTF-8 stdout or output file rejects with UnicodeEncodeError.
    """
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that surrogateescape did not make
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def blind_spots(snapshot: Snapshot) -> list[str]:
    """List what the scan could not read that could change the verdict, one line per reason."""
    return [
        f"{reason}: {count}"
        for reason, count in sorted(snapshot.read_errors.items())
        if count and reason.startswith(BLOCKING_REASON_PREFIXES)
    ]


def verdict(findings: list[Finding], snapshot: Snapshot, view: HostView) -> CheckResult:
    """Compute the Nagios exit code: 2 critical, 1 warning, 0 ok, 3 when blind spots could hide a problem.

    A critical finding is reported as CRITICAL even when the scan was partial. Short of that,
    a partial scan is UNKNOWN rather than a possibly false OK or WARNING.
    """
    result = CheckResult(findings, view, snapshot, blind_spots=blind_spots(snapshot))
    worst = max((finding.severity for finding in findings), default=Severity.INFO)
    if worst == Severity.CRITICAL:
        result.exit_code = CRITICAL
    elif result.blind_spots:
        result.exit_code = UNKNOWN
    elif worst == Severity.WARNING:
        result.exit_code = WARNING
    return result
