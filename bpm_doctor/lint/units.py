"""Lint systemd unit files: fragments, drop-ins and unit text written by scripts.

A fragment and the drop-ins beside it (`x.service.d/*.conf`) are merged
into the effective unit first, as systemd does, so a drop-in that replaces
the manager's ExecStart is judged by what systemd would run.
"""

from __future__ import annotations

import posixpath

from bpm_doctor import unitfile
from bpm_doctor.lint.commands import expand
from bpm_doctor.lint.context import LintContext, coordinates, pinned_names, show_command
from bpm_doctor.model import Finding, Severity

UNIT_SUFFIXES = (".service", ".timer", ".socket")
# KillMode values that let instances outlive a stopped or restarted manager.
_RISKY_KILL_MODES = {"process", "mixed", "none"}


def unit_name_of(path: str) -> str:
    """Return the unit a file configures: its basename, or the unit of a drop-in directory."""
    directory = posixpath.basename(posixpath.dirname(path))
    if path.endswith(".conf") and directory.endswith(".d"):
        return directory[:-2]
    return posixpath.basename(path)


def parse_at(text: str, path: str, first_line: int = 1) -> unitfile.UnitFile:
    """Parse unit text that starts at `first_line` of its file, so entries keep file line numbers."""
    return unitfile.parse("\n" * (first_line - 1) + text, path)


def collect_manager_facts(files: list[unitfile.UnitFile], ctx: LintContext) -> None:
    """Record a manager unit's name and settings file, for the other file linters."""
    name = unit_name_of(files[0].path)
    effective = unitfile.effective(name, files)
    for command in effective.exec_start:
        for launch in expand(command.argv, effective.environment):
            if not ctx.is_manager(launch.argv):
                continue
            ctx.manager_units.update({name, name.removesuffix(".service")})
            settings = _settings_file(launch.argv)
            ctx.settings_names.add(posixpath.basename(settings) if settings else "settings.env")


def _settings_file(argv: list[str]) -> str | None:
    for index, word in enumerate(argv):
        flag, equals, value = word.partition("=")
        if flag in ("--settings-file", "-f"):
            if equals:
                return value
            return argv[index + 1] if index + 1 < len(argv) else None
    return None


def lint_unit(files: list[unitfile.UnitFile], ctx: LintContext, reported: set[str],
              name: str | None = None) -> list[Finding]:
    """Lint one unit from its fragment (first, when known) and drop-ins.

    Findings are kept only for entries in files named in `reported`; the
    other files give context, such as a fragment beside a linted drop-in.
    """
    name = name or unit_name_of(files[0].path)
    effective = unitfile.effective(name, files)
    environment = effective.environment
    findings: list[Finding] = []
    is_manager = False

    for command in effective.exec_start:
        for launch in expand(command.argv, environment):
            if ctx.is_manager(launch.argv):
                is_manager = True
                unknown = ctx.unknown_flag_finding(launch.argv, path=command.path, line=command.line,
                                                   where=f"unit {name}", unit=name)
                if unknown is not None:
                    findings.append(unknown)
            elif ctx.is_instance(launch):
                findings.append(_direct_run(name, command, launch, environment, ctx))

    if is_manager:
        findings.extend(_kill_mode(name, effective, ctx))
    findings.extend(_dropin_overrides(name, files, effective, ctx))
    for unit_file in files:
        for entry in unit_file.entries:
            findings.extend(ctx.placeholder_findings(
                entry.value, path=entry.path, line=entry.line, subject=f"{entry.key}= in unit {name}", unit=name,
            ))
    return [finding for finding in findings if finding.path in reported]


def _direct_run(name: str, command: unitfile.Command, launch, environment: dict[str, str],
                ctx: LintContext) -> Finding:
    evidence = [f"ExecStart: {show_command(command.argv)}"]
    pinned = pinned_names(environment)
    if pinned:
        evidence.append(f"the unit sets {', '.join(pinned)}")
    return ctx.make(
        "direct-run-unit",
        f"unit {name} starts the instance binary {posixpath.basename(launch.argv[0])} itself, "
        "bypassing the Blueprint Manager",
        path=command.path, line=command.line, unit=name, launcher="systemd-unit",
        binary=launch.argv[0], evidence=evidence, **coordinates(launch, environment),
    )


def _kill_mode(name: str, effective: unitfile.EffectiveUnit, ctx: LintContext) -> list[Finding]:
    entry = effective.entry("KillMode")
    if entry is None or entry.value not in _RISKY_KILL_MODES:
        return []
    return [ctx.make(
        "killmode-not-control-group",
        f"manager unit {name} sets KillMode={entry.value}: stopping or restarting it can leave its "
        "instances running as orphans",
        path=entry.path, line=entry.line, unit=name, severity=Severity.WARNING,
    )]


def _dropin_overrides(name: str, files: list[unitfile.UnitFile], effective: unitfile.EffectiveUnit,
                      ctx: LintContext) -> list[Finding]:
    """Report drop-ins that break or replace a manager unit's ExecStart.

    With the fragment known, the rule is the host's: a second ExecStart
    without the empty `ExecStart=` reset makes systemd refuse the unit, and
    a reset followed by a non-manager command replaces the manager. With
    only the drop-in, its own ExecStart shows that it targets a manager, and
    a missing reset is reported.
    """
    fragment = files[0] if not files[0].path.endswith(".conf") else None
    dropins = [f for f in files if f is not fragment]
    if not dropins:
        return []
    findings = []
    if fragment is not None:
        if not _starts_manager(fragment.entries, ctx):
            return []
        for entry in effective.exec_start_errors:
            findings.append(_second_exec_start(name, entry, ctx))
        commands = effective.exec_start
        if commands and not effective.exec_start_errors:
            final = commands[0]
            if final.path != fragment.path and not _launches_manager(final.argv, ctx):
                findings.append(ctx.make(
                    "dropin-overrides-execstart",
                    f"drop-in replaces the ExecStart of manager unit {name} with "
                    f"{posixpath.basename(final.executable)}, which is not a manager daemon",
                    path=final.path, line=final.line, unit=name,
                    evidence=[f"ExecStart: {show_command(final.argv)}"],
                ))
        return findings
    for dropin in dropins:
        reset = False
        for entry in dropin.entries:
            if entry.key != "ExecStart":
                continue
            if entry.value == "":
                reset = True
            elif not reset and _launches_manager(unitfile.split_command(entry).argv, ctx):
                findings.append(_second_exec_start(name, entry, ctx))
    return findings


def _second_exec_start(name: str, entry: unitfile.Entry, ctx: LintContext) -> Finding:
    return ctx.make(
        "dropin-overrides-execstart",
        f"drop-in adds a second ExecStart= to manager unit {name} without an empty `ExecStart=` reset, "
        "so systemd refuses to load the unit",
        path=entry.path, line=entry.line, unit=name,
        evidence=[f"ExecStart: {show_command(unitfile.split_command(entry).argv)}"],
    )


def _starts_manager(entries: list[unitfile.Entry], ctx: LintContext) -> bool:
    return any(_launches_manager(unitfile.split_command(entry).argv, ctx)
               for entry in entries if entry.key == "ExecStart" and entry.value)


def _launches_manager(argv: list[str], ctx: LintContext) -> bool:
    return any(ctx.is_manager(launch.argv) for launch in expand(argv))
