"""Human-readable report: the verdict first, then each finding worst first."""

from __future__ import annotations

from bpm_doctor.model import Finding, Severity
from bpm_doctor.report import CheckResult, escape_controls, printable


def render(result: CheckResult) -> str:
    lines = [_headline(result)]
    if result.blind_spots:
        lines.append("the verdict is incomplete; could not read: " + "; ".join(result.blind_spots))
        if any(spot.startswith("permission-denied") for spot in result.blind_spots):
            lines.append("run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, to read other processes")
    if not result.findings and not result.blind_spots:
        lines.append(_quiet_reason(result))
    for finding in result.findings:
        lines.append("")
        lines.extend(render_finding(finding))
    # argv, paths and unit names come from the host: a newline or an escape
    # sequence in them must not forge a report line or reach the terminal.
    return printable("\n".join(escape_controls(line) for line in lines) + "\n")


def _headline(result: CheckResult) -> str:
    view = result.view
    counts = ", ".join(f"{result.count(s)} {s.label}" for s in (Severity.CRITICAL, Severity.WARNING, Severity.INFO))
    return (f"bpm-doctor: {result.status} ({counts}); {len(view.managers)} manager daemon(s), "
            f"{len(view.instances)} instance(s), source: {result.snapshot.source}")


def _quiet_reason(result: CheckResult) -> str:
    view = result.view
    if not view.managers and not view.instances and not any(info.kind for info in view.units.values()):
        return ("No Blueprint Manager, instance or blueprint unit was found on this host. "
                'Set role = "operator-host" in the configuration to require a manager here.')
    return "The manager daemon is the only launcher of instances; nothing to do."


def render_finding(finding: Finding) -> list[str]:
    where = []
    for name in ("unit", "pid", "path"):
        values = finding.field_values(name)
        if values:
            where.append(f"{name} {', '.join(map(str, values))}")
    if finding.line is not None:
        where.append(f"line {finding.line}")
    if finding.blueprint_id is not None or finding.service_id is not None:
        blueprint = "unknown" if finding.blueprint_id is None else finding.blueprint_id
        service = "unknown" if finding.service_id is None else finding.service_id
        where.append(f"blueprint {blueprint} service {service}")
    if finding.launcher:
        where.append(f"launcher {finding.launcher}")
    lines = [f"{finding.severity.label.upper()} {finding.id}" + (f" [{'; '.join(where)}]" if where else "")]
    lines.append(f"  {finding.summary}")
    for item in finding.evidence:
        lines.append(f"  - {item}")
    if finding.allowed_reason:
        lines.append(f"  allowed by configuration: {finding.allowed_reason}")
    lines.append(f"  remedy: {finding.remedy}")
    return lines
