"""Checks on the manager daemon itself: is exactly one running, supervised and loadable."""

from __future__ import annotations

from bpm_doctor import identify
from bpm_doctor.journal import CRASH_CAUSES
from bpm_doctor.diagnose.findings import make
from bpm_doctor.diagnose.view import HostView, cgroup_unit
from bpm_doctor.model import Finding, Severity

_BAD_LOAD_STATES = ("bad-setting", "not-found", "error")
_RISKY_KILL_MODES = ("process", "mixed", "none")
_CRASHLOOP_RESTARTS = 3

def check_manager_down(view: HostView) -> list[Finding]:
    """Report a host with a blueprint footprint, or an operator role, but no live manager daemon."""
    if view.managers or view.config.role == "remote-target":
        return []
    manager_units = view.manager_units()
    footprint = []
    if view.instances:
        footprint.append(f"{len(view.instances)} instance process(es)")
    if manager_units:
        footprint.append("manager unit(s) " + ", ".join(info.name for info in manager_units))
    if any(info.kind == "direct-run" for info in view.units.values()):
        footprint.append("direct-run unit(s)")
    if any("/blueprint-manager/svc-" in path for path in view.snapshot.paths):
        footprint.append("manager state directories")
    if view.config.role_explicit:
        footprint.append('role = "operator-host" in the configuration')
    if not footprint:
        return []
    down_units = [info.name for info in manager_units if not info.state.running]
    evidence = ["no manager daemon process (cargo-tangle blueprint run, blueprint-manager) is running"]
    evidence += [f"footprint: {item}" for item in footprint]
    for name in down_units:
        state = view.units[name].state
        evidence.append(f"{name}: load={state.load_state} active={state.active_state} sub={state.sub_state}")
    summary = "no Blueprint Manager daemon is running"
    if down_units:
        summary += f"; manager unit {', '.join(down_units)} is not active"
    return [make("manager-down", summary, unit=down_units or None, evidence=evidence)]


def check_manager_crashloop(view: HostView) -> list[Finding]:
    findings = []
    for info in view.manager_units():
        state = info.state
        restarting = state.sub_state == "auto-restart"
        repeated = (state.restarts or 0) >= _CRASHLOOP_RESTARTS and not state.running
        if not (restarting or repeated):
            continue
        cause = crash_cause(view, info.name, state.exec_main_status)
        summary = f"manager unit {info.name} keeps restarting"
        if state.restarts is not None:
            summary += f" ({state.restarts} restarts)"
        if cause:
            summary += f": {cause}"
        evidence = [f"active={state.active_state} sub={state.sub_state} restarts={state.restarts} "
                    f"last exit status={state.exec_main_status}"]
        evidence += [f"journal: {line}" for line in _cause_lines(view, info.name)]
        findings.append(make("manager-crashloop", summary, unit=info.name, evidence=evidence))
    return findings


def crash_cause(view: HostView, unit: str, exit_status: int | None) -> str | None:
    """Name why a manager unit fails, from its journal tokens or exit status."""
    text = "\n".join(view.snapshot.journals.get(unit, []))
    for tokens, cause in CRASH_CAUSES:
        if any(token in text for token in tokens):
            return cause
    if exit_status == 2:
        return "usage error (exit status 2): check the flags against `cargo-tangle blueprint run --help`"
    if exit_status == 203:
        return "the ExecStart executable does not exist"
    return None


def _cause_lines(view: HostView, unit: str) -> list[str]:
    tokens = [token for group, _cause in CRASH_CAUSES for token in group]
    return [line for line in view.snapshot.journals.get(unit, []) if any(token in line for token in tokens)][-3:]


def check_manager_unsupervised(view: HostView) -> list[Finding]:
    findings = []
    for pid in view.managers:
        process = view.snapshot.processes[pid]
        if process.cgroup is None:
            continue
        unit = cgroup_unit(process.cgroup)
        supervised = (
            unit is not None
            and unit.endswith(".service")
            and "/user.slice/" not in "/" + process.cgroup.lstrip("/")
            and unit not in ("cron.service", "crond.service")
        )
        if supervised:
            continue
        launcher = next((a.exe_name for a in view.ancestors(pid)), None)
        where = unit or process.cgroup
        summary = f"manager daemon pid {pid} runs outside a system service (cgroup {where})"
        evidence = [f"cgroup {process.cgroup}"]
        if launcher:
            evidence.append(f"parent process: {launcher}")
        if "TMUX" in process.env:
            evidence.append("started inside tmux (TMUX is set)")
        findings.append(make("manager-unsupervised", summary, pid=pid, evidence=evidence))
    return findings


def check_multiple_managers(view: HostView) -> list[Finding]:
    enabled_units = sorted(info.name for info in view.manager_units() if info.state.enabled)
    if len(view.managers) <= 1 and len(enabled_units) <= 1:
        return []
    evidence = [f"manager daemon pids: {', '.join(map(str, view.managers)) or 'none'}",
                f"enabled manager units: {', '.join(enabled_units) or 'none'}"]
    summary = (f"{len(view.managers)} manager daemon process(es) and {len(enabled_units)} enabled manager "
               "unit(s) on one host; only one manager can hold port 8276")
    return [make(
        "multiple-managers", summary,
        pid=list(view.managers) or None,
        unit=enabled_units if len(enabled_units) > 1 else None,
        evidence=evidence,
    )]


def check_manager_commands(view: HostView) -> list[Finding]:
    findings = []
    for pid in view.manager_commands:
        process = view.snapshot.processes[pid]
        command = identify.manager_command_name(process.argv)
        findings.append(make(
            "hand-run-manager-command",
            f"pid {pid} runs `cargo-tangle {command}`, which embeds its own manager beside the daemon",
            pid=pid,
            evidence=[f"argv: {' '.join(process.argv)}"],
        ))
    return findings


def check_unit_load_error(view: HostView) -> list[Finding]:
    findings = []
    for info in view.manager_units():
        if info.state.load_state not in _BAD_LOAD_STATES:
            continue
        evidence = [f"load state {info.state.load_state}"]
        evidence += [f"journal: {line}" for line in view.snapshot.journals.get(info.name, [])
                     if "Refusing" in line or "ignoring" in line.lower()][-2:]
        findings.append(make(
            "unit-load-error",
            f"manager unit {info.name} does not load (load state {info.state.load_state})",
            unit=info.name,
            path=info.state.fragment,
            evidence=evidence,
        ))
    return findings


def check_unknown_flags(view: HostView) -> list[Finding]:
    findings = []
    reported_units = set()
    for info in view.manager_units():
        if not info.argv:
            continue
        _options, unknown = identify.manager_options(info.argv[0], info.argv)
        if not unknown:
            continue
        reported_units.add(info.name)
        command = info.effective.exec_start[0] if info.effective and info.effective.exec_start else None
        findings.append(make(
            "manager-unknown-flag",
            f"manager unit {info.name} passes flags the manager rejects: {' '.join(unknown)}",
            unit=info.name,
            path=command.path if command else None,
            line=command.line if command else None,
            evidence=[f"ExecStart: {' '.join(info.argv)}"],
        ))
    for pid in view.managers:
        process = view.snapshot.processes[pid]
        unit = cgroup_unit(process.cgroup)
        if unit in reported_units:
            continue
        _options, unknown = identify.manager_options(process.exe_name, process.argv)
        if unknown:
            findings.append(make(
                "manager-unknown-flag",
                f"manager daemon pid {pid} was started with flags the manager rejects: {' '.join(unknown)}",
                pid=pid,
                evidence=[f"argv: {' '.join(process.argv)}"],
            ))
    return findings


def check_dropin_overrides(view: HostView) -> list[Finding]:
    findings = []
    for info in view.units.values():
        effective = info.effective
        if effective is None or len(effective.files) < 2:
            continue
        fragment_starts = [e for e in effective.files[0].entries if e.key == "ExecStart" and e.value]
        fragment_is_manager = any(
            identify.manager_kind(words[0], words, through_cargo=True) == "daemon"
            for words in (entry.value.lstrip("-@:+!").split() for entry in fragment_starts) if words
        )
        if not fragment_is_manager:
            continue
        for entry in effective.exec_start_errors:
            findings.append(make(
                "dropin-overrides-execstart",
                f"drop-in adds a second ExecStart= to manager unit {info.name} without an empty `ExecStart=` "
                "reset, so systemd refuses to load the unit",
                unit=info.name, path=entry.path, line=entry.line,
                evidence=[f"{entry.path}:{entry.line}: ExecStart={entry.value}"],
            ))
        commands = effective.exec_start
        if commands and not effective.exec_start_errors:
            final = commands[0]
            if final.path != effective.files[0].path and identify.manager_kind(final.executable, final.argv, through_cargo=True) != "daemon":
                findings.append(make(
                    "dropin-overrides-execstart",
                    f"drop-in replaces the ExecStart of manager unit {info.name} with `{final.executable}`, "
                    "which is not a manager daemon",
                    unit=info.name, path=final.path, line=final.line,
                    evidence=[f"{final.path}:{final.line}: ExecStart={' '.join(final.argv)}"],
                ))
    return findings


def check_kill_mode(view: HostView) -> list[Finding]:
    findings = []
    for info in view.manager_units():
        entry = info.effective.entry("KillMode") if info.effective else None
        kill_mode = entry.value if entry is not None else info.state.kill_mode
        if kill_mode not in _RISKY_KILL_MODES:
            continue
        findings.append(make(
            "killmode-not-control-group",
            f"manager unit {info.name} sets KillMode={kill_mode}: stopping or restarting it can leave its "
            "instances running as orphans",
            unit=info.name,
            path=entry.path if entry is not None else None,
            line=entry.line if entry is not None else None,
            severity=Severity.WARNING,
        ))
    return findings
