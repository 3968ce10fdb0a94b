"""Nagios/Icinga plugin output: one status line with perfdata, details after it.

The plugin interface: the exit code is the state, the first line is
`SERVICE STATUS: text | perfdata`, and perfdata is
`'label'=value[UOM];warn;crit;min;max` separated by spaces.
"""

from __future__ import annotations

from bpm_doctor.model import Severity
from bpm_doctor.report import CheckResult, printable


def render(result: CheckResult) -> str:
    critical = result.count(Severity.CRITICAL)
    warning = result.count(Severity.WARNING)
    info = result.count(Severity.INFO)
    view = result.view
    unreadable = sum(result.snapshot.read_errors.values())
    worst = [f for f in result.findings if f.severity >= Severity.WARNING]
    if worst:
        ids = []
        for finding in worst:
            if finding.id not in ids:
                ids.append(finding.id)
        text = f"{critical} critical, {warning} warning: {', '.join(ids[:4])}" + (", ..." if len(ids) > 4 else "")
    elif result.blind_spots:
        text = "scan incomplete, " + "; ".join(result.blind_spots)
    else:
        text = f"{len(view.managers)} manager daemon(s), {len(view.instances)} instance(s), no problems"
    perfdata = " ".join([
        f"critical={critical};;1;0;",
        f"warning={warning};1;;0;",
        f"info={info};;;0;",
        f"managers={len(view.managers)};;;0;",
        f"instances={len(view.instances)};;;0;",
        f"unreadable={unreadable};;;0;",
    ])
    lines = [f"BPM-DOCTOR {result.status}: {text} | {perfdata}"]
    for finding in result.findings:
        lines.append(f"{finding.severity.label.upper()} {finding.id}: {finding.summary}")
    return printable("\n".join(lines) + "\n")
