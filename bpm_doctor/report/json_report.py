"""JSON report, schema `bpm-doctor/check/1`.

Top-level keys: `schema`, `version`, `generated_at` (ISO 8601, UTC),
`source`, `status` (OK, WARNING, CRITICAL, UNKNOWN), `exit_code`,
`counts` (by severity), `complete` (False when read errors could hide a
problem), `read_errors` (count by reason), `findings` and `inventory`.
A finding has `id`, `severity`, `summary`, `remedy`, `evidence` and,
where they apply, `pid`, `unit`, `path`, `line`, `blueprint_id`,
`service_id`, `launcher` and `allowed_reason`. `pid`, `unit` and `path`
hold a list when a finding concerns several objects. New keys may be added
within schema version 1; removing or changing one raises the version.
"""

from __future__ import annotations

import datetime
import json

from bpm_doctor import __version__, identify, redact
from bpm_doctor.diagnose.view import manager_sites
from bpm_doctor.model import Finding, Severity
from bpm_doctor.report import CheckResult, printable

SCHEMA = "bpm-doctor/check/1"
_OPTIONAL_FIELDS = ("pid", "unit", "path", "line", "blueprint_id", "service_id", "launcher", "allowed_reason")


def finding_to_dict(finding: Finding) -> dict:
    data = {
        "id": finding.id,
        "severity": finding.severity.label,
        "summary": finding.summary,
        "remedy": finding.remedy,
        "evidence": list(finding.evidence),
    }
    for name in _OPTIONAL_FIELDS:
        value = getattr(finding, name)
        if value is not None:
            data[name] = value
    return data


def to_dict(result: CheckResult) -> dict:
    return {
        "schema": SCHEMA,
        "version": __version__,
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": result.snapshot.source,
        "status": result.status,
        "exit_code": result.exit_code,
        "counts": {severity.label: result.count(severity) for severity in Severity},
        "complete": not result.blind_spots,
        "read_errors": dict(sorted(result.snapshot.read_errors.items())),
        "findings": [finding_to_dict(finding) for finding in result.findings],
        "inventory": inventory(result),
    }


def inventory(result: CheckResult) -> dict:
    view = result.view
    processes = result.snapshot.processes
    managers = []
    for site in manager_sites(view):
        managers.append({
            "pid": site.pid,
            "unit": site.unit,
            "executable": site.executable,
            "argv": redact.redact_argv(site.argv),
            "settings_file": site.paths.settings_file,
            "data_dir": site.paths.data_dir,
            "runtime_dir": site.paths.runtime_root,
            "cache_dir": site.paths.cache_root,
            "running": site.pid is not None,
        })
    commands = [
        {"pid": pid, "command": identify.manager_command_name(processes[pid].argv)} for pid in view.manager_commands
    ]
    instances = []
    for pid, info in sorted(view.instances.items()):
        instances.append({
            "pid": pid,
            "blueprint_id": info.blueprint_id,
            "service_id": info.service_id,
            "executable": processes[pid].exe,
            "managed": info.managed,
            "orphan": info.orphan,
            "registration": info.registration,
            "manager_pid": info.manager_pid,
            "launcher": _launcher(info),
            "launcher_unit": info.launcher_unit,
        })
    units = [
        {
            "name": name,
            "kind": info.kind,
            "unit_file_state": info.state.unit_file_state,
            "load_state": info.state.load_state,
            "active_state": info.state.active_state,
            "sub_state": info.state.sub_state,
            "main_pid": info.state.main_pid,
            "restarts": info.state.restarts,
        }
        for name, info in sorted(view.units.items()) if info.kind is not None
    ]
    return {"manager_daemons": managers, "manager_commands": commands, "instances": instances, "units": units}


def _launcher(info) -> str | None:
    if info.managed:
        return "manager"
    if info.orphan:
        return "orphan"
    return info.launcher


def render(result: CheckResult) -> str:
    return json.dumps(_printable_values(to_dict(result)), indent=2, sort_keys=False) + "\n"


def _printable_values(value):
    """Return a copy of a JSON-ready value with every string made printable (see `printable`).

    json.dumps would write a lone surrogate as `\\udcff`, which strict JSON
    parsers reject as invalid Unicode.
    """
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(key) if isinstance(key, str) else key: _printable_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_printable_values(item) for item in value]
    return value
