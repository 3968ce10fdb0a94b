"""Lint shell scripts: instance launches, manager flags, and units or settings they write.

A script that starts the instance (directly, with `&`, `nohup`, tmux,
screen, `docker run`) is `script-launches-instance`. A container entrypoint
script that does the same is `container-runs-instance`. A script counts as
an entrypoint when its name contains `entrypoint`, when it sits in a
`docker/` or `container/` directory, or when a linted Dockerfile or compose
file runs it. Here-documents that write a unit (`cat > x.service <<EOF`,
`tee`, or a body with `[Service]`) are linted as unit files, and those that
write a `.env` file as settings, with the script's own line numbers.
"""

from __future__ import annotations

import posixpath
import re

from bpm_doctor.lint import discover, envfiles, shell, units
from bpm_doctor.lint.commands import ShellState, Step
from bpm_doctor.lint.context import LintContext, coordinates, find_placeholders, pinned_names, show_command
from bpm_doctor.model import Finding

_ENTRYPOINT_DIRECTORIES = {"docker", "container", "containers", "image", "images"}
_UNIT_SECTION = re.compile(r"^\s*\[(Unit|Service|Install|Timer|Socket)\]\s*$", re.MULTILINE)
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|\$([A-Za-z_][A-Za-z0-9_]*)")
# `${NAME:?message}` prints its text as an error; that text is no default value.
_ERROR_EXPANSION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}")
# How far a chain of variables (`OUT=$BASE/x`, `BASE=$ROOT`) is followed to a placeholder.
_MAX_REFERENCE_DEPTH = 4


def is_entrypoint(path: str, ctx: LintContext) -> bool:
    """Return True when a script is a container entrypoint (rules in the module docstring)."""
    name = posixpath.basename(path)
    directory = posixpath.basename(posixpath.dirname(path)).lower()
    return "entrypoint" in name.lower() or directory in _ENTRYPOINT_DIRECTORIES or name in ctx.container_scripts


def lint_script(path: str, text: str, ctx: LintContext) -> tuple[list[Finding], dict[int, int]]:
    """Lint a shell script; return its findings and the anchor lines of here-document bodies."""
    commands = shell.parse(text)
    state = ShellState()
    entrypoint = is_entrypoint(path, ctx)
    findings: list[Finding] = []
    anchors: dict[int, int] = {}
    for index, step in enumerate(state.walk(commands)):
        following = commands[index + 1] if index + 1 < len(commands) else None
        for document in step.command.here_documents:
            findings.extend(_lint_here_document(path, step.command, following, document, state, ctx, anchors))
        findings.extend(launch_findings(path, step, ctx, entrypoint=entrypoint))
    return findings, anchors


def launch_findings(path: str, step: Step, ctx: LintContext, *, entrypoint: bool = False,
                    finding_id: str | None = None, where: str | None = None) -> list[Finding]:
    """Return findings for the instances and managers one command starts.

    `finding_id` replaces the script ids (Markdown uses runbook-direct-run),
    and `where` names the file or section in summaries.
    """
    findings = []
    where = where or f"script {posixpath.basename(path)}"
    for launch in step.launches:
        if ctx.is_manager(launch.argv):
            finding = ctx.unknown_flag_finding(launch.argv, path=path, line=step.command.line, where=where)
            if finding is not None:
                findings.append(finding)
            continue
        if not ctx.is_instance(launch, step.inherited):
            continue
        environment = {**step.inherited, **launch.env}
        if finding_id is None:
            container = entrypoint or launch.in_container
            chosen = "container-runs-instance" if container else "script-launches-instance"
            launcher = "container" if container else launch.launcher
        else:
            chosen, launcher = finding_id, launch.launcher
        how = launch.how()
        program = posixpath.basename(launch.argv[0])
        summary = f"{where} starts the instance binary {program} outside the Blueprint Manager"
        if chosen == "container-runs-instance" and not launch.in_container:
            summary = f"container entrypoint {posixpath.basename(path)} starts the instance binary {program}; " \
                      "the manager launches instances itself"
        if how:
            summary += f" ({how})"
        evidence = [f"command: {show_command(launch.argv)}"]
        pinned = pinned_names(environment)
        if pinned:
            evidence.append(f"with {', '.join(pinned)} set")
        findings.append(ctx.make(
            chosen, summary, path=path, line=step.command.line, launcher=launcher,
            binary=launch.argv[0], evidence=evidence, **coordinates(launch, environment),
        ))
    return findings


def _lint_here_document(path: str, command: shell.Command, following: shell.Command | None,
                        document: shell.HereDocument, state: ShellState, ctx: LintContext,
                        anchors: dict[int, int]) -> list[Finding]:
    target = _write_target(command, following, state)
    kind = discover.kind_by_name(target) if target else None
    body = document.text
    if kind != "env" and (kind == "unit" or _UNIT_SECTION.search(body)):
        kind = "unit"
    if kind not in ("unit", "env") or not document.body:
        return []
    for number, _line in document.body:
        anchors[number] = command.line
    first = document.first_body_line
    if kind == "unit":
        name = units.unit_name_of(target) if target else f"written at line {command.line}"
        unit_file = units.parse_at(body, path, first)
        findings = units.lint_unit([unit_file], ctx, {path}, name=name)
        written = f"the unit {name} written at line {command.line}"
    else:
        findings = envfiles.lint_env(path, body, ctx, name=target, first_line=first, file_line=command.line)
        written = f"the file {posixpath.basename(target)} written at line {command.line}"
    if not document.quoted:
        findings.extend(_placeholder_defaults(path, body, state, ctx, written))
    return findings


def _write_target(command: shell.Command, following: shell.Command | None, state: ShellState) -> str | None:
    """Return the file a here-document is written to: `cat > FILE`, `tee FILE`, or `| tee FILE`."""
    targets = [target for target in command.output_targets() if target != "/dev/null"]
    for candidate in (command, following):
        if candidate is None or (candidate is following and not following.pipeline):
            continue
        words = candidate.words
        if words[:1] == ["sudo"]:
            words = words[1:]
        if words[:1] == ["tee"]:
            targets += [word for word in words[1:] if not word.startswith("-")][:1]
    if not targets:
        return None
    return substitute(targets[0], state)


def substitute(text: str, state: ShellState, depth: int = 0) -> str:
    """Replace `$NAME` and `${NAME}` in a text with the values the script assigned.

    Values that refer to other variables are substituted in turn. A name
    the script never assigns (an argument or the caller's environment)
    stays as written, and so does a command substitution.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        variable = state.variables.get(name)
        if variable is None or "`" in variable.value or "$(" in variable.value:
            return match.group(0)
        if depth >= _MAX_REFERENCE_DEPTH:
            return variable.value
        return substitute(variable.value, state, depth + 1)

    return _REFERENCE.sub(replace, text)


def _placeholder_defaults(path: str, body: str, state: ShellState, ctx: LintContext, written: str) -> list[Finding]:
    """Report variables used in a here-document whose value or default is a placeholder.

    The finding points at the assignment, where the fix goes: with
    `SVC="${SERVICE_ID:-<fill-after-approval>}"`, a unit written before the
    id is known carries the placeholder.
    """
    findings = []
    reported: set[tuple[int, str]] = set()
    pending = [(name, 0) for name in _references(body)]
    seen: set[str] = set()
    while pending:
        name, depth = pending.pop(0)
        variable = state.variables.get(name)
        if name in seen or variable is None or depth > _MAX_REFERENCE_DEPTH:
            continue
        seen.add(name)
        value = _ERROR_EXPANSION.sub("", variable.value)
        for token in find_placeholders(value):
            if (variable.line, token) in reported:
                continue
            reported.add((variable.line, token))
            findings.append(ctx.make(
                "placeholder-value",
                f"{name} defaults to the unresolved placeholder {token}, and {written} uses it",
                path=path, line=variable.line,
            ))
        pending.extend((reference, depth + 1) for reference in _references(value))
    return findings


def _references(text: str) -> list[str]:
    names = []
    for match in _REFERENCE.finditer(text):
        name = match.group(1) or match.group(2)
        if name not in names:
            names.append(name)
    return names
