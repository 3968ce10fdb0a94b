"""Read and write host snapshots in the `hostsnap/0` text format.

A snapshot file is a header of `#` lines, then sections that each start with
a line `#=== <type> [argument]`:

    host                 arch: as `uname -m` prints it
    unit NAME            fragment, dropins, unitfile, load, active, sub, mainpid,
                         nrestarts, execmainstatus, execstart, inactive_since, killmode
    file PATH            the file's content, verbatim
    proc PID             ppid, uid, cgroup, exe, cwd, argv, env: NAME=VALUE (repeated),
                         start, pgid, sid, unreadable
    listen               `tcp ADDR:PORT pid=N` or `unix PATH pid=N`
    journal UNIT         message lines, oldest first
    paths                `TYPE PATH [key=value ...]`, TYPE file, dir, socket or missing
    crontab USER         the crontab, raw
    show-environment     `systemctl show-environment` output
    active-services      `source: ...`, then `BLUEPRINT/SERVICE` lines
    read-errors          `REASON: COUNT`, what the collector could not read

Control characters inside a process's argv words, cwd, exe, cgroup or kept
environment values, a journal message or a path are written as backslash
escapes (`\\n`, `\\x1b`), so every value stays on its line and none
reaches a terminal that shows the file. A line of a file, journal or
crontab section that starts with `#===` is written with a leading space,
so that it cannot start a section. A process's `uid` is the owner of its
/proc files, as a scan reads it: the effective uid, or 0 for a process
that is not dumpable (proc(5)).

Unknown section types and keys are ignored, so older readers accept newer
files. Every value passes through `bpm_doctor.redact` on the way in and out,
so a snapshot never carries a secret even when its input did.
"""

from __future__ import annotations

import os
import shlex

from bpm_doctor import redact
from bpm_doctor.controls import escape_controls
from bpm_doctor.errors import DoctorError, InputError
from bpm_doctor.model import Listener, PathEntry, Process, Snapshot, Unit
from bpm_doctor.readfile import read_regular_file, write_text_atomically

# A snapshot keeps only the processes, units and files that matter: 2.7 kB
# on the development machine. A far larger file is not a snapshot, and reading it
# whole would only exhaust memory.
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024

FORMAT = "hostsnap/0"
SECTION_MARK = "#==="

_UNIT_KEYS = {
    "fragment": "fragment",
    "unitfile": "unit_file_state",
    "load": "load_state",
    "active": "active_state",
    "sub": "sub_state",
    "execstart": "exec_start",
    "inactive_since": "inactive_since",
    "killmode": "kill_mode",
}
_UNIT_INT_KEYS = {"mainpid": "main_pid", "nrestarts": "restarts", "execmainstatus": "exec_main_status"}
_PROC_INT_KEYS = ("ppid", "uid", "pgid", "sid")


def load(path: str | os.PathLike[str]) -> Snapshot:
    """Read a snapshot file. Raises InputError naming the file and line on bad input."""
    path = os.fspath(path)
    try:
        data = read_regular_file(path, MAX_SNAPSHOT_BYTES + 1)
    except OSError as error:
        raise InputError(f"{path}: cannot read snapshot: {error.strerror}") from error
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise InputError(f"{path}: not a snapshot: larger than {MAX_SNAPSHOT_BYTES // (1024 * 1024)} MiB")
    snapshot = parse(data.decode("utf-8", "surrogateescape"), path)
    snapshot.source = f"snapshot {path}"
    return snapshot


def parse(text: str, path: str = "<snapshot>") -> Snapshot:
    """Parse snapshot text into a Snapshot, redacting as it goes."""
    snapshot = Snapshot(source=f"snapshot {path}")
    # Some Windows tools write UTF-8 with a byte order mark. Left in place, it
    # hides a section mark on the first line and with it that section.
    sections = _split_sections(text.removeprefix("\ufeff"))
    if not sections:
        raise InputError(f"{path}:1: not a {FORMAT} snapshot: no '{SECTION_MARK} <type>' section found")
    seen: set[tuple[str, str]] = set()
    for kind, argument, lines, line_number in sections:
        if kind in ("proc", "unit", "file"):
            if (kind, argument) in seen:
                # A second section would silently replace the first, and with it a finding.
                raise InputError(f"{path}:{line_number}: duplicate section '{kind} {argument}'")
            seen.add((kind, argument))
        reader = _READERS.get(kind)
        if reader is None:
            continue
        reader(snapshot, argument, lines, path, line_number)
    return snapshot


def _split_sections(text: str) -> list[tuple[str, str, list[str], int]]:
    sections: list[tuple[str, str, list[str], int]] = []
    current: tuple[str, str, list[str], int] | None = None
    for number, line in enumerate(text.split("\n"), start=1):
        if line.startswith(SECTION_MARK):
            header = line[len(SECTION_MARK):].strip()
            kind, _, argument = header.partition(" ")
            current = (kind, argument.strip(), [], number)
            sections.append(current)
        elif current is not None:
            current[2].append(line)
    return sections


def _key_values(lines: list[str], path: str, first_line: int) -> list[tuple[str, str, int]]:
    pairs = []
    for offset, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise InputError(f"{path}:{first_line + offset}: expected 'key: value', got {line.strip()[:60]!r}")
        pairs.append((key.strip(), value.strip(), first_line + offset))
    return pairs


def _integer(value: str, path: str, line: int, key: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{path}:{line}: invalid {key} {value[:40]!r}: expected a whole number") from None


def _read_host(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    for key, value, _line in _key_values(lines, path, first_line):
        if key == "arch":
            snapshot.arch = value or None


def _read_unit(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    if not argument:
        raise InputError(f"{path}:{first_line}: unit section without a unit name")
    unit = Unit(argument)
    for key, value, line in _key_values(lines, path, first_line):
        if key in _UNIT_KEYS:
            if key == "execstart":
                value = " ".join(redact.redact_argv(_split_argv(value)))
            setattr(unit, _UNIT_KEYS[key], value or None)
        elif key in _UNIT_INT_KEYS:
            setattr(unit, _UNIT_INT_KEYS[key], _integer(value, path, line, key) if value else None)
        elif key == "dropins":
            unit.dropins = value.split()
    snapshot.units[unit.name] = unit


def _read_file(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    if not argument.startswith("/"):
        raise InputError(f"{path}:{first_line}: file section needs an absolute path, got {argument[:80]!r}")
    content = "\n".join(lines)
    snapshot.files[os.path.normpath(argument)] = redact.redact_file_text(argument, content)


def _split_argv(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()


def _read_proc(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    pid = _integer(argument, path, first_line, "pid")
    process = Process(pid=pid, ppid=0)
    environ: dict[str, str] = {}
    for key, value, line in _key_values(lines, path, first_line):
        if key in _PROC_INT_KEYS:
            setattr(process, key, _integer(value, path, line, key))
        elif key in ("cgroup", "exe", "cwd", "start"):
            setattr(process, key, value or None)
        elif key == "argv":
            process.argv = redact.redact_argv(_split_argv(value))
        elif key == "env":
            name, equals, assigned = value.partition("=")
            if not equals:
                raise InputError(f"{path}:{line}: invalid env line {value[:60]!r}: expected NAME=VALUE")
            environ[name] = assigned
        elif key == "unreadable":
            process.unreadable = set(value.split())
    process.env = redact.filter_environment(environ)
    snapshot.processes[pid] = process


def _read_listen(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    listeners = snapshot.listeners if snapshot.listeners is not None else []
    for offset, line in enumerate(lines, start=1):
        words = line.split()
        if not words:
            continue
        if len(words) < 2 or words[0] not in ("tcp", "unix"):
            raise InputError(
                f"{path}:{first_line + offset}: invalid listen line {line.strip()[:60]!r}: "
                "expected 'tcp ADDR:PORT pid=N' or 'unix PATH pid=N'"
            )
        pid = None
        for word in words[2:]:
            if word.startswith("pid="):
                pid = _integer(word[4:], path, first_line + offset, "pid")
        listeners.append(Listener(words[0], words[1], pid))
    snapshot.listeners = listeners


def _read_journal(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    kept = [redact.redact_free_text(line) for line in lines if line.strip()]
    snapshot.journals.setdefault(argument, []).extend(kept)


def _read_paths(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    for offset, line in enumerate(lines, start=1):
        words = line.split()
        if not words:
            continue
        if len(words) < 2 or words[0] not in ("file", "dir", "socket", "missing"):
            raise InputError(
                f"{path}:{first_line + offset}: invalid paths line {line.strip()[:60]!r}: "
                "expected 'file|dir|socket|missing PATH [key=value ...]'"
            )
        attrs = {}
        for word in words[2:]:
            key, _, value = word.partition("=")
            attrs[key] = redact.redact_token(value) if key == "content" else value
        normalized = os.path.normpath(words[1])
        snapshot.paths[normalized] = PathEntry(normalized, words[0], attrs)


def _read_crontab(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    snapshot.crontabs[argument or "root"] = "\n".join(redact.redact_free_text(line) for line in lines).strip("\n")


def _read_show_environment(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    environment: dict[str, str] = {}
    for line in lines:
        name, equals, value = line.strip().partition("=")
        if not equals:
            continue
        stored = redact.keep_environment_value(name, value)
        environment[name] = stored if stored is not None else redact.REDACTED
    snapshot.global_environment = environment


def _read_active_services(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    services: set[tuple[int, int]] = set()
    for offset, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("source:"):
            snapshot.active_services_source = text.partition(":")[2].strip()
            continue
        blueprint, slash, service = text.partition("/")
        if not slash:
            raise InputError(f"{path}:{first_line + offset}: invalid active service {text[:40]!r}: expected BLUEPRINT/SERVICE")
        services.add(
            (
                _integer(blueprint, path, first_line + offset, "blueprint id"),
                _integer(service, path, first_line + offset, "service id"),
            )
        )
    snapshot.active_services = services


def _read_errors(snapshot: Snapshot, argument: str, lines: list[str], path: str, first_line: int) -> None:
    # Reasons contain colons (`permission-denied:environ`), so the count is after the last one.
    for offset, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        reason, colon, count = line.rpartition(":")
        if not colon or not reason.strip():
            raise InputError(f"{path}:{first_line + offset}: expected 'REASON: COUNT', got {line.strip()[:60]!r}")
        snapshot.add_read_error(reason.strip(), _integer(count.strip(), path, first_line + offset, "count"))


_READERS = {
    "host": _read_host,
    "unit": _read_unit,
    "file": _read_file,
    "proc": _read_proc,
    "listen": _read_listen,
    "journal": _read_journal,
    "paths": _read_paths,
    "crontab": _read_crontab,
    "show-environment": _read_show_environment,
    "active-services": _read_active_services,
    "read-errors": _read_errors,
}


def render(snapshot: Snapshot, header: str = "") -> str:
    """Render a snapshot in the `hostsnap/0` format."""
    out: list[str] = [f"# bpm-doctor snapshot, format {FORMAT}"]
    if header:
        out.extend(f"# {line}" if line else "#" for line in header.splitlines())
    out += [f"{SECTION_MARK} host", f"arch: {snapshot.arch or ''}"]

    for name in sorted(snapshot.units):
        out.extend(_render_unit(snapshot.units[name]))
    for file_path in sorted(snapshot.files):
        out.append(f"{SECTION_MARK} file {file_path}")
        content = redact.redact_file_text(file_path, snapshot.files[file_path])
        out.extend(_body_line(line) for line in content.split("\n"))
    for pid in sorted(snapshot.processes):
        out.extend(_render_process(snapshot.processes[pid]))
    if snapshot.listeners is not None:
        out.append(f"{SECTION_MARK} listen")
        for listener in snapshot.listeners:
            owner = f" pid={listener.pid}" if listener.pid is not None else ""
            out.append(f"{listener.protocol} {listener.address}{owner}")
    for unit_name in sorted(snapshot.journals):
        out.append(f"{SECTION_MARK} journal {unit_name}")
        out.extend(_body_line(_one_line(redact.redact_free_text(line))) for line in snapshot.journals[unit_name])
    if snapshot.paths:
        out.append(f"{SECTION_MARK} paths")
        for entry_path in sorted(snapshot.paths):
            entry = snapshot.paths[entry_path]
            attrs = "".join(f" {key}={value}" for key, value in sorted(entry.attrs.items()))
            out.append(f"{entry.kind} {_one_line(entry.path)}{attrs}")
    for user in sorted(snapshot.crontabs):
        out.append(f"{SECTION_MARK} crontab {user}")
        out.extend(_body_line(redact.redact_free_text(line)) for line in snapshot.crontabs[user].split("\n"))
    if snapshot.global_environment is not None:
        out.append(f"{SECTION_MARK} show-environment")
        for name, value in sorted(snapshot.global_environment.items()):
            stored = redact.keep_environment_value(name, value)
            out.append(f"{name}={stored if stored is not None else redact.REDACTED}")
    if snapshot.active_services is not None:
        out.append(f"{SECTION_MARK} active-services")
        out.append(f"source: {snapshot.active_services_source or 'unknown'}")
        out.extend(f"{blueprint}/{service}" for blueprint, service in sorted(snapshot.active_services))
    if snapshot.read_errors:
        out.append(f"{SECTION_MARK} read-errors")
        out.extend(f"{reason}: {count}" for reason, count in sorted(snapshot.read_errors.items()))
    return "\n".join(out) + "\n"


def _render_unit(unit: Unit) -> list[str]:
    lines = [f"{SECTION_MARK} unit {unit.name}"]
    for key, attribute in list(_UNIT_KEYS.items()) + list(_UNIT_INT_KEYS.items()):
        value = getattr(unit, attribute)
        if value is None:
            continue
        if key == "execstart":
            value = " ".join(redact.redact_argv(_split_argv(value)))
        lines.append(f"{key}: {value}")
    if unit.dropins:
        lines.append(f"dropins: {' '.join(unit.dropins)}")
    return lines


def _body_line(line: str) -> str:
    """Return a line of a file, journal or crontab section that cannot start a section of its own.

    A line that starts with the section mark gets a leading space, which
    reading keeps. Control characters are left alone: a crontab separates
    its fields with tabs.
    """
    return " " + line if line.startswith(SECTION_MARK) else line


def _one_line(text: str) -> str:
    """Return text with each control character written as a backslash escape, so it fits on one line.

    Reading does not undo this: an argv word such as a `bash -c` script
    comes back with a literal backslash and letter in place of each break.
    """
    return escape_controls(text)


def _render_process(process: Process) -> list[str]:
    lines = [f"{SECTION_MARK} proc {process.pid}", f"ppid: {process.ppid}"]
    for key in ("uid", "pgid", "sid", "cgroup", "exe", "cwd", "start"):
        value = getattr(process, key)
        if value is not None:
            lines.append(f"{key}: {_one_line(str(value))}")
    argv = [_one_line(word) for word in redact.redact_argv(process.argv)]
    lines.append(f"argv: {shlex.join(argv)}")
    for name, value in sorted(redact.filter_environment(process.env).items()):
        lines.append(f"env: {name}={_one_line(value)}")
    if process.unreadable:
        lines.append(f"unreadable: {' '.join(sorted(process.unreadable))}")
    return lines


def save(snapshot: Snapshot, path: str, header: str = "") -> None:
    """Write a snapshot atomically: a temporary file in the same directory, then rename.

    A crash or a full disk leaves the previous file, never half of a new one.
    Raises DoctorError naming the path when the file cannot be written.
    """
    text = render(snapshot, header)
    try:
        write_text_atomically(path, text, mode=0o600)
    except OSError as error:
        raise DoctorError(f"cannot write snapshot {path}: {error.strerror or error}") from error
