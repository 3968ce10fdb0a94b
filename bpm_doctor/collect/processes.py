"""Read every process: exe, argv, parentage, cgroup and the environment of interest.

Environment values other than blueprint coordinates and switches are
dropped right after the read (bpm_doctor.redact.filter_environment), so they
never reach a snapshot. What cannot be read is counted by reason; kernel
threads are skipped, because their environ and exe reads fail by design
(ESRCH and ENOENT on Linux 6.x) and they are never instances.
"""

from __future__ import annotations

import datetime
import os

import psutil

from bpm_doctor import redact
from bpm_doctor.model import Process, Snapshot

# PF_KTHREAD in the flags field of /proc/PID/stat (include/linux/sched.h).
_PF_KTHREAD = 0x00200000


def collect_processes(snapshot: Snapshot, proc_root: str = "/proc") -> None:
    """Add every user-space process to the snapshot."""
    for pid in _pids(proc_root):
        process = _read_process(pid, proc_root, snapshot)
        if process is not None:
            snapshot.processes[pid] = process


def _pids(proc_root: str) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(proc_root) if name.isdigit())
    except OSError:
        return []


def _read_stat(pid: int, proc_root: str) -> tuple[int, int, int, int] | None:
    """Return (ppid, pgid, sid, flags) from /proc/PID/stat, or None when the process is gone."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ") ", so
    # the fields start after the last closing parenthesis (proc(5)).
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[1]), int(fields[2]), int(fields[3]), int(fields[6])
    except (IndexError, ValueError):
        return None


def read_cgroup(pid: int, proc_root: str = "/proc") -> str | None:
    """Return the process's systemd cgroup path from /proc/PID/cgroup.

    On a unified (v2) host the `0::` line names the unit. On a hybrid host
    the `name=systemd` v1 line carries the unit while `0::` may be only "/";
    the v1 controller lines are ignored either way.
    """
    try:
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8", errors="replace") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return None
    unified = named = None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            unified = path
        elif controllers == "name=systemd":
            named = path
    if unified and unified != "/":
        return unified
    return named or unified


def _read_process(pid: int, proc_root: str, snapshot: Snapshot) -> Process | None:
    stat = _read_stat(pid, proc_root)
    if stat is None:
        snapshot.add_read_error("vanished")
        return None
    ppid, pgid, sid, flags = stat
    if flags & _PF_KTHREAD or pid == 2 or ppid == 2:
        return None
    process = Process(pid=pid, ppid=ppid, pgid=pgid, sid=sid)
    try:
        handle = psutil.Process(pid)
        with handle.oneshot():
            process.ppid = handle.ppid()
            process.argv = redact.redact_argv(handle.cmdline())
            process.uid = handle.uids().real
            process.start = _iso(handle.create_time())
            process.exe = _attribute(handle.exe, "exe", process, snapshot) or None
            process.cwd = _attribute(handle.cwd, "cwd", process, snapshot) or None
            environ = _attribute(handle.environ, "environ", process, snapshot)
        process.cgroup = read_cgroup(pid, proc_root)
        # A pid freed and reused while it was being read would mix two
        # processes; psutil compares the creation time to detect that.
        if not handle.is_running():
            snapshot.add_read_error("vanished")
            return None
    except psutil.ZombieProcess:
        return None
    except psutil.NoSuchProcess:
        snapshot.add_read_error("vanished")
        return None
    except psutil.AccessDenied:
        snapshot.add_read_error("permission-denied:cmdline")
        process.unreadable.add("cmdline")
        return process
    process.env = redact.filter_environment(environ or {})
    return process


def _attribute(reader, name: str, process: Process, snapshot: Snapshot):
    try:
        return reader()
    except psutil.AccessDenied:
        process.unreadable.add(name)
        # PID 1 is init, never an instance; this machine type's init even
        # refuses root, so its unreadable environ must not make a scan partial.
        if process.pid != 1:
            snapshot.add_read_error(f"permission-denied:{name}")
        return None
    except (psutil.ZombieProcess, FileNotFoundError, ProcessLookupError):
        process.unreadable.add(name)
        return None


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
