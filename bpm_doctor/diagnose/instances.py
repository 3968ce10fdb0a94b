"""Checks on instances: who launched each one, and whether any service runs twice."""

from __future__ import annotations

import posixpath
from collections import defaultdict

from bpm_doctor import identify
from bpm_doctor.diagnose.findings import make
from bpm_doctor.diagnose.view import HostView, InstanceInfo
from bpm_doctor.model import Finding
from bpm_doctor.redact import REDACTED

_LAUNCHER_WORDS = {
    "systemd-unit": "its own systemd unit",
    "shell": "a login shell",
    "tmux": "a tmux session",
    "screen": "a screen session",
    "cron": "cron",
    "container": "a container",
    "manager-command": "a cargo-tangle manager command",
    "unknown": "an unknown launcher",
}


def _service_words(info: InstanceInfo) -> str:
    if info.blueprint_id is None and info.service_id is None:
        return "an unknown service"
    return f"blueprint {info.blueprint_id} service {info.service_id}"


def check_hand_run_instances(view: HostView) -> list[Finding]:
    findings = []
    for pid, info in sorted(view.instances.items()):
        if info.managed or info.orphan:
            continue
        if view.config.role == "remote-target" and info.launcher == "systemd-unit":
            continue
        process = view.snapshot.processes[pid]
        launcher = info.launcher or "unknown"
        where = _LAUNCHER_WORDS.get(launcher, launcher)
        if info.launcher_unit:
            where = f"systemd unit {info.launcher_unit}"
        evidence = [f"argv: {' '.join(process.argv)}", f"parent pid {process.ppid}, cgroup {process.cgroup or 'unknown'}"]
        findings.append(make(
            "hand-run-instance",
            f"instance pid {pid} for {_service_words(info)} was started by {where}, not by the manager",
            pid=pid, unit=info.launcher_unit, launcher=launcher,
            blueprint_id=info.blueprint_id, service_id=info.service_id,
            evidence=evidence,
        ))
    return findings


def check_direct_run_units(view: HostView) -> list[Finding]:
    if view.config.role == "remote-target":
        return []
    findings = []
    for name, info in sorted(view.units.items()):
        if info.kind != "direct-run":
            continue
        state = info.state
        if not (state.enabled or state.running):
            continue
        command = info.effective.exec_start[0] if info.effective and info.effective.exec_start else None
        main_pid = state.main_pid if state.main_pid else None
        evidence = [f"ExecStart: {' '.join(info.argv)}",
                    f"unit file state {state.unit_file_state}, active state {state.active_state}"]
        pinned = [name for name in ("BLUEPRINT_ID", "SERVICE_ID", "TEST_MODE") if name in info.environment]
        if pinned:
            evidence.append(f"the unit sets {', '.join(pinned)}")
        blueprint = info.environment.get("BLUEPRINT_ID")
        service = info.environment.get("SERVICE_ID")
        findings.append(make(
            "direct-run-unit",
            f"unit {name} launches the instance binary {info.argv[0] if info.argv else '?'} directly, "
            "bypassing the manager",
            unit=name, pid=main_pid,
            path=command.path if command else state.fragment, line=command.line if command else None,
            blueprint_id=int(blueprint) if blueprint and blueprint.isdigit() else None,
            service_id=int(service) if service and service.isdigit() else None,
            evidence=evidence,
        ))
    return findings


def check_orphans(view: HostView) -> list[Finding]:
    findings = []
    for pid, info in sorted(view.instances.items()):
        if not info.orphan:
            continue
        process = view.snapshot.processes[pid]
        socket_path = process.env.get("BRIDGE_SOCKET_PATH", "")
        evidence = [f"parent pid {process.ppid} is not a live manager daemon",
                    f"BRIDGE_SOCKET_PATH={socket_path}"]
        absolute = _absolute_socket_path(socket_path, process.cwd)
        if absolute:
            state = view.snapshot.path_state(absolute)
            owners = view.snapshot.listening_pids(absolute) - {None}
            if state == "missing":
                evidence.append("its bridge socket no longer exists")
            elif owners:
                evidence.append(f"its bridge socket now belongs to pid {', '.join(map(str, sorted(owners)))}")
        findings.append(make(
            "orphan-instance",
            f"instance pid {pid} for {_service_words(info)} outlived the manager that spawned it",
            pid=pid, blueprint_id=info.blueprint_id, service_id=info.service_id,
            evidence=evidence,
        ))
    return findings


def _absolute_socket_path(socket_path: str, cwd: str | None) -> str | None:
    """Return BRIDGE_SOCKET_PATH as an absolute path, or None when it cannot be placed.

    The manager passes a relative path (`./blueprint-manager/run/...`) when
    XDG_RUNTIME_DIR is unset, and its instances share its working directory.
    """
    if socket_path.startswith("/"):
        return socket_path
    if not socket_path or socket_path == REDACTED or not cwd:
        return None
    return posixpath.normpath(posixpath.join(cwd, socket_path))


def check_duplicates(view: HostView) -> list[Finding]:
    groups: dict[tuple[int, int, bool], list[InstanceInfo]] = defaultdict(list)
    for info in view.instances.values():
        if info.blueprint_id is None or info.service_id is None:
            continue
        groups[(info.blueprint_id, info.service_id, info.registration)].append(info)
    findings = []
    for (blueprint, service, registration), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        pids = sorted(member.pid for member in members)
        evidence = [f"pid {member.pid}: {_origin(member)}" for member in sorted(members, key=lambda m: m.pid)]
        what = "registration instances" if registration else "instances"
        findings.append(make(
            "duplicate-service",
            f"{len(members)} {what} serve blueprint {blueprint} service {service} at once (pids "
            f"{', '.join(map(str, pids))}); they submit the same results and race for nonces",
            pid=pids, blueprint_id=blueprint, service_id=service, evidence=evidence,
        ))
    return findings


def _origin(info: InstanceInfo) -> str:
    if info.managed:
        return f"managed by manager pid {info.manager_pid}"
    if info.orphan:
        return "orphan of a dead manager"
    return f"hand-run ({info.launcher_unit or info.launcher})"


def check_orphan_descendants(view: HostView) -> list[Finding]:
    findings = []
    for pid in view.descendants:
        ancestors = view.ancestors(pid)
        if any(a.pid in view.instances or a.pid in view.managers or a.pid in view.manager_commands
               for a in ancestors):
            continue
        process = view.snapshot.processes[pid]
        blueprint = process.env.get("BLUEPRINT_ID")
        service = process.env.get("SERVICE_ID")
        findings.append(make(
            "orphan-descendant",
            f"pid {pid} ({process.exe_name}) was left behind by a blueprint instance that no longer runs",
            pid=pid,
            blueprint_id=int(blueprint) if blueprint and blueprint.isdigit() else None,
            service_id=int(service) if service and service.isdigit() else None,
            evidence=[f"argv: {' '.join(process.argv)}", f"parent pid {process.ppid}, cgroup {process.cgroup or 'unknown'}"],
        ))
    return findings


def check_managed_instance_gone(view: HostView) -> list[Finding]:
    running = {(info.blueprint_id, info.service_id) for info in view.instances.values()}
    findings = []
    for manager_pid in view.managers:
        for path in _bridge_sockets_of(view, manager_pid):
            service = identify.bridge_socket_service(path)
            if service is None or service in running:
                continue
            findings.append(make(
                "managed-instance-gone",
                f"manager pid {manager_pid} holds the bridge for blueprint {service[0]} service {service[1]}, "
                "but no instance of that service runs",
                pid=manager_pid, path=path, blueprint_id=service[0], service_id=service[1],
            ))
    return findings


def _bridge_sockets_of(view: HostView, manager_pid: int) -> list[str]:
    paths = set()
    for listener in view.snapshot.listeners or []:
        if listener.protocol == "unix" and listener.pid == manager_pid:
            paths.add(listener.address)
    for entry in view.snapshot.paths.values():
        if entry.kind == "socket" and entry.attrs.get("owner-pid") == str(manager_pid):
            paths.add(entry.path)
    return sorted(path for path in paths if identify.bridge_socket_service(path))
