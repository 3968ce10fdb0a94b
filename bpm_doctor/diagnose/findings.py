"""Build findings with the catalogue's severity and remedy filled in."""

from __future__ import annotations

from bpm_doctor import catalogue
from bpm_doctor.model import Finding, Severity


def make(finding_id: str, summary: str, severity: Severity | None = None, **fields) -> Finding:
    """Return a Finding for a catalogue id; `severity` overrides the catalogue default."""
    entry = catalogue.BY_ID[finding_id]
    for name in ("pid", "unit", "path"):
        value = fields.get(name)
        if isinstance(value, (list, set, tuple)):
            values = sorted(set(value))
            fields[name] = values[0] if len(values) == 1 else (values or None)
    return Finding(
        id=finding_id,
        severity=severity if severity is not None else entry.severity,
        summary=summary,
        remedy=fields.pop("remedy", None) or entry.remedy,
        **fields,
    )
