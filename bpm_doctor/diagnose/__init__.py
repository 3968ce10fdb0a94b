"""Turn a snapshot into findings. Pure: reads nothing from the host.

Each check module looks at one concern and returns findings; `diagnose`
runs them all, isolates a check that raises (it becomes a `check-failed`
finding and the other checks still run), applies the allow-list and the
severity overrides, and sorts the result worst first.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from bpm_doctor.config import Config
from bpm_doctor.diagnose import instances, manager, settings, stale, switches
from bpm_doctor.diagnose.findings import make
from bpm_doctor.diagnose.view import HostView, build
from bpm_doctor.model import Finding, Severity, Snapshot

Check = Callable[[HostView], list[Finding]]

CHECKS: list[Check] = [
    manager.check_manager_down,
    manager.check_manager_crashloop,
    manager.check_manager_unsupervised,
    manager.check_multiple_managers,
    manager.check_manager_commands,
    manager.check_unit_load_error,
    manager.check_unknown_flags,
    manager.check_dropin_overrides,
    manager.check_kill_mode,
    instances.check_hand_run_instances,
    instances.check_direct_run_units,
    instances.check_orphans,
    instances.check_duplicates,
    instances.check_orphan_descendants,
    instances.check_managed_instance_gone,
    switches.check_test_mode,
    switches.check_bypass_flags,
    switches.check_global_environment,
    switches.check_keystore_in_tmp,
    settings.check_settings_files,
    settings.check_secret_file_permissions,
    stale.check_exec_missing,
    stale.check_stale_units,
    stale.check_stale_sockets,
    stale.check_stale_service_dirs,
    stale.check_stale_cached_binaries,
]


def diagnose(snapshot: Snapshot, config: Config | None = None) -> tuple[list[Finding], HostView]:
    """Run every check on a snapshot; return the findings, worst first, and the view."""
    config = config or Config()
    view = build(snapshot, config)
    findings: list[Finding] = []
    for check in CHECKS:
        try:
            findings.extend(check(view))
        except Exception as error:  # noqa: BLE001 - one broken check must not hide the others
            findings.append(_check_failed(check, error))
    findings = [_apply_config(finding, view) for finding in findings]
    findings.sort(key=sort_key)
    return findings, view


def sort_key(finding: Finding) -> tuple:
    first_pid = finding.field_values("pid")[:1] or [0]
    first_unit = finding.field_values("unit")[:1] or [""]
    first_path = finding.field_values("path")[:1] or [""]
    return (-int(finding.severity), finding.id, first_unit[0], first_pid[0], first_path[0])


def _check_failed(check: Check, error: Exception) -> Finding:
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
    return make(
        "check-failed",
        f"check {check.__name__} raised {type(error).__name__}{where}; its findings are missing from this scan",
        evidence=[f"{type(error).__name__}{where}"],
    )


def _apply_config(finding: Finding, view: HostView) -> Finding:
    config = view.config
    override = config.severity_overrides.get(finding.id)
    if override is not None:
        finding.severity = override
    allowance = None
    for unit in finding.field_values("unit"):
        allowance = allowance or config.allowance_for(unit=unit)
    for pid in finding.field_values("pid"):
        process = view.process(pid)
        if process is None:
            continue
        allowance = allowance or config.allowance_for(binary=process.exe_name)
        unit = view.unit_of_cgroup(process.cgroup)
        allowance = allowance or (config.allowance_for(unit=unit) if unit else None)
    if allowance is not None and finding.id != "check-failed":
        finding.severity = Severity.INFO
        finding.allowed_reason = allowance.reason
    return finding
