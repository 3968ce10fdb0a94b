"""Classify what a snapshot shows: manager daemons, instances, units.

`HostView` is built once per diagnosis and shared by every check, so each
rule of identification lives in one place. Identification follows the
executable, argv, parentage and cgroup; unit names, descriptions and
directory names never decide what a process is.
"""

from __future__ import annotations

import functools
import posixpath
import re
from dataclasses import dataclass, field

from bpm_doctor import envfile, identify, unitfile
from bpm_doctor.config import Config
from bpm_doctor.model import Process, Snapshot, Unit

_SHELLS = {"bash", "sh", "dash", "zsh", "fish", "ksh", "tcsh", "csh", "sshd", "login", "su", "sudo", "nohup"}
_CRON = {"cron", "crond", "anacron"}
_CONTAINER_PARENTS = ("containerd-shim", "containerd-shim-runc-v2", "docker-containerd-shim", "conmon", "runc")
# How many ancestors a walk up the parent chain looks at. Every instance and
# every process with blueprint coordinates is walked, so without a limit a
# chain of thousands of nested processes costs time quadratic in its depth.
# Real launch chains (unit, shell, sudo, tmux, cargo) are a few levels deep.
MAX_ANCESTORS = 64
_CONTAINER_CGROUP = re.compile(r"(^|/)(docker-[0-9a-f]+\.scope|libpod-[0-9a-f]+\.scope|docker|kubepods[^/]*|containerd)(/|$)")


@dataclass
class InstanceInfo:
    """Classification of one instance process: its service, and who launched it."""

    pid: int
    blueprint_id: int | None
    service_id: int | None
    registration: bool
    managed: bool
    orphan: bool
    manager_pid: int | None = None
    launcher: str | None = None
    launcher_unit: str | None = None


@dataclass
class UnitInfo:
    """A unit with its effective settings, when its files are in the snapshot."""

    name: str
    state: Unit
    effective: unitfile.EffectiveUnit | None
    argv: list[str]
    kind: str | None = None
    environment: dict[str, str] = field(default_factory=dict)


@dataclass
class HostView:
    """The classified host: shared input of every check."""

    snapshot: Snapshot
    config: Config
    managers: list[int] = field(default_factory=list)
    manager_commands: list[int] = field(default_factory=list)
    instances: dict[int, InstanceInfo] = field(default_factory=dict)
    descendants: list[int] = field(default_factory=list)
    units: dict[str, UnitInfo] = field(default_factory=dict)
    cache_roots: set[str] = field(default_factory=set)
    fork_copies: set[int] = field(default_factory=set)

    def process(self, pid: int) -> Process | None:
        return self.snapshot.processes.get(pid)

    def ancestors(self, pid: int) -> list[Process]:
        """Return up to MAX_ANCESTORS live ancestors of a process, nearest first, stopping before PID 1."""
        chain: list[Process] = []
        seen = {pid}
        current = self.snapshot.processes.get(pid)
        while current is not None and current.ppid not in (0, 1) and current.ppid not in seen \
                and len(chain) < MAX_ANCESTORS:
            seen.add(current.ppid)
            current = self.snapshot.processes.get(current.ppid)
            if current is not None:
                chain.append(current)
        return chain

    def manager_units(self) -> list[UnitInfo]:
        return [info for info in self.units.values() if info.kind == "manager"]

    def unit_of_cgroup(self, cgroup: str | None) -> str | None:
        return cgroup_unit(cgroup)


# Many processes share a cgroup, and every scan looks up every process's unit.
@functools.lru_cache(maxsize=4096)
def cgroup_unit(cgroup: str | None) -> str | None:
    """Return the innermost unit (`x.service`, `y.scope`) of a cgroup path."""
    if not cgroup:
        return None
    for component in reversed(cgroup.strip("/").split("/")):
        if component.endswith((".service", ".scope")):
            return component
    return None


def build(snapshot: Snapshot, config: Config) -> HostView:
    """Classify every process and unit of a snapshot."""
    view = build_managers_and_units(snapshot, config)
    _classify_instances(view)
    for info in view.units.values():
        main_pid = info.state.main_pid
        if info.kind is None and main_pid in view.instances:
            info.kind = "direct-run"
    return view


def build_managers_and_units(snapshot: Snapshot, config: Config) -> HostView:
    """Classify the manager daemons and the units, and leave `instances` empty.

    This is the part of `build` that decides which unit files to read, and
    it costs a fraction of the whole on a host with many processes.
    """
    view = HostView(snapshot, config)
    view.fork_copies = {pid for pid, process in snapshot.processes.items() if is_fork_copy(snapshot, process)}
    _classify_managers(view)
    _classify_units(view)
    return view


def is_fork_copy(snapshot: Snapshot, process: Process) -> bool:
    """Return True for a child with its parent's argv and executable: forked and not (yet) exec'd.

    Between fork() and exec() a child shows its parent's argv and /proc/PID/exe,
    so a manager that is spawning an instance briefly looks like a second
    manager, and an instance that forks a helper like a second instance of its
    service. Such a child is part of its parent, not a launcher of its own.
    """
    parent = snapshot.processes.get(process.ppid)
    return (parent is not None and parent.pid != process.pid and bool(process.argv)
            and parent.argv == process.argv and parent.exe == process.exe)


def _classify_managers(view: HostView) -> None:
    for pid, process in sorted(view.snapshot.processes.items()):
        if pid in view.fork_copies:
            continue
        kind = identify.manager_kind(process.exe or (process.argv[0] if process.argv else ""), process.argv)
        if kind == "daemon":
            view.managers.append(pid)
            paths = identify.manager_paths(process.exe_name, process.argv, process.cwd, process.env)
            if paths.cache_root:
                view.cache_roots.add(paths.cache_root)
        elif kind == "command":
            view.manager_commands.append(pid)


def _unit_files(snapshot: Snapshot, unit: Unit) -> list[unitfile.UnitFile]:
    fragment = unit.fragment
    if fragment is None:
        for directory in ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"):
            candidate = posixpath.join(directory, unit.name)
            if candidate in snapshot.files:
                fragment = candidate
                break
    files: list[unitfile.UnitFile] = []
    if fragment is not None and fragment in snapshot.files:
        files.append(unitfile.parse(snapshot.files[fragment], fragment))
    dropins = list(unit.dropins)
    if not dropins:
        directories = unitfile.dropin_dir_names(unit.name)
        dropins = sorted(
            path for path in snapshot.files
            if posixpath.basename(posixpath.dirname(path)) in directories and path.endswith(".conf")
        )
    for path in sorted(dropins, key=posixpath.basename):
        if path in snapshot.files:
            files.append(unitfile.parse(snapshot.files[path], path))
    return files


def _classify_units(view: HostView) -> None:
    snapshot = view.snapshot
    for name, state in sorted(snapshot.units.items()):
        files = _unit_files(snapshot, state)
        effective = unitfile.effective(name, files) if files else None
        argv: list[str] = []
        environment: dict[str, str] = {}
        instance = state.template_instance
        if effective is not None:
            commands = effective.exec_start
            if commands:
                argv = [unitfile.specifier_instance(word, instance) for word in commands[0].argv]
            environment = unit_environment(snapshot, effective, instance)
        elif state.exec_start:
            argv = state.exec_start.split()
        info = UnitInfo(name, state, effective, argv, environment=environment)
        info.kind = _unit_kind(view, info)
        view.units[name] = info


def unit_environment(snapshot: Snapshot, effective: unitfile.EffectiveUnit, instance: str | None) -> dict[str, str]:
    """Return what a unit puts in its process environment, as far as the snapshot shows.

    `EnvironmentFile=` contents come first and `Environment=` lines override
    them, which is the precedence systemd.exec(5) gives for equal names.
    """
    environment: dict[str, str] = {}
    for path, _optional, _entry in effective.environment_files:
        path = unitfile.specifier_instance(path, instance)
        text = snapshot.files.get(posixpath.normpath(path)) if posixpath.isabs(path) else None
        if text is not None:
            environment.update(envfile.as_dict(envfile.parse_systemd(text)))
    for name, value in effective.environment.items():
        environment[name] = unitfile.specifier_instance(value, instance)
    return environment


def _unit_kind(view: HostView, info: UnitInfo) -> str | None:
    if info.argv and identify.manager_kind(info.argv[0], info.argv, through_cargo=True) == "daemon":
        return "manager"
    main = view.process(info.state.main_pid) if info.state.main_pid else None
    if main is not None and main.pid in view.managers:
        return "manager"
    if info.argv and identify.argv_is_instance(
        info.argv, info.environment, view.config.instance_binaries, view.cache_roots
    ):
        return "direct-run"
    return None


def _numeric(value: str | None) -> bool:
    return value is not None and value.isdigit()


def _classify_instances(view: HostView) -> None:
    manager_cgroups = {info.state.name for info in view.units.values() if info.kind == "manager"}
    excluded = set(view.managers) | set(view.manager_commands)
    candidates = [process for pid, process in sorted(view.snapshot.processes.items()) if pid not in excluded]
    # Strong evidence first, so that the environment-only test below can
    # tell an instance from a helper that inherited an instance's variables.
    for process in candidates:
        if process.pid not in view.fork_copies and _has_instance_signature(view, process):
            view.instances[process.pid] = _instance_info(view, process)
    for process in candidates:
        if process.pid not in view.instances and process.pid not in view.fork_copies \
                and _has_instance_environment(view, process, manager_cgroups):
            view.instances[process.pid] = _instance_info(view, process)
    for process in candidates:
        if process.pid in view.instances:
            continue
        if _carries_service_environment(process) or (manager_cgroups and cgroup_unit(process.cgroup) in manager_cgroups):
            view.descendants.append(process.pid)


def _carries_service_environment(process: Process) -> bool:
    env = process.env
    return "BRIDGE_SOCKET_PATH" in env or (_numeric(env.get("BLUEPRINT_ID")) and _numeric(env.get("SERVICE_ID")))


def _has_instance_signature(view: HostView, process: Process) -> bool:
    """Apply the tests that need no environment-only guess: `run` with coordinates, cache path, configured name."""
    executable = process.exe or (process.argv[0] if process.argv else "")
    if not executable:
        return False
    # has_run_subcommand and has_coordinates ignore argv[0], so the
    # process's argv can be passed as it is.
    argv = process.argv or [executable]
    if identify.has_run_subcommand(argv) and identify.has_coordinates(argv, process.env):
        return True
    if posixpath.isabs(executable) and identify.in_manager_cache(executable, view.cache_roots):
        return True
    return bool(view.config.instance_binaries) and process.exe_name in view.config.instance_binaries


def _has_instance_environment(view: HostView, process: Process, manager_cgroups: set[str]) -> bool:
    """Return True for a process started with numeric BLUEPRINT_ID and SERVICE_ID but no `run`.

    Early direct-run units start the bare binary and pass the ids through
    `EnvironmentFile=`. A helper that only inherited the ids from an instance,
    or from a manager-spawned process that died, is a descendant instead.
    """
    env = process.env
    if not (_numeric(env.get("BLUEPRINT_ID")) and _numeric(env.get("SERVICE_ID"))):
        return False
    if any(ancestor.pid in view.instances for ancestor in view.ancestors(process.pid)):
        return False
    if "BRIDGE_SOCKET_PATH" in env or cgroup_unit(process.cgroup) in manager_cgroups:
        return process.ppid in view.managers
    return True


def _instance_info(view: HostView, process: Process) -> InstanceInfo:
    blueprint_id, service_id = instance_coordinates(process)
    managed = process.ppid in view.managers
    ancestors = view.ancestors(process.pid)
    under_command = any(ancestor.pid in view.manager_commands for ancestor in ancestors)
    orphan = not managed and not under_command and "BRIDGE_SOCKET_PATH" in process.env
    info = InstanceInfo(
        pid=process.pid,
        blueprint_id=blueprint_id,
        service_id=service_id,
        registration=identify.is_truthy(process.env.get("REGISTRATION_MODE_ON")),
        managed=managed,
        orphan=orphan,
        manager_pid=process.ppid if managed else None,
    )
    if not managed and not orphan:
        info.launcher, info.launcher_unit = attribute_launcher(view, process, ancestors)
    return info


def instance_coordinates(process: Process) -> tuple[int | None, int | None]:
    """Return (blueprint id, service id) from the environment, argv or manager paths."""
    env = process.env
    blueprint = int(env["BLUEPRINT_ID"]) if _numeric(env.get("BLUEPRINT_ID")) else None
    service = int(env["SERVICE_ID"]) if _numeric(env.get("SERVICE_ID")) else None
    options = identify.argv_coordinates(process.argv)
    if blueprint is None and options.get("blueprint_id", "").isdigit():
        blueprint = int(options["blueprint_id"])
    if service is None and options.get("service_id", "").isdigit():
        service = int(options["service_id"])
    for text in (process.exe or "", env.get("BRIDGE_SOCKET_PATH", "")):
        label = identify.service_label(posixpath.dirname(text)) if text else None
        if label is not None:
            blueprint = blueprint if blueprint is not None else label[0]
            service = service if service is not None else label[1]
    return blueprint, service


def attribute_launcher(view: HostView, process: Process, ancestors: list[Process]) -> tuple[str, str | None]:
    """Name what launched a process that no manager launched.

    The parent chain comes first: a tmux or screen server, cron, a container
    shim or a manager command. The cgroup comes next, because a process
    started from an existing tmux server lands in that server's cgroup
    (systemd/systemd#3675) and a reparented process keeps the cgroup of
    whatever started it.
    """
    saw_shell = False
    for ancestor in ancestors:
        if ancestor.pid in view.manager_commands:
            return "manager-command", None
        name = ancestor.exe_name
        if name.startswith("tmux"):
            return "tmux", None
        if name.lower() == "screen":
            return "screen", None
        if name in _CRON:
            return "cron", None
        if name.startswith(_CONTAINER_PARENTS):
            return "container", None
        if name in _SHELLS or name.lstrip("-") in _SHELLS:
            saw_shell = True
    if "TMUX" in process.env:
        return "tmux", None
    if "STY" in process.env:
        return "screen", None

    cgroup = process.cgroup or ""
    unit = cgroup_unit(cgroup)
    if _CONTAINER_CGROUP.search(cgroup):
        return "container", None
    if unit in ("cron.service", "crond.service", "anacron.service"):
        return "cron", None
    if unit is not None and unit.startswith("tmux-spawn-"):
        return "tmux", None
    if unit is not None and unit.endswith(".service") and "/user.slice/" not in "/" + cgroup.lstrip("/"):
        return "systemd-unit", unit
    in_user_session = "/user.slice/" in "/" + cgroup.lstrip("/")
    if saw_shell or in_user_session or (unit is not None and unit.startswith("run-")):
        return "shell", None
    return "unknown", None


@dataclass
class ManagerSite:
    """One manager daemon, running or configured in a unit, and where it keeps things."""

    pid: int | None
    unit: str | None
    executable: str
    argv: list[str]
    environment: dict[str, str]
    paths: identify.ManagerPaths


def manager_sites(view: HostView) -> list[ManagerSite]:
    """Return every manager daemon process, then every manager unit not running one.

    A unit's manager runs in the unit's `WorkingDirectory=` with the unit's
    environment; `User=` unset or root means HOME is /root, which decides the
    default cache dir.
    """
    sites: list[ManagerSite] = []
    covered_units: set[str] = set()
    for pid in view.managers:
        process = view.snapshot.processes[pid]
        unit = _unit_of_manager(view, process)
        if unit:
            covered_units.add(unit)
        sites.append(ManagerSite(
            pid=pid,
            unit=unit,
            executable=process.exe or (process.argv[0] if process.argv else ""),
            argv=process.argv,
            environment=process.env,
            paths=identify.manager_paths(process.exe_name, process.argv, process.cwd, process.env),
        ))
    for info in view.manager_units():
        if info.name in covered_units or not info.argv:
            continue
        environment = dict(info.environment)
        user = info.effective.get("User") if info.effective else None
        if "HOME" not in environment and user in (None, "root", "0"):
            environment["HOME"] = "/root"
        # systemd.exec(5): a system service without WorkingDirectory= runs in "/",
        # and "~" is the home directory of User=.
        cwd = (info.effective.get("WorkingDirectory") if info.effective else None) or "/"
        cwd = cwd.lstrip("-")
        if cwd == "~":
            cwd = environment.get("HOME")
        sites.append(ManagerSite(
            pid=None,
            unit=info.name,
            executable=info.argv[0],
            argv=info.argv,
            environment=environment,
            paths=identify.manager_paths(posixpath.basename(info.argv[0]), info.argv, cwd, environment),
        ))
    return sites


def _unit_of_manager(view: HostView, process: Process) -> str | None:
    for info in view.units.values():
        if info.state.main_pid == process.pid:
            return info.name
    unit = cgroup_unit(process.cgroup)
    if unit is not None and unit in view.units and view.units[unit].kind == "manager":
        return unit
    return None
