"""Read systemd units: files from the unit search path, and live state when systemd is PID 1.

Unit files are read from disk even without a running systemd, so a box in
rescue mode or a chroot still gets its units checked. Only units that matter
are kept in the snapshot: those under /etc and /run (written by operators and
deploy scripts), those that start a manager or an instance, and those whose
environment carries blueprint coordinates. The rest of /lib/systemd is the
distribution's and is skipped.

A `UnitFileCache` passed to repeated scans, as the daemon does, keeps each
file's text and whether it was worth keeping, so an unchanged file is only
stat()ed: a Debian box has hundreds of unit files, and reading and testing
each of them was the largest cost of a daemon scan after the processes.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess

from bpm_doctor import identify, redact, unitfile
from bpm_doctor.journal import is_kept
from bpm_doctor.model import Snapshot, Unit
from bpm_doctor.readfile import read_regular_file

# systemd.unit(5): the system unit search path, highest priority first.
UNIT_DIRECTORIES = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)
_OPERATOR_DIRECTORIES = ("/etc/systemd/system", "/run/systemd/system")
_UNIT_SUFFIXES = (".service", ".timer")
_SHOW_PROPERTIES = (
    "Id", "LoadState", "ActiveState", "SubState", "UnitFileState", "MainPID", "NRestarts",
    "ExecMainStatus", "FragmentPath", "DropInPaths", "KillMode", "ExecStart",
)
_INTERESTING_WORDS = re.compile(r"cargo-tangle|blueprint-manager|BLUEPRINT_ID|SERVICE_ID|TEST_MODE|\brun\b")
_COMMAND_TIMEOUT_SECONDS = 10
_MAX_UNIT_FILE_BYTES = 256 * 1024


def systemd_is_running() -> bool:
    """Return True when systemd is PID 1, the test `sd_booted()` uses (sd_booted(3))."""
    return os.path.isdir("/run/systemd/system")


class UnitFileCache:
    """Unit file texts and keep decisions from earlier scans.

    An entry is keyed by path and contains the file's identity (device, inode,
    size, modification and change times in nanoseconds): a file written
    since, or replaced by another, is read again. Entries of files not seen
    in a scan are dropped.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple, str, bool]] = {}
        self._seen: dict[str, tuple[tuple, str, bool]] = {}

    def lookup(self, path: str, identity: tuple) -> tuple[str, bool] | None:
        """Return (text, worth keeping) of a file last seen with this identity, or None."""
        entry = self._entries.get(path)
        if entry is None or entry[0] != identity:
            return None
        self._seen[path] = entry
        return entry[1], entry[2]

    def store(self, path: str, identity: tuple, text: str, keep: bool) -> None:
        self._seen[path] = (identity, text, keep)

    def end_scan(self) -> None:
        self._entries, self._seen = self._seen, {}


def _identity(path: str) -> tuple | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def collect_units(snapshot: Snapshot, instance_binaries: set[str], roots: tuple[str, ...] = UNIT_DIRECTORIES,
                  cache: UnitFileCache | None = None) -> None:
    """Add the units that matter, their files and drop-ins, and live state when available."""
    fragments = _find_unit_files(roots, snapshot)
    enabled = _enabled_units(roots, snapshot)
    for name, path in sorted(fragments.items()):
        read = _read_unit_file(path, snapshot, instance_binaries, cache)
        if read is None or not read[1]:
            continue
        text = read[0]
        snapshot.files[path] = redact.redact_file_text(path, text)
        unit = Unit(name=name, fragment=path)
        unit.dropins = _dropins(name, roots, snapshot)
        for dropin in unit.dropins:
            dropin_text = _read_text(dropin, snapshot)
            if dropin_text is not None:
                snapshot.files[dropin] = redact.redact_file_text(dropin, dropin_text)
        if "@." not in name:
            unit.unit_file_state = "enabled" if name in enabled else _offline_state(text)
        snapshot.units[name] = unit
    if cache is not None:
        cache.end_scan()
    if systemd_is_running():
        _add_live_state(snapshot)


def _read_unit_file(path: str, snapshot: Snapshot, instance_binaries: set[str],
                    cache: UnitFileCache | None) -> tuple[str, bool] | None:
    """Return (text, worth keeping) of a unit file, from `cache` while it is unchanged; None when unreadable."""
    identity = _identity(path) if cache is not None else None
    if identity is not None:
        known = cache.lookup(path, identity)
        if known is not None:
            return known
    # The identity is taken before the read, so a file written during the
    # read is read again next time.
    text = _read_text(path, snapshot)
    if text is None:
        return None
    keep = _worth_keeping(path, text, instance_binaries)
    if identity is not None:
        cache.store(path, identity, text, keep)
    return text, keep


def _find_unit_files(roots: tuple[str, ...], snapshot: Snapshot) -> dict[str, str]:
    """Map unit names to their fragment path; the first directory on the search path wins."""
    found: dict[str, str] = {}
    seen_directories: set[str] = set()
    for root in roots:
        real = os.path.realpath(root)
        if real in seen_directories or not os.path.isdir(root):
            continue
        seen_directories.add(real)
        names = _list_directory(root, snapshot)
        for name in names:
            path = posixpath.join(root, name)
            if not name.endswith(_UNIT_SUFFIXES) or name in found:
                continue
            if os.path.islink(path) and os.path.realpath(path) == "/dev/null":
                continue  # masked
            if os.path.isfile(path):
                found[name] = path
    return found


def _enabled_units(roots: tuple[str, ...], snapshot: Snapshot) -> set[str]:
    """Return units enabled through `*.wants/` and `*.requires/` symlinks, as systemctl enable writes them."""
    enabled: set[str] = set()
    for root in roots[:2]:
        for entry in _list_directory(root, snapshot):
            if entry.endswith((".wants", ".requires")):
                enabled.update(_list_directory(posixpath.join(root, entry), snapshot))
    return enabled


def _offline_state(text: str) -> str:
    return "disabled" if re.search(r"^\s*\[Install\]", text, re.MULTILINE) else "static"


def _dropins(name: str, roots: tuple[str, ...], snapshot: Snapshot) -> list[str]:
    paths: dict[str, str] = {}
    for directory_name in unitfile.dropin_dir_names(name):
        for root in reversed(roots):
            directory = posixpath.join(root, directory_name)
            for entry in sorted(_list_directory(directory, snapshot)):
                if entry.endswith(".conf"):
                    # A drop-in of the same name higher on the search path replaces the lower one.
                    paths[entry] = posixpath.join(directory, entry)
    return [paths[entry] for entry in sorted(paths)]


def _list_directory(directory: str, snapshot: Snapshot) -> list[str]:
    """Return a directory's names; an unreadable one counts as `permission-denied:unit-file`, a missing one as empty.

    A drop-in directory that cannot be listed may hold a drop-in that
    replaces ExecStart=, so it makes the scan incomplete instead of empty.
    """
    try:
        return os.listdir(directory)
    except PermissionError:
        snapshot.add_read_error("permission-denied:unit-file")
    except OSError:
        pass
    return []


def _read_text(path: str, snapshot: Snapshot) -> str | None:
    """Return the first _MAX_UNIT_FILE_BYTES of a unit file or drop-in; a FIFO or device counts as unreadable."""
    try:
        data = read_regular_file(path, _MAX_UNIT_FILE_BYTES)
    except PermissionError:
        snapshot.add_read_error("permission-denied:unit-file")
        return None
    except OSError:
        snapshot.add_read_error("unreadable:unit-file")
        return None
    return data.decode("utf-8", errors="replace")


def _worth_keeping(path: str, text: str, instance_binaries: set[str]) -> bool:
    if path.startswith(_OPERATOR_DIRECTORIES) and not os.path.islink(path):
        return True
    if not _INTERESTING_WORDS.search(text):
        return any(binary in text for binary in instance_binaries)
    parsed = unitfile.parse(text, path)
    for entry in parsed.entries:
        if entry.key == "ExecStart" and entry.value:
            argv = unitfile.split_command(entry).argv
            if argv and (identify.manager_kind(argv[0], argv, through_cargo=True) or identify.has_run_subcommand(argv)):
                return True
        if entry.key == "Environment" and re.search(r"BLUEPRINT_ID|SERVICE_ID|TEST_MODE", entry.value):
            return True
    return False


def _run(command: list[str], snapshot: Snapshot) -> str | None:
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_SECONDS, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        snapshot.add_read_error("systemctl-failed")
        return None
    if completed.returncode != 0:
        snapshot.add_read_error("systemctl-failed")
        return None
    return completed.stdout


def _add_live_state(snapshot: Snapshot) -> None:
    listed = _run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--type=service,timer"], snapshot)
    templates = {name for name in snapshot.units if "@." in name}
    # systemctl 252 rejects a template name ("is neither a valid invocation ID
    # nor unit name") and then shows nothing for the other names either, so
    # only the template's instances, found by list-units, go to show.
    names = set(snapshot.units) - templates
    for line in (listed or "").splitlines():
        words = line.split()
        if words and unitfile.template_name(words[0]) in templates:
            names.add(words[0])
    for process in snapshot.processes.values():
        cgroup_unit = _cgroup_service(process.cgroup)
        if cgroup_unit:
            names.add(cgroup_unit)
    if not names:
        return
    output = _run(["systemctl", "show", "--property=" + ",".join(_SHOW_PROPERTIES), "--", *sorted(names)], snapshot)
    if output is None:
        return
    for block in output.strip().split("\n\n"):
        _apply_show_block(snapshot, block)
    global_environment = _run(["systemctl", "show-environment"], snapshot)
    if global_environment is not None:
        snapshot.global_environment = {}
        for line in global_environment.splitlines():
            name, equals, value = line.partition("=")
            if equals:
                stored = redact.keep_environment_value(name, value)
                snapshot.global_environment[name] = stored if stored is not None else redact.REDACTED
    for name, unit in snapshot.units.items():
        if unit.sub_state in ("auto-restart", "failed") or unit.active_state == "failed" or unit.load_state not in (None, "loaded"):
            _add_journal(snapshot, name)


def _cgroup_service(cgroup: str | None) -> str | None:
    if not cgroup:
        return None
    for component in reversed(cgroup.strip("/").split("/")):
        if component.endswith(".service"):
            return component
    return None


def _apply_show_block(snapshot: Snapshot, block: str) -> None:
    properties = {}
    for line in block.splitlines():
        key, _, value = line.partition("=")
        # systemctl show prints one ExecStart= line per command. Keep the
        # first, because the diagnosis reads the first command.
        properties.setdefault(key, value)
    name = properties.get("Id")

    if not name or properties.get("LoadState") == "not-found" and name not in snapshot.units:
        return
    unit = snapshot.units.get(name) or Unit(name=name)
    unit.load_state = properties.get("LoadState") or None
    unit.active_state = properties.get("ActiveState") or None
    unit.sub_state = properties.get("SubState") or None
    unit.unit_file_state = properties.get("UnitFileState") or unit.unit_file_state
    unit.main_pid = _int(properties.get("MainPID"))
    unit.restarts = _int(properties.get("NRestarts"))
    unit.exec_main_status = _int(properties.get("ExecMainStatus"))
    unit.kill_mode = properties.get("KillMode") or None
    unit.fragment = properties.get("FragmentPath") or unit.fragment

    dropins = properties.get("DropInPaths", "").split()
    if dropins:
        unit.dropins = dropins
        for path in dropins:
            if path not in snapshot.files:
                text = _read_text(path, snapshot)
                if text is not None:
                    snapshot.files[path] = redact.redact_file_text(path, text)

    exec_start = properties.get("ExecStart", "")
    match = re.search(r"argv\[\]=(.*?) ;", exec_start)
    if match:
        unit.exec_start = " ".join(redact.redact_argv(match.group(1).split()))
    if unit.fragment and unit.fragment not in snapshot.files and os.path.isfile(unit.fragment):
        text = _read_text(unit.fragment, snapshot)
        if text is not None:
            snapshot.files[unit.fragment] = redact.redact_file_text(unit.fragment, text)
    snapshot.units[name] = unit


def _add_journal(snapshot: Snapshot, name: str) -> None:
    output = _run(["journalctl", "--unit", name, "--lines", "200", "--output", "cat", "--no-pager", "--quiet"], snapshot)
    if output is None:
        return
    kept = [redact.redact_free_text(line) for line in output.splitlines() if is_kept(line)]
    if kept:
        snapshot.journals[name] = kept[-20:]


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None
