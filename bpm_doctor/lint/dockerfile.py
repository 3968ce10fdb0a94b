"""Lint Dockerfiles: an image whose ENTRYPOINT or CMD runs the instance.

The program of the final stage is what `docker run IMAGE` starts: the
exec-form ENTRYPOINT followed by the exec-form CMD, or a shell-form
ENTRYPOINT alone (`/bin/sh -c "..."`, which ignores CMD), or CMD alone.
ENV lines of the stage (and of the stages it builds `FROM`) are the
program's environment. Only the default `\\` escape character is handled.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field

from bpm_doctor.lint.commands import expand
from bpm_doctor.lint.context import LintContext, coordinates, pinned_names, show_command
from bpm_doctor.model import Finding

_INSTRUCTION = re.compile(r"^\s*([A-Za-z]+)\s*(.*)$", re.DOTALL)


@dataclass
class _Stage:
    environment: dict[str, str] = field(default_factory=dict)
    entrypoint: tuple[list[str], bool, int] | None = None  # (words, shell form, line)
    command: tuple[list[str], bool, int] | None = None


def _instructions(text: str) -> list[tuple[int, str, str]]:
    """Return (line, INSTRUCTION, arguments) with continuation lines joined."""
    found = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        match = _INSTRUCTION.match(" ".join(pending))
        pending = []
        if match:
            found.append((start, match.group(1).upper(), match.group(2).strip()))
    if pending:
        match = _INSTRUCTION.match(" ".join(pending))
        if match:
            found.append((start, match.group(1).upper(), match.group(2).strip()))
    return found


def _exec_or_shell(arguments: str) -> tuple[list[str], bool]:
    if arguments.startswith("["):
        try:
            value = json.loads(arguments)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value, False
    return ["/bin/sh", "-c", arguments], True


def _env_pairs(arguments: str) -> dict[str, str]:
    try:
        words = shlex.split(arguments)
    except ValueError:
        words = arguments.split()
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    pairs = {}
    for word in words:
        name, equals, value = word.partition("=")
        if equals:
            pairs[name] = value
    return pairs


def _final_stage(text: str) -> _Stage:
    """Return the final build stage, with what it inherits from an earlier stage it builds on."""
    stages: dict[str, _Stage] = {}
    stage = _Stage()
    for line, instruction, arguments in _instructions(text):
        if instruction == "FROM":
            words = arguments.split()
            words = [word for word in words if not word.startswith("--")]
            base = stages.get(words[0].lower()) if words else None
            stage = _Stage(dict(base.environment), base.entrypoint, base.command) if base else _Stage()
            if len(words) >= 3 and words[1].lower() == "as":
                stages[words[2].lower()] = stage
        elif instruction == "ENV":
            stage.environment.update(_env_pairs(arguments))
        elif instruction == "ENTRYPOINT":
            words, shell_form = _exec_or_shell(arguments)
            stage.entrypoint = (words, shell_form, line)
            stage.command = None
        elif instruction == "CMD":
            words, shell_form = _exec_or_shell(arguments)
            stage.command = (words, shell_form, line)
    return stage


def collect_container_scripts(text: str, ctx: LintContext) -> None:
    """Record the script the image starts, so its entrypoint script is known as such."""
    stage = _final_stage(text)
    for part in (stage.entrypoint, stage.command):
        if part is not None and part[0] and not part[1]:
            ctx.container_scripts.add(posixpath.basename(part[0][0]))


def lint_dockerfile(path: str, text: str, ctx: LintContext) -> list[Finding]:
    stage = _final_stage(text)
    if stage.entrypoint is not None:
        words, shell_form, line = stage.entrypoint
        argv = list(words)
        if not shell_form and stage.command is not None and not stage.command[1]:
            argv += stage.command[0]
    elif stage.command is not None:
        argv, _shell_form, line = stage.command
    else:
        return []
    findings = []
    for launch in expand(argv, dict(stage.environment)):
        if ctx.is_manager(launch.argv):
            finding = ctx.unknown_flag_finding(launch.argv, path=path, line=line,
                                               where=f"image {posixpath.basename(path)}")
            if finding is not None:
                findings.append(finding)
        elif ctx.is_instance(launch):
            evidence = [f"program: {show_command(launch.argv)}"]
            pinned = pinned_names(launch.env)
            if pinned:
                evidence.append(f"ENV sets {', '.join(pinned)}")
            findings.append(ctx.make(
                "container-runs-instance",
                f"the image of {posixpath.basename(path)} runs the instance binary "
                f"{posixpath.basename(launch.argv[0])} as its entrypoint, outside the Blueprint Manager",
                path=path, line=line, launcher="container", binary=launch.argv[0], evidence=evidence,
                **coordinates(launch, launch.env),
            ))
    return findings
