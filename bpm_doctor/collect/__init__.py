"""Collect a host snapshot: processes, units, the manager's files and sockets.

The order matters: processes and units first, because they show where the
managers are; then the manager's settings, directories and sockets, which
are found from the managers' argv, working directory and environment the
same way the manager derives them.
"""

from __future__ import annotations

import os
import platform
import posixpath

from bpm_doctor.collect import paths as path_collector
from bpm_doctor.collect.processes import ProcessCache, collect_processes
from bpm_doctor.collect.sockets import collect_listeners
from bpm_doctor.collect.units import UNIT_DIRECTORIES, UnitFileCache, collect_units
from bpm_doctor.config import Config
from bpm_doctor.diagnose.view import HostView, build, build_managers_and_units, manager_sites
from bpm_doctor.model import Snapshot
from bpm_doctor.readfile import read_regular_file

_CRONTAB_DIRECTORIES = ("/var/spool/cron/crontabs", "/var/spool/cron")
# Crontabs are a few lines long; only this much of a larger one is read.
_MAX_CRONTAB_BYTES = 256 * 1024


def collect_host(config: Config, proc_root: str = "/proc", unit_roots: tuple[str, ...] = UNIT_DIRECTORIES,
                 process_cache: ProcessCache | None = None, unit_file_cache: UnitFileCache | None = None) -> Snapshot:
    """Scan this host and return a snapshot with secret values already removed.

    Pass the same `process_cache` and `unit_file_cache` to repeated scans,
    as the daemon does, so that known processes and unchanged unit files
    are not read in full again. Without them, everything is read in full.
    """
    snapshot = Snapshot(arch=platform.machine() or None, source="host")
    collect_processes(snapshot, proc_root, process_cache)
    collect_units(snapshot, config.instance_binaries, unit_roots, unit_file_cache)
    _collect_unit_references(snapshot, build_managers_and_units(snapshot, config))
    # A second view: the unit environment files just read can change a
    # manager unit's HOME or cache dir, and so where its files are.
    view = build(snapshot, config)
    _collect_manager_files(snapshot, view)
    runtime_roots = {site.paths.runtime_root for site in manager_sites(view) if site.paths.runtime_root}
    owners = list(view.managers) + list(view.instances)
    collect_listeners(snapshot, owners, runtime_roots, proc_root)
    _collect_bridge_sockets(snapshot, view)
    _collect_crontabs(snapshot)
    return snapshot


def _collect_manager_files(snapshot: Snapshot, view: HostView) -> None:
    scanned_roots: set[str] = set()
    for site in manager_sites(view):
        if site.paths.settings_file:
            path_collector.record_path(snapshot, site.paths.settings_file, with_content=True)
        if site.paths.keystore:
            path_collector.record_path(snapshot, site.paths.keystore)
        for root in (site.paths.runtime_root, site.paths.cache_root):
            if root:
                path_collector.record_service_dirs(snapshot, root)
                scanned_roots.add(os.path.realpath(root))
        if site.paths.data_dir:
            path_collector.record_data_dir(snapshot, site.paths.data_dir)
    for pid in view.instances:
        executable = snapshot.processes[pid].exe
        if executable:
            parent = posixpath.dirname(posixpath.dirname(executable))
            # A cache root reached through a symlink is already recorded
            # under the manager's path. Scanning it again under the resolved
            # path would report every file in it twice.
            if os.path.realpath(parent) not in scanned_roots:
                path_collector.record_service_dirs(snapshot, parent)


def _collect_unit_references(snapshot: Snapshot, view: HostView) -> None:
    """Record each kept unit's ExecStart executable and EnvironmentFile= files."""
    for info in view.units.values():
        if info.argv and info.argv[0].startswith("/"):
            path_collector.record_path(snapshot, info.argv[0])
        if info.effective is None:
            continue
        for path, _optional, _entry in info.effective.environment_files:
            if posixpath.isabs(path) and "%" not in path:
                path_collector.record_path(snapshot, path, with_content=True)


def _collect_bridge_sockets(snapshot: Snapshot, view: HostView) -> None:
    for pid in view.instances:
        process = snapshot.processes[pid]
        socket_path = process.env.get("BRIDGE_SOCKET_PATH")
        if not socket_path or socket_path == "<redacted>":
            continue
        if not posixpath.isabs(socket_path) and process.cwd:
            socket_path = posixpath.join(process.cwd, socket_path)
        if posixpath.isabs(socket_path):
            path_collector.record_path(snapshot, socket_path)


def _collect_crontabs(snapshot: Snapshot) -> None:
    from bpm_doctor import redact

    for directory in _CRONTAB_DIRECTORIES:
        try:
            users = sorted(os.listdir(directory))
        except OSError:
            continue
        for user in users:
            path = posixpath.join(directory, user)
            try:
                data = read_regular_file(path, _MAX_CRONTAB_BYTES)
            except OSError:
                continue
            lines = data.decode("utf-8", errors="replace").splitlines()
            relevant = [redact.redact_free_text(line) for line in lines
                        if "SERVICE_ID" in line or "BLUEPRINT_ID" in line or " run" in line]
            if relevant:
                snapshot.crontabs[user] = "\n".join(relevant)
        return
