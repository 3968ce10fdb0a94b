"""Lint environment and settings files (`*.env`, `.env*`, `/etc/default/*`).

Which files count as the manager's settings file, given that a repository
also contains `.env` files for unrelated tools:

- a file a linted manager unit names with `--settings-file` (matched by
  basename), or `settings.env`, the manager's default name;
- a `.env` file whose name contains `settings` (`quill5-settings.env`),
  the naming the manager's default suggests;
- a file that assigns a protocol contract (`TANGLE_CONTRACT`,
  `STAKING_CONTRACT`, `STATUS_REGISTRY_CONTRACT`), or `BLUEPRINT_ID`
  without a numeric `SERVICE_ID`. A file with both numeric ids and no
  contract is an instance's own environment, not manager settings.

Only such files get `settings-missing-key`, `settings-service-id` and
`settings-divergence`: an app's `.env` lacks the protocol keys by design,
and only the manager's settings file is read by both systemd and dotenv.
"""

from __future__ import annotations

import posixpath
import re

from bpm_doctor import envfile, redact
from bpm_doctor.lint.context import LintContext
from bpm_doctor.model import Finding, Severity

# `cli/src/settings.rs` of the blueprint SDK requires these; SERVICE_ID is optional.
REQUIRED_SETTINGS = ("BLUEPRINT_ID", "TANGLE_CONTRACT", "STAKING_CONTRACT", "STATUS_REGISTRY_CONTRACT")
_CONTRACT_KEYS = ("TANGLE_CONTRACT", "STAKING_CONTRACT", "STATUS_REGISTRY_CONTRACT")
# Files meant to be copied and filled in, not installed as they are.
TEMPLATE_SUFFIXES = (".example", ".sample", ".template", ".tmpl", ".in", ".dist", ".tpl")


def is_template(path: str) -> bool:
    return posixpath.basename(path).lower().endswith(TEMPLATE_SUFFIXES)


def is_manager_settings(path: str, assignments: list[envfile.Assignment], ctx: LintContext) -> bool:
    """Return True when an environment file is the manager's `--settings-file` (rules in the module docstring)."""
    name = posixpath.basename(path)
    if name in ctx.settings_names or name == "settings.env":
        return True
    if "settings" in name.lower() and ".env" in name.lower():
        return True
    values = envfile.as_dict(assignments)
    if any(key in values for key in _CONTRACT_KEYS):
        return True
    return "BLUEPRINT_ID" in values and not values.get("SERVICE_ID", "").isdigit()


def lint_env(path: str, text: str, ctx: LintContext, *, name: str | None = None, first_line: int = 1,
             file_line: int | None = None, mode: int | None = None) -> list[Finding]:
    """Lint environment file text.

    `name` is the file name used to classify the text, such as the target
    of a here-document. `first_line` is the file line of the text's first
    line. `file_line` is the line that file-wide findings point at, or None
    for a file of its own. `mode` is the file's permission bits when they
    are the host's (see the `bpm_doctor.lint` package docstring), else None.
    """
    name = name or path
    padded = "\n" * (first_line - 1) + text
    assignments = envfile.parse_dotenv(padded)
    findings: list[Finding] = []
    if not is_template(name):
        for assignment in assignments:
            findings.extend(ctx.placeholder_findings(
                assignment.value, path=path, line=assignment.line, subject=f"{assignment.name} in {posixpath.basename(name)}",
            ))
    if is_manager_settings(name, assignments, ctx):
        findings.extend(_settings_findings(path, name, padded, assignments, ctx, file_line))
    if mode is not None:
        findings.extend(_permission_findings(path, assignments, mode, ctx))
    return findings


def _settings_findings(path: str, name: str, text: str, assignments: list[envfile.Assignment],
                       ctx: LintContext, file_line: int | None) -> list[Finding]:
    findings = []
    values = envfile.as_dict(assignments)
    shown = posixpath.basename(name)
    missing = [key for key in REQUIRED_SETTINGS if not values.get(key)]
    if missing:
        findings.append(ctx.make(
            "settings-missing-key",
            f"manager settings {shown} lack {', '.join(missing)}; the manager exits at start with \"Missing {missing[0]}\"",
            path=path, line=file_line, severity=Severity.WARNING,
        ))
    for assignment in assignments:
        if assignment.name == "SERVICE_ID":
            findings.append(ctx.make(
                "settings-service-id",
                f"manager settings {shown} pin SERVICE_ID; the manager ignores it and sets the service id "
                "per instance",
                path=path, line=assignment.line,
            ))
    lines = text.splitlines()
    for divergence in envfile.divergences(text):
        raw = lines[divergence.line - 1] if divergence.line - 1 < len(lines) else ""
        findings.append(ctx.make(
            "settings-divergence",
            f"systemd's EnvironmentFile= and dotenv read {divergence.name} differently ({_divergence_cause(raw)}); "
            "the manager sees systemd's reading when the file is both",
            path=path, line=divergence.line, severity=Severity.WARNING,
        ))
    return findings


def _divergence_cause(raw: str) -> str:
    stripped = raw.strip()
    if stripped.startswith("export "):
        return "systemd ignores `export` lines"
    if re.search(r"\s#", stripped) or re.search(r"[\"']\s*#", stripped):
        return "systemd keeps an inline comment in the value"
    if "$" in stripped:
        return "dotenv expands $VAR, systemd does not"
    if "\\" in stripped:
        return "the two treat backslashes differently"
    return "quoting"


def _permission_findings(path: str, assignments: list[envfile.Assignment], mode: int,
                         ctx: LintContext) -> list[Finding]:
    secret_names = sorted({a.name for a in assignments if redact.is_secret_name(a.name) and a.value})
    if not secret_names or not mode & 0o044:
        return []
    return [ctx.make(
        "secret-file-permissions",
        f"{posixpath.basename(path)} holds secret-like keys ({', '.join(secret_names)}) and is readable by "
        f"group or others (mode {mode:04o})",
        path=path, severity=Severity.WARNING,
    )]
