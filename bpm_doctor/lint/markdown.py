"""Lint Markdown runbooks for direct-run recipes and a missing manager step.

Only commands in code count: fenced code blocks in a shell language (or
none), unit files shown in a block, and inline code spans. HTML comments
are skipped. A section is exempt, with every section below it, when its
heading names a local, development or test setting ("Local smoke test
only", "Development") or the first paragraph under it states it ("Never on
an operator box", "Not for production"). In the other sections:

- a command that starts an instance binary, or a unit block whose ExecStart
  does, is `runbook-direct-run`;
- a section that only sets `SERVICE_ID` (export, prefix assignment,
  `Environment=`, `systemctl set-environment`) is `runbook-direct-run`;
- a "go live", deployment or production section that registers, requests
  or approves services is `runbook-direct-run` when no section of the
  document starts the manager: `cargo tangle blueprint run`, a manager unit
  started with systemctl, or prose such as "start the Blueprint Manager".
  A document alone cannot show which unit is the manager, so a systemctl
  unit counts when a linted unit file runs the manager or its name
  contains "manager".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bpm_doctor import unitfile
from bpm_doctor.lint import shell, units
from bpm_doctor.lint.commands import ShellState, expand
from bpm_doctor.lint.context import LintContext, show_command
from bpm_doctor.lint.scripts import launch_findings
from bpm_doctor.model import Finding

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_LIST_ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s")
_SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console", "shell-session", "shellsession", "sh-session", "zsh",
                    "terminal", "env", "dotenv", "ini", "systemd", "conf", "service", "unit", "text", "txt"}
_PROMPT_LANGUAGES = {"console", "shell-session", "shellsession", "sh-session", "terminal"}
_UNIT_SECTION = re.compile(r"^\s*\[(Unit|Service|Install)\]\s*$", re.MULTILINE)
_EXEMPT_HEADING = re.compile(
    r"\b(local|locally|localnet|devnet|dev|development|develop|test|tests|testing|smoke|debug|debugging|"
    r"sandbox|e2e|anvil|ci)\b", re.IGNORECASE)
_EXEMPT_PHRASE = re.compile(
    r"never (on|in) (an?|the) (operator|production)|not (for|in|on) (production|an? operator)|"
    r"(local|dev|development|test|testing) (use )?only|only (for|in) (local|dev|development|test)|"
    r"do not (use|run) (this )?(in|on) production", re.IGNORECASE)
_GO_LIVE_HEADING = re.compile(
    r"\b(go(ing)?[ -]live|deploy|deploying|deployment|production|mainnet|launch|launching|roll[ -]?out|"
    r"onboard|onboarding)\b", re.IGNORECASE)
_REGISTRATION = re.compile(r"\b(register|preregister|pre-register|request-service|approve)\b")
_MANAGER_PROSE = re.compile(
    r"\b(start|run|enable|launch|restart)(s|ing)?\s+(the\s+)?(tangle\s+)?(blueprint[ -])?manager\b",
    re.IGNORECASE)
_SYSTEMCTL_STARTS = {"enable", "start", "restart", "reenable", "reload-or-restart", "try-restart"}


@dataclass
class _Code:
    text: str
    first_line: int
    language: str | None  # None for inline code
    fence_line: int = 0


@dataclass
class _Section:
    title: str
    level: int
    line: int
    parent: _Section | None
    code: list[_Code] = field(default_factory=list)
    intro: list[str] = field(default_factory=list)
    intro_done: bool = False
    prose: list[str] = field(default_factory=list)

    @property
    def exempt(self) -> bool:
        if self.parent is not None and self.parent.exempt:
            return True
        if self.level and _EXEMPT_HEADING.search(self.title):
            return True
        return bool(_EXEMPT_PHRASE.search(" ".join(self.intro)))

    @property
    def name(self) -> str:
        return f'section "{self.title}"' if self.title else "the document's first section"


def _sections(text: str) -> list[_Section]:
    root = _Section("", 0, 1, None)
    sections = [root]
    current = root
    fence: tuple[str, str, int, int] | None = None  # (marker, language, fence line, first body line)
    body: list[str] = []
    in_comment = False
    for number, raw in enumerate(text.splitlines(), start=1):
        if fence is not None:
            marker = fence[0]
            stripped = raw.strip()
            if stripped.startswith(marker[0] * len(marker)) and not stripped.strip(marker[0]):
                current.code.append(_Code("\n".join(body), fence[3], fence[1], fence[2]))
                fence, body = None, []
            else:
                body.append(raw)
            continue
        line, in_comment = _without_comments(raw, in_comment)
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            parent = current
            while parent is not None and parent.level >= level:
                parent = parent.parent
            current = _Section(heading.group(2), level, number, parent)
            sections.append(current)
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = (opening.group(1), opening.group(2).lower(), number, number + 1)
            current.intro_done = True
            continue
        stripped = line.strip()
        if not stripped:
            current.intro_done = current.intro_done or bool(current.intro)
            continue
        for match in _INLINE_CODE.finditer(line):
            current.code.append(_Code(match.group(2), number, None))
        current.prose.append(_INLINE_CODE.sub(" ", stripped))
        if not current.intro_done:
            if _LIST_ITEM.match(line) or stripped.startswith("|"):
                current.intro_done = True
            else:
                current.intro.append(stripped.lstrip("> "))
    if fence is not None:
        current.code.append(_Code("\n".join(body), fence[3], fence[1], fence[2]))
    return sections


def _without_comments(line: str, in_comment: bool) -> tuple[str, bool]:
    """Remove HTML comments from a line; return the rest and whether a comment stays open."""
    kept = []
    position = 0
    while position < len(line):
        if in_comment:
            end = line.find("-->", position)
            if end < 0:
                return "".join(kept), True
            position = end + 3
            in_comment = False
        else:
            start = line.find("<!--", position)
            if start < 0:
                kept.append(line[position:])
                break
            kept.append(line[position:start])
            position = start + 4
            in_comment = True
    return "".join(kept), in_comment


def _shell_text(code: _Code) -> str:
    if code.language not in _PROMPT_LANGUAGES:
        return "\n".join(line[2:] if line.startswith("$ ") else line for line in code.text.split("\n"))
    kept = []
    for line in code.text.split("\n"):
        if line.startswith(("$ ", "# ")):
            kept.append(line[2:])
        else:
            kept.append("")
    return "\n".join(kept)


@dataclass
class _SectionFacts:
    findings: list[Finding] = field(default_factory=list)
    service_id_lines: list[int] = field(default_factory=list)
    starts_manager: bool = False
    registers: bool = False


def lint_markdown(path: str, text: str, ctx: LintContext) -> tuple[list[Finding], dict[int, int]]:
    """Lint a Markdown document; return its findings and code-block anchor lines."""
    findings: list[Finding] = []
    anchors: dict[int, int] = {}
    facts_by_section: list[tuple[_Section, _SectionFacts]] = []
    for section in _sections(text):
        for code in section.code:
            if code.language is not None:
                for offset in range(code.text.count("\n") + 1):
                    anchors[code.first_line + offset] = code.fence_line
        if section.exempt:
            continue
        facts = _section_facts(path, section, ctx)
        facts_by_section.append((section, facts))
        findings.extend(facts.findings)
        if not facts.findings and facts.service_id_lines:
            findings.append(ctx.make(
                "runbook-direct-run",
                f"{section.name} tells operators to set SERVICE_ID; the Blueprint Manager starts every service "
                "assigned to the operator and sets SERVICE_ID itself",
                path=path, line=facts.service_id_lines[0],
            ))
    document_starts_manager = any(facts.starts_manager for _section, facts in facts_by_section)
    if not document_starts_manager:
        for section, facts in facts_by_section:
            if facts.registers and section.level and _GO_LIVE_HEADING.search(section.title):
                findings.append(ctx.make(
                    "runbook-direct-run",
                    f"{section.name} registers and approves services, but no section of the document starts "
                    "the Blueprint Manager (cargo tangle blueprint run under systemd)",
                    path=path, line=section.line,
                ))
    return findings, anchors


def _section_facts(path: str, section: _Section, ctx: LintContext) -> _SectionFacts:
    facts = _SectionFacts()
    state = ShellState()
    facts.starts_manager = any(_MANAGER_PROSE.search(line) for line in section.prose)
    for code in section.code:
        if code.language is not None and code.language not in _SHELL_LANGUAGES:
            continue
        if _REGISTRATION.search(code.text):
            facts.registers = True
        if code.language is not None and _UNIT_SECTION.search(code.text):
            _unit_block(path, section, code, ctx, facts)
            continue
        commands = shell.parse(_shell_text(code), code.first_line)
        for step in state.walk(commands):
            if any(ctx.is_manager(launch.argv) for launch in step.launches) or _starts_manager_unit(step, ctx):
                facts.starts_manager = True
            facts.findings.extend(launch_findings(
                path, step, ctx, finding_id="runbook-direct-run", where=section.name,
            ))
            if _sets_service_id(step.command):
                facts.service_id_lines.append(step.command.line)
    return facts


def _unit_block(path: str, section: _Section, code: _Code, ctx: LintContext, facts: _SectionFacts) -> None:
    unit = units.parse_at(code.text, path, code.first_line)
    for entry in unit.entries:
        if entry.key == "Environment" and re.search(r"(^|\s|\")SERVICE_ID=", entry.value):
            facts.service_id_lines.append(entry.line)
    effective = unitfile.effective("unit in " + section.name, [unit])
    for command in effective.exec_start:
        for launch in expand(command.argv, effective.environment):
            if ctx.is_manager(launch.argv):
                facts.starts_manager = True
                finding = ctx.unknown_flag_finding(launch.argv, path=path, line=command.line,
                                                   where=f"the unit shown in {section.name}")
                if finding is not None:
                    facts.findings.append(finding)
            elif ctx.is_instance(launch):
                facts.findings.append(ctx.make(
                    "runbook-direct-run",
                    f"{section.name} shows a unit that starts the instance binary {launch.argv[0].rsplit('/', 1)[-1]} "
                    "itself instead of the Blueprint Manager",
                    path=path, line=command.line, launcher="systemd-unit", binary=launch.argv[0],
                    evidence=[f"ExecStart: {show_command(command.argv)}"],
                ))


def _starts_manager_unit(step, ctx: LintContext) -> bool:
    words = step.command.words
    if words[:1] == ["sudo"]:
        words = words[1:]
    if len(words) < 3 or words[0] != "systemctl":
        return False
    arguments = [word for word in words[1:] if not word.startswith("-")]
    if not arguments or arguments[0] not in _SYSTEMCTL_STARTS:
        return False
    for unit in arguments[1:]:
        name = unit.removesuffix(".service")
        if unit in ctx.manager_units or name in ctx.manager_units or "manager" in name.lower():
            return True
    return False


def _sets_service_id(command: shell.Command) -> bool:
    if any(name == "SERVICE_ID" for name, _value in command.assignments):
        return True
    words = command.words
    if words[:1] in (["export"], ["declare"]) or words[:2] == ["systemctl", "set-environment"]:
        return any(word.startswith("SERVICE_ID=") for word in words[1:])
    return False
