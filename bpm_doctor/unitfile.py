"""Parse systemd unit files and merge drop-ins into the effective settings.

Follows systemd.syntax(7) and systemd.unit(5): `#` and `;` start comment
lines, a trailing backslash continues a line (comment lines inside a
continuation are skipped), and drop-ins in `<unit>.d/*.conf` are applied in
order after the fragment. For list settings such as `ExecStart=` and
`Environment=`, an empty assignment resets the list.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, field

# Settings that accumulate across lines and files, and are reset by an empty
# assignment (systemd.service(5), systemd.exec(5)).
_LIST_SETTINGS = {
    "ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload",
    "Environment", "EnvironmentFile",
}


@dataclass(frozen=True)
class Entry:
    """One `Key=value` line of a unit file."""

    section: str
    key: str
    value: str
    path: str
    line: int


@dataclass
class UnitFile:
    """The entries of one unit file, in file order."""

    path: str
    entries: list[Entry] = field(default_factory=list)


def parse(text: str, path: str = "<unit>") -> UnitFile:
    """Parse unit file text into entries. Malformed lines are skipped, as systemd does."""
    unit = UnitFile(path)
    section = ""
    pending: str | None = None
    pending_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if pending is not None and line[:1] in ("#", ";"):
            continue
        if pending is None:
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            pending, pending_line = line, number
        else:
            pending = pending + " " + line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        _add_entry(unit, section, pending, pending_line)
        pending = None
    if pending is not None:
        _add_entry(unit, section, pending, pending_line)
    return unit


def _add_entry(unit: UnitFile, section: str, line: str, number: int) -> None:
    key, equals, value = line.partition("=")
    if not equals:
        return
    unit.entries.append(Entry(section, key.strip(), value.strip(), unit.path, number))


@dataclass
class Command:
    """One Exec line split into argv, with its systemd prefix characters removed."""

    argv: list[str]
    prefix: str
    path: str
    line: int

    @property
    def executable(self) -> str:
        return self.argv[0] if self.argv else ""


@dataclass
class EffectiveUnit:
    """Settings of a unit after its drop-ins are applied."""

    name: str
    files: list[UnitFile]
    settings: dict[str, Entry] = field(default_factory=dict)
    lists: dict[str, list[Entry]] = field(default_factory=dict)
    exec_start_errors: list[Entry] = field(default_factory=list)

    def get(self, key: str, default: str | None = None) -> str | None:
        entry = self.settings.get(key)
        return entry.value if entry is not None else default

    def entry(self, key: str) -> Entry | None:
        return self.settings.get(key)

    @property
    def exec_start(self) -> list[Command]:
        return [split_command(entry) for entry in self.lists.get("ExecStart", [])]

    @property
    def environment(self) -> dict[str, str]:
        """Return `Environment=` assignments; a later assignment wins."""
        merged: dict[str, str] = {}
        for entry in self.lists.get("Environment", []):
            merged.update(parse_environment_value(entry.value))
        return merged

    def environment_lines(self) -> list[tuple[str, str, Entry]]:
        found = []
        for entry in self.lists.get("Environment", []):
            for name, value in parse_environment_value(entry.value).items():
                found.append((name, value, entry))
        return found

    @property
    def environment_files(self) -> list[tuple[str, bool, Entry]]:
        """Return (path, optional, entry) for each `EnvironmentFile=`; `-` marks optional."""
        found = []
        for entry in self.lists.get("EnvironmentFile", []):
            for word in _split_words(entry.value):
                optional = word.startswith("-")
                found.append((word.lstrip("-"), optional, entry))
        return found

    @property
    def service_type(self) -> str:
        return self.get("Type") or "simple"


def effective(name: str, files: list[UnitFile]) -> EffectiveUnit:
    """Merge a fragment and its drop-ins, in the order given.

    `exec_start_errors` lists the `ExecStart=` entries that leave a
    non-oneshot service with more than one command, which systemd rejects with
    "Service has more than one ExecStart= setting" and load state bad-setting.
    """
    unit = EffectiveUnit(name, files)
    for unit_file in files:
        for entry in unit_file.entries:
            if entry.key in _LIST_SETTINGS:
                values = unit.lists.setdefault(entry.key, [])
                if entry.value == "":
                    values.clear()
                else:
                    values.append(entry)
            else:
                unit.settings[entry.key] = entry
    starts = unit.lists.get("ExecStart", [])
    if len(starts) > 1 and unit.service_type != "oneshot":
        unit.exec_start_errors = starts[1:]
    return unit


def split_command(entry: Entry) -> Command:
    """Split an Exec line into argv the way systemd quotes words."""
    value = entry.value
    prefix = ""
    while value[:1] in ("-", "@", ":", "+", "!"):
        prefix += value[0]
        value = value[1:]
    return Command(_split_words(value), prefix, entry.path, entry.line)


def _split_words(value: str) -> list[str]:
    try:
        return shlex.split(value, comments=False, posix=True)
    except ValueError:
        return value.split()


def parse_environment_value(value: str) -> dict[str, str]:
    """Parse the value of one `Environment=` line (`A=1 "B=two words"`)."""
    assignments: dict[str, str] = {}
    for word in _split_words(value):
        name, equals, assigned = word.partition("=")
        if equals and name:
            assignments[name] = assigned
    return assignments


def template_name(unit_name: str) -> str | None:
    """Return the template a unit instance is made from (`a@9.timer` gives `a@.timer`)."""
    stem, dot, suffix = unit_name.rpartition(".")
    if "@" not in stem:
        return None
    return stem.split("@", 1)[0] + "@" + dot + suffix


def dropin_dir_names(unit_name: str) -> list[str]:
    """Return the drop-in directory names that apply to a unit, most general first.

    A template instance also takes the template's drop-ins.
    """
    names = []
    template = template_name(unit_name)
    if template:
        names.append(template + ".d")
    names.append(unit_name + ".d")
    return names


def specifier_instance(text: str, instance: str | None) -> str:
    """Replace the `%i` and `%I` specifiers with the instance name, when known."""
    if instance is None:
        return text
    return text.replace("%i", instance).replace("%I", instance)


def unit_basename(path: str) -> str:
    return posixpath.basename(path)
