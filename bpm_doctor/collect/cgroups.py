"""Map pids to cgroup paths by reading each cgroup's `cgroup.procs`, for incremental scans.

Reading /proc/PID/cgroup costs one file per process. A host usually has
far fewer cgroups than processes, so walking the cgroup hierarchies and
reading the member list of each cgroup gives the same pid → path map for
less. That matters when a scan re-reads the cgroup of every known process.

The map gives exactly what `processes.read_cgroup` would return: the path
on the unified (v2) hierarchy, or the `name=systemd` v1 path where the
unified one is "/". Paths in mountinfo and in /proc/PID/cgroup are both
relative to the reader's cgroup namespace root (cgroup_namespaces(7)), so
a directory's path is the mount's root plus the directory below the mount
point. `hierarchy_map` checks that against this process's own
/proc/self/cgroup and returns None when it does not match or a hierarchy
is not mounted; the caller then reads /proc/PID/cgroup per process.

A pid missing from the map, or found twice because it moved between two
cgroups during the walk, is left out of the map, so the caller reads it
per process as well.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC


@dataclass(frozen=True)
class _Mount:
    root: str
    mount_point: str


def _unescape(field: str) -> str:
    """Decode the octal escapes (\\040 for a space) of a mountinfo path field."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def find_mounts(mountinfo: str) -> tuple[_Mount | None, _Mount | None]:
    """Return the (unified v2, name=systemd v1) cgroup mounts listed in /proc/self/mountinfo (proc(5))."""
    unified = named = None
    for line in mountinfo.splitlines():
        left, separator, right = line.partition(" - ")
        if not separator:
            continue
        fields = left.split()
        described = right.split()
        if len(fields) < 5 or len(described) < 3:
            continue
        mount = _Mount(root=_unescape(fields[3]), mount_point=_unescape(fields[4]))
        if described[0] == "cgroup2" and unified is None:
            unified = mount
        elif described[0] == "cgroup" and "name=systemd" in described[2].split(",") and named is None:
            named = mount
    return unified, named


def _read_members(directory: str) -> list[int] | None:
    """Return the pids in `directory`/cgroup.procs, or None when it cannot be read."""
    try:
        fd = os.open(f"{directory}/cgroup.procs", _OPEN_FLAGS)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return list(map(int, b"".join(chunks).split()))


def _walk(mount: _Mount) -> tuple[dict[int, str], set[int], int] | None:
    """Map each pid of one hierarchy to its cgroup path.

    Returns (map, pids seen twice, directories read), or None when a member
    list could not be read: a threaded cgroup refuses cgroup.procs with
    EOPNOTSUPP, and its processes would be missing.
    """
    members: dict[int, str] = {}
    duplicates: set[int] = set()
    root = mount.root.rstrip("/")
    pending = [(mount.mount_point, root or "/")]
    directories = 0
    while pending:
        directory, path = pending.pop()
        pids = _read_members(directory)
        if pids is None:
            if os.path.isdir(directory):
                return None
            continue  # removed during the walk, so its processes moved elsewhere
        directories += 1
        # Whole-list operations instead of a loop per pid: a root cgroup can
        # hold thousands of processes, and every scan walks it.
        listed = dict.fromkeys(pids, path)
        if len(listed) < len(pids):
            # cgroup v1 does not promise a list free of duplicates (cgroups.txt).
            duplicates.update(pid for pid, count in collections.Counter(pids).items() if count > 1)
        duplicates.update(members.keys() & listed.keys())
        members.update(listed)
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child_path = f"{path.rstrip('/')}/{entry.name}"
                        pending.append((entry.path, child_path))
        except OSError:
            continue
    return members, duplicates, directories


def _combine_walks(unified: dict[int, str] | None, named: dict[int, str] | None) -> dict[int, str]:
    """Merge the walks of the hierarchies present with `processes.read_cgroup`'s choice.

    That is the unified path unless it is "/", then the name=systemd one. A
    pid present in one walk but not the other started or moved during the
    walk; leaving it out makes the caller read it directly.
    """
    if unified is not None and named is not None:
        return {pid: path if path != "/" else named[pid] for pid, path in unified.items() if pid in named}
    return dict(unified if unified is not None else named or {})


@dataclass
class HierarchyMap:
    """A pid → cgroup path map from one walk, and how many cgroup directories it read."""

    paths: dict[int, str]
    directories: int


def hierarchy_map(proc_root: str, own_cgroup: str | None, own_pid: int | None = None) -> HierarchyMap | None:
    """Walk the unified and name=systemd hierarchies and map every pid to its cgroup path.

    `own_cgroup` is `read_cgroup` of this process (pid `own_pid`, default
    os.getpid()). Returns None when the walk does not give the same path for
    this process, or when a hierarchy that /proc/self/cgroup names is not
    mounted.
    """
    try:
        with open(f"{proc_root}/self/mountinfo", encoding="utf-8", errors="surrogateescape") as stream:
            mountinfo = stream.read()
        with open(f"{proc_root}/self/cgroup", encoding="utf-8", errors="replace") as stream:
            own_lines = stream.read().splitlines()
    except OSError:
        return None
    has_unified = any(line.startswith("0::") for line in own_lines)
    has_named = any(":name=systemd:" in line for line in own_lines)
    unified_mount, named_mount = find_mounts(mountinfo)
    if (has_unified and unified_mount is None) or (has_named and named_mount is None):
        return None
    walks = []
    for present, mount in ((has_unified, unified_mount), (has_named, named_mount)):
        if not present:
            walks.append(({}, set(), 0))
            continue
        walked = _walk(mount)
        if walked is None:
            return None
        walks.append(walked)
    (unified, unified_twice, unified_dirs), (named, named_twice, named_dirs) = walks
    paths = _combine_walks(unified if has_unified else None, named if has_named else None)
    for pid in unified_twice | named_twice:
        paths.pop(pid, None)
    if paths.get(os.getpid() if own_pid is None else own_pid) != own_cgroup:
        return None
    return HierarchyMap(paths, unified_dirs + named_dirs)
