"""Record the manager's files and directories: settings, keystore, cache, runtime and data dirs.

Each path is recorded as `file`, `dir`, `socket` or `missing`, so the
diagnosis can tell "absent" from "not looked at". Cached binaries get their
ELF machine, read from the header (e_machine at offset 18, elf(5)).
"""

from __future__ import annotations

import os
import posixpath
import stat

from bpm_doctor import identify, redact
from bpm_doctor.model import PathEntry, Snapshot
from bpm_doctor.readfile import read_regular_file

# e_machine values from elf(5) / include/uapi/linux/elf-em.h.
_ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64", 8: "mips", 21: "ppc64", 22: "s390x"}
_MAX_DIRECTORY_ENTRIES = 2000
_MAX_SCANNED_ENTRIES = 200_000
_MAX_TEXT_BYTES = 256 * 1024


def record_path(snapshot: Snapshot, path: str, with_content: bool = False) -> str:
    """Record one path's type and mode; return its kind. With `with_content`, store a small text file too."""
    path = posixpath.normpath(path)
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        snapshot.paths[path] = PathEntry(path, "missing")
        return "missing"
    except PermissionError:
        snapshot.add_read_error("permission-denied:path")
        return "unknown"
    except OSError:
        return "unknown"
    if stat.S_ISSOCK(status.st_mode):
        kind = "socket"
    elif stat.S_ISDIR(status.st_mode):
        kind = "dir"
    else:
        kind = "file"
    attrs = {"mode": f"{stat.S_IMODE(status.st_mode):04o}"}
    # A FIFO or device is recorded as a file but never opened: opening a FIFO blocks.
    if stat.S_ISREG(status.st_mode) or stat.S_ISLNK(status.st_mode):
        machine = _elf_machine(path)
        if machine:
            attrs["elf-machine"] = machine
    snapshot.paths[path] = PathEntry(path, kind, attrs)
    if with_content and kind == "file" and path not in snapshot.files:
        text = _read_small_text(path, snapshot)
        if text is not None:
            snapshot.files[path] = redact.redact_file_text(path, text)
    return kind


def _elf_machine(path: str) -> str | None:
    try:
        header = read_regular_file(path, 20)
    except OSError:
        return None
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    byteorder = "little" if header[5] == 1 else "big"
    return _ELF_MACHINES.get(int.from_bytes(header[18:20], byteorder), f"e_machine-{header[18]}")


def _read_small_text(path: str, snapshot: Snapshot) -> str | None:
    """Return a settings or environment file's text, or None when it is unreadable, too large or binary."""
    try:
        data = read_regular_file(path, _MAX_TEXT_BYTES + 1)
    except PermissionError:
        snapshot.add_read_error("permission-denied:settings")
        return None
    except OSError:
        snapshot.add_read_error("unreadable:settings")
        return None
    if len(data) > _MAX_TEXT_BYTES or b"\0" in data:
        snapshot.add_read_error("unreadable:settings")
        return None
    return data.decode("utf-8", errors="replace")


def record_service_dirs(snapshot: Snapshot, root: str) -> None:
    """Record a runtime or cache root's `svc-B-S` directories and the files in them.

    A root reached through a symlink is recorded under the path given, as a
    `dir` whose `realpath` attribute is the resolved path. /proc/PID/exe
    names the resolved path, and the diagnosis maps it back through this.
    """
    root = posixpath.normpath(root)
    if record_path(snapshot, root) == "unknown" or not os.path.isdir(root):
        return
    real_root = os.path.realpath(root)
    if posixpath.isabs(root) and real_root != root:
        snapshot.paths[root] = PathEntry(root, "dir", {**snapshot.paths[root].attrs, "realpath": real_root})
    for name in _list(snapshot, root, keep=lambda name: identify.service_label(name) is not None):
        directory = posixpath.join(root, name)
        if record_path(snapshot, directory) != "dir":
            continue
        for entry in _list(snapshot, directory):
            record_path(snapshot, posixpath.join(directory, entry))


def record_data_dir(snapshot: Snapshot, data_dir: str) -> None:
    """Record upgrade authorisations and the auth-proxy lock under a manager data dir."""
    authz = posixpath.join(data_dir, "upgrade-authz")
    if record_path(snapshot, authz) == "dir":
        for name in _list(snapshot, authz):
            record_path(snapshot, posixpath.join(authz, name))


def _list(snapshot: Snapshot, directory: str, keep=None) -> list[str]:
    """Return the sorted names in a directory that `keep` accepts (all by default), at most _MAX_DIRECTORY_ENTRIES.

    At most _MAX_SCANNED_ENTRIES names are looked at, so a directory with
    millions of entries costs bounded time and memory. A listing cut short
    counts as `truncated:directory`; a denied one as `permission-denied:path`.
    """
    names: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for scanned, entry in enumerate(entries, start=1):
                if scanned > _MAX_SCANNED_ENTRIES:
                    snapshot.add_read_error("truncated:directory")
                    break
                if keep is not None and not keep(entry.name):
                    continue
                if len(names) == _MAX_DIRECTORY_ENTRIES:
                    snapshot.add_read_error("truncated:directory")
                    break
                names.append(entry.name)
    except PermissionError:
        snapshot.add_read_error("permission-denied:path")
    except OSError:
        pass
    return sorted(names)
