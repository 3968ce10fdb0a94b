"""Log findings that appear or clear between two scans, each change once.

A finding's identity is (id, unit, pid, path, blueprint_id, service_id):
the same problem seen again in the next scan is not logged again, and a
finding whose objects changed (another pid, another path) counts as one
cleared and one appeared. Evidence is never logged, because it may hold
argv; summaries are redacted when the finding is made.
"""

from __future__ import annotations

from bpm_doctor.model import Finding, Severity

Identity = tuple

_LOGGED_FIELDS = ("pid", "unit", "path", "blueprint_id", "service_id", "launcher", "allowed_reason")


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def finding_identity(finding: Finding) -> Identity:
    """Return the key that decides whether two scans show the same finding."""
    return (
        finding.id,
        _hashable(finding.unit),
        _hashable(finding.pid),
        _hashable(finding.path),
        finding.blueprint_id,
        finding.service_id,
    )


def index(findings: list[Finding]) -> dict[Identity, Finding]:
    """Map each finding's identity to the finding; the first of equal identities wins."""
    indexed: dict[Identity, Finding] = {}
    for finding in findings:
        indexed.setdefault(finding_identity(finding), finding)
    return indexed


def changes(previous: dict[Identity, Finding], current: dict[Identity, Finding]) -> tuple[list[Finding], list[Finding]]:
    """Return (appeared, cleared) findings between two indexed scans, in scan order."""
    appeared = [finding for key, finding in current.items() if key not in previous]
    cleared = [finding for key, finding in previous.items() if key not in current]
    return appeared, cleared


def event_fields(finding: Finding) -> dict:
    """Return the log fields of a finding: identity, severity, summary and launcher, no evidence."""
    fields = {"id": finding.id, "severity": finding.severity.label, "summary": finding.summary}
    for name in _LOGGED_FIELDS:
        value = getattr(finding, name)
        if value is not None:
            fields[name] = value
    return fields


def log_changes(logger, appeared: list[Finding], cleared: list[Finding]) -> None:
    """Log `finding_appeared` and `finding_cleared` events.

    A check that raised (check-failed) is an error of bpm-doctor itself, so it
    logs at error level. Other findings of warning or critical severity log at
    warning, and info findings and clearances log at info.
    """
    for finding in appeared:
        fields = event_fields(finding)
        if finding.id == "check-failed":
            logger.error("finding_appeared", **fields)
        elif finding.severity >= Severity.WARNING:
            logger.warning("finding_appeared", **fields)
        else:
            logger.info("finding_appeared", **fields)
    for finding in cleared:
        logger.info("finding_cleared", **event_fields(finding))
