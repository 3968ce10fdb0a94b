"""Log findings that appear or clear between two scans, each change once.

A finding's identity is (id, unit, pid, path, blueprint_id, service_id):
the same problem seen again in the next scan is not logged again, and a
finding whose objects changed (another pid, another path) counts as one
cleared and one appeared. Evidence is never logged, because it may hold
argv; summaries are redacted when the finding is made.

A host where hand-run processes come and go by the hundred would otherwise
log thousands of lines a minute. `EventBudget` caps the rate: what is over
the budget is counted in one `finding_events_suppressed` line per scan,
and the metrics still show every finding.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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


class EventBudget:
    """A token bucket for finding events: `burst` at once, refilled at `per_minute`."""

    def __init__(self, burst: int = 60, per_minute: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self.burst = burst
        self.per_second = per_minute / 60.0
        self._monotonic = monotonic
        self._tokens = float(burst)
        self._updated = monotonic()

    def take(self, requested: int) -> int:
        """Spend up to `requested` tokens; return how many were available."""
        now = self._monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
        granted = min(requested, int(self._tokens))
        self._tokens -= granted
        return granted


def log_changes(logger, appeared: list[Finding], cleared: list[Finding], budget: EventBudget | None = None) -> None:
    """Log `finding_appeared` and `finding_cleared` events, within `budget` when one is given.

    A check that raised (check-failed) is an error of bpm-doctor itself, so it
    logs at error level and is never held back by the budget. Other findings
    of warning or critical severity log at warning, and info findings and
    clearances log at info. Appearances go first, worst first, so that what
    the budget holds back is the least urgent.
    """
    held_appeared = held_cleared = 0
    if budget is not None:
        failed = [finding for finding in appeared if finding.id == "check-failed"]
        others = sorted((finding for finding in appeared if finding.id != "check-failed"),
                        key=lambda finding: -int(finding.severity))
        granted = budget.take(len(others) + len(cleared))
        kept_appeared = failed + others[:granted]
        kept_cleared = cleared[:max(0, granted - len(others))]
        held_appeared = len(appeared) - len(kept_appeared)
        held_cleared = len(cleared) - len(kept_cleared)
        appeared, cleared = kept_appeared, kept_cleared

    _log_each(logger, appeared, cleared)

    if held_appeared or held_cleared:
        logger.warning("finding_events_suppressed", appeared=held_appeared, cleared=held_cleared,
                       burst=budget.burst, per_minute=round(budget.per_second * 60))


def _log_each(logger, appeared: list[Finding], cleared: list[Finding]) -> None:
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
