"""Checks for stale references: leftover units, sockets, per-service dirs and cached binaries.

The manager removes none of its per-service state when a service stops
(`<runtime>/svc-B-S/`, `<cache>/svc-B-S/`, `<data>/upgrade-authz/S.json`),
and upgrade swaps add `binary-v<version>-<arch>-<sha8>` files that are never
pruned. Each finding names what is safe to remove and what must stay.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict

from bpm_doctor import identify
from bpm_doctor.diagnose.findings import make
from bpm_doctor.diagnose.view import HostView, manager_sites
from bpm_doctor.model import Finding, Severity, Unit

_UPGRADE_BINARY = re.compile(r"^binary-v[^-]+-(?P<arch>[A-Za-z0-9_]+)-[0-9a-f]+(\.part)?$")
_ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "i686": "i386", "i586": "i386"}


def _normal_arch(arch: str | None) -> str | None:
    if arch is None:
        return None
    return _ARCH_ALIASES.get(arch, arch)


def check_exec_missing(view: HostView) -> list[Finding]:
    findings = []
    for name, info in sorted(view.units.items()):
        if not info.argv:
            continue
        executable = info.argv[0]
        if not executable.startswith("/"):
            continue
        state = view.snapshot.path_state(executable)
        exited_203 = info.state.exec_main_status == 203
        if state == "exists" or (state == "unknown" and not exited_203):
            continue
        is_manager = info.kind == "manager"
        evidence = [f"ExecStart: {' '.join(info.argv)}"]
        if exited_203:
            evidence.append("the last start failed with status 203/EXEC")
        findings.append(make(
            "exec-missing",
            f"unit {name} starts {executable}, which does not exist",
            unit=name, path=executable,
            severity=Severity.CRITICAL if is_manager else Severity.WARNING,
            evidence=evidence,
        ))
    return findings


def _active_service_ids(view: HostView) -> set[int]:
    services = {info.service_id for info in view.instances.values() if info.service_id is not None}
    if view.snapshot.active_services is not None:
        services |= {service for _blueprint, service in view.snapshot.active_services}
    return services


def _is_disabled(view: HostView, name: str, state: Unit) -> bool:
    """Return True when the unit is installed but nothing enables it any more.

    systemd 252 reports an instance of a template as `disabled` only when the
    template has an [Install] section. A helper service without one, such as
    `keeper@.service` started by `keeper@.timer`, is `static` in every
    state. So for an instance the same-name timer decides, because while that
    timer is enabled or active it still starts the service.
    """
    if state.template_instance is None:
        return state.unit_file_state == "disabled"
    if state.unit_file_state not in ("disabled", "static"):
        return False
    # NOTE: a trigger other than the same-name timer (a path or socket unit,
    # another unit's Wants=) is not looked at.
    timer = view.units.get(posixpath.splitext(name)[0] + ".timer")
    return timer is None or not (timer.state.enabled or timer.state.running)


def check_stale_units(view: HostView) -> list[Finding]:
    findings = []
    active_services = _active_service_ids(view)
    for name, info in sorted(view.units.items()):
        state = info.state
        if not _is_disabled(view, name, state) or state.active_state not in ("inactive", "failed"):
            continue
        reason = None
        if info.kind == "direct-run":
            reason = "it launches an instance directly"
        elif info.argv and info.argv[0].startswith("/") and view.snapshot.path_state(info.argv[0]) == "missing":
            reason = f"its executable {info.argv[0]} no longer exists"
        elif state.template_instance and state.template_instance.isdigit() \
                and int(state.template_instance) not in active_services:
            reason = f"it is named for service {state.template_instance}, which is not active"
        if reason is None:
            continue
        findings.append(make(
            "stale-unit",
            f"unit {name} is disabled and inactive but still installed; {reason}",
            unit=name, path=state.fragment,
        ))
    return findings


def _runtime_roots(view: HostView) -> set[str]:
    return {site.paths.runtime_root for site in manager_sites(view) if site.paths.runtime_root}


def check_stale_sockets(view: HostView) -> list[Finding]:
    if view.snapshot.listeners is None:
        return []
    roots = _runtime_roots(view)
    findings = []
    for path, entry in sorted(view.snapshot.paths.items()):
        if entry.kind != "socket":
            continue
        in_runtime = any(path.startswith(root + "/") for root in roots)
        if not in_runtime and identify.bridge_socket_service(path) is None:
            continue
        if view.snapshot.listening_pids(path):
            continue
        service = identify.bridge_socket_service(path)
        findings.append(make(
            "stale-socket",
            f"bridge socket {path} exists but no process listens on it",
            path=path,
            blueprint_id=service[0] if service else None,
            service_id=service[1] if service else None,
        ))
    return findings


def _live_services(view: HostView) -> set[tuple[int, int]]:
    live = {(info.blueprint_id, info.service_id) for info in view.instances.values()}
    for listener in view.snapshot.listeners or []:
        if listener.protocol == "unix" and listener.pid in view.managers:
            service = identify.bridge_socket_service(listener.address)
            if service:
                live.add(service)
    return live


def _service_dirs(view: HostView) -> dict[tuple[int, int], list[str]]:
    """Return `svc-B-S` directories that lie under a manager runtime or cache root."""
    roots = _runtime_roots(view) | set(view.cache_roots)
    roots |= {site.paths.cache_root for site in manager_sites(view) if site.paths.cache_root}
    found: dict[tuple[int, int], list[str]] = defaultdict(list)
    for path, entry in view.snapshot.paths.items():
        if entry.kind != "dir":
            continue
        service = identify.service_label(posixpath.basename(path))
        if service is None:
            continue
        parent = posixpath.dirname(path)
        if parent in roots or posixpath.basename(parent) == "blueprint-manager" or parent.endswith("/blueprint-manager/run"):
            found[service].append(path)
    return found


def check_stale_service_dirs(view: HostView) -> list[Finding]:
    live = _live_services(view)
    findings = []
    for service, paths in sorted(_service_dirs(view).items()):
        if service in live:
            continue
        findings.append(make(
            "stale-service-dir",
            f"per-service directories of blueprint {service[0]} service {service[1]} remain, but the service "
            "has no instance and no live bridge",
            path=paths, blueprint_id=service[0], service_id=service[1],
        ))
    live_service_ids = {service for _blueprint, service in live}
    for path, entry in sorted(view.snapshot.paths.items()):
        if entry.kind != "file" or posixpath.basename(posixpath.dirname(path)) != "upgrade-authz":
            continue
        stem = posixpath.basename(path).removesuffix(".json")
        if not stem.isdigit() or int(stem) in live_service_ids:
            continue
        findings.append(make(
            "stale-service-dir",
            f"upgrade authorisation {path} remains for service {stem}, which has no instance",
            path=path, service_id=int(stem),
        ))
    return findings


def _running_executables(view: HostView) -> set[str]:
    """Return the instances' executables, named as the recorded manager roots name them.

    /proc/PID/exe gives the resolved path. A root that was reached through a
    symlink carries its resolved path in the `realpath` attribute, and an
    executable below that resolved path is renamed to lie below the root.
    """
    aliases = {
        entry.attrs["realpath"]: path for path, entry in view.snapshot.paths.items() if "realpath" in entry.attrs
    }
    running = set()
    for pid in view.instances:
        executable = view.snapshot.processes[pid].exe
        if not executable:
            continue
        for real_root, root in aliases.items():
            if executable.startswith(real_root + "/"):
                executable = root + executable[len(real_root):]
                break
        running.add(executable)
    return running


def check_stale_cached_binaries(view: HostView) -> list[Finding]:
    host_arch = _normal_arch(view.snapshot.arch)
    running = _running_executables(view)
    service_dirs = {path for paths in _service_dirs(view).values() for path in paths}
    service_dirs |= {posixpath.dirname(exe) for exe in running if exe}
    grouped: dict[tuple[str, Severity], list[str]] = defaultdict(list)
    reasons: dict[tuple[str, Severity], set[str]] = defaultdict(set)
    for path, entry in view.snapshot.paths.items():
        directory = posixpath.dirname(path)
        if entry.kind != "file" or directory not in service_dirs or not identify.service_label(posixpath.basename(directory)):
            continue
        name = posixpath.basename(path)
        match = _UPGRADE_BINARY.match(name)
        file_arch = _normal_arch(entry.attrs.get("elf-machine") or (match.group("arch") if match else None))
        dir_is_live = any(exe and posixpath.dirname(exe) == directory for exe in running)
        if host_arch and file_arch and file_arch != host_arch:
            grouped[(directory, Severity.WARNING)].append(path)
            reasons[(directory, Severity.WARNING)].add(f"built for {file_arch} on a {host_arch} host")
        elif name.endswith(".part"):
            grouped[(directory, Severity.INFO)].append(path)
            reasons[(directory, Severity.INFO)].add("partial download")
        elif match and path not in running and dir_is_live:
            grouped[(directory, Severity.INFO)].append(path)
            reasons[(directory, Severity.INFO)].add("an upgrade binary no instance runs")
    findings = []
    for (directory, severity), paths in sorted(grouped.items()):
        service = identify.service_label(posixpath.basename(directory))
        findings.append(make(
            "stale-cached-binary",
            f"{len(paths)} cached file(s) in {directory} are not in use: {', '.join(sorted(reasons[(directory, severity)]))}",
            path=sorted(paths), severity=severity,
            blueprint_id=service[0] if service else None, service_id=service[1] if service else None,
        ))
    return findings
