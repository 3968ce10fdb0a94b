"""Data passed along the pipeline: a host snapshot in, findings out.

A `Snapshot` is everything the collectors saw on one host, already stripped of
secret values. `diagnose` turns it into `Finding`s without touching the host,
so a snapshot saved on an operator box gives the same verdict anywhere.
"""

from __future__ import annotations

import enum
import posixpath
from dataclasses import dataclass, field


class Severity(enum.IntEnum):
    """Finding severity, ordered so that `max()` gives the worst."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"invalid severity {text!r}: expected info, warning or critical") from None


@dataclass
class Process:
    """One process as the collectors saw it.

    `env` holds only the variables listed in `bpm_doctor.redact.KEPT_ENVIRONMENT`;
    every other value was dropped when it was read. `unreadable` names the
    attributes (`environ`, `exe`, `cwd`, `cgroup`) that could not be read.
    `uid` is the owner of the process's /proc files: its effective uid, or
    root for a process that is not dumpable (proc(5)).
    """

    pid: int
    ppid: int
    uid: int | None = None
    cgroup: str | None = None
    exe: str | None = None
    cwd: str | None = None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    start: str | None = None
    pgid: int | None = None
    sid: int | None = None
    unreadable: set[str] = field(default_factory=set)

    @property
    def exe_name(self) -> str:
        """Return the executable's basename, falling back to argv[0]."""
        if self.exe:
            return posixpath.basename(self.exe.removesuffix(" (deleted)"))
        if self.argv:
            return posixpath.basename(self.argv[0])
        return ""


@dataclass
class Unit:
    """One systemd unit, with the properties `systemctl show` reports.

    A property the collector did not learn is None ("unknown"), never a guess.
    """

    name: str
    fragment: str | None = None
    dropins: list[str] = field(default_factory=list)
    unit_file_state: str | None = None
    load_state: str | None = None
    active_state: str | None = None
    sub_state: str | None = None
    main_pid: int | None = None
    restarts: int | None = None
    exec_main_status: int | None = None
    exec_start: str | None = None
    inactive_since: str | None = None
    kill_mode: str | None = None

    @property
    def enabled(self) -> bool:
        return self.unit_file_state in ("enabled", "enabled-runtime", "linked", "linked-runtime")

    @property
    def running(self) -> bool:
        return self.active_state in ("active", "reloading") or self.sub_state == "running"

    @property
    def template_instance(self) -> str | None:
        """Return the instance name of a template unit (`keeper@9.timer` gives "9")."""
        stem, _, _suffix = self.name.rpartition(".")
        if "@" not in stem:
            return None
        instance = stem.split("@", 1)[1]
        return instance or None


@dataclass
class PathEntry:
    """A path whose existence was checked: type `file`, `dir`, `socket` or `missing`."""

    path: str
    kind: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Listener:
    """A listening socket: protocol `tcp` or `unix`, and the owning pid if known."""

    protocol: str
    address: str
    pid: int | None = None


@dataclass
class Snapshot:
    """What the collectors saw on one host, with secret values already removed."""

    arch: str | None = None
    processes: dict[int, Process] = field(default_factory=dict)
    units: dict[str, Unit] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    paths: dict[str, PathEntry] = field(default_factory=dict)
    listeners: list[Listener] | None = None
    journals: dict[str, list[str]] = field(default_factory=dict)
    crontabs: dict[str, str] = field(default_factory=dict)
    global_environment: dict[str, str] | None = None
    active_services: set[tuple[int, int]] | None = None
    active_services_source: str | None = None
    read_errors: dict[str, int] = field(default_factory=dict)
    source: str = "host"

    def path_state(self, path: str) -> str:
        """Return "exists", "missing" or "unknown" for an absolute path.

        A path exists when a file section or a path entry names it, and is
        missing when it or one of its parent directories is recorded as missing.
        Anything else is unknown, and no finding may treat it as missing.
        """
        path = posixpath.normpath(path)
        if path in self.files:
            return "exists"
        entry = self.paths.get(path)
        if entry is not None:
            return "missing" if entry.kind == "missing" else "exists"
        parent = posixpath.dirname(path)
        while parent and parent != "/":
            entry = self.paths.get(parent)
            if entry is not None and entry.kind == "missing":
                return "missing"
            parent = posixpath.dirname(parent)
        return "unknown"

    def listening_pids(self, address: str) -> set[int | None]:
        """Return the pids listening on a unix path or TCP address (None: pid unknown)."""
        pids: set[int | None] = set()
        for listener in self.listeners or []:
            if listener.address == address:
                pids.add(listener.pid)
        entry = self.paths.get(address)
        if entry is not None and "owner-pid" in entry.attrs:
            pids.add(_int_or_none(entry.attrs["owner-pid"]))
        return pids

    def add_read_error(self, reason: str, count: int = 1) -> None:
        self.read_errors[reason] = self.read_errors.get(reason, 0) + count


@dataclass
class Finding:
    """One problem, identified by a stable catalogue id.

    Fields that identify the object (`pid`, `unit`, `path`) hold one value or a
    sorted list when the finding concerns several objects at once.
    """

    id: str
    severity: Severity
    summary: str
    remedy: str
    pid: int | list[int] | None = None
    unit: str | list[str] | None = None
    path: str | list[str] | None = None
    line: int | None = None
    blueprint_id: int | None = None
    service_id: int | None = None
    launcher: str | None = None
    evidence: list[str] = field(default_factory=list)
    allowed_reason: str | None = None
    suppressed: bool = False

    def field_values(self, name: str) -> list:
        """Return the values of a field as a list, for matching one or many."""
        value = getattr(self, name, None)
        if value is None:
            return []
        if isinstance(value, list):
            return list(value)
        return [value]


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
