"""Shared state and rules of the file linters: configuration, cross-file facts, instance tests.

One `LintContext` serves a whole `lint_paths` run. Files are read in an
order that lets later files use what earlier ones showed: unit files name
the manager's settings file, Dockerfiles and compose files name their
entrypoint scripts.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bpm_doctor import identify, redact
from bpm_doctor.config import Config
from bpm_doctor.diagnose.findings import make
from bpm_doctor.lint.commands import Launch
from bpm_doctor.lint.manager_help import ManagerFlags, accepted_flags
from bpm_doctor.model import Finding, Severity

# Programs whose own `run` subcommand is not a blueprint's: `npm run build`
# next to an exported BLUEPRINT_ID starts no instance. `cargo run` is
# resolved to the binary it starts before this test.
TOOL_RUNNERS = {
    "npm", "npx", "pnpm", "yarn", "bun", "deno", "poetry", "uv", "uvx", "pipenv", "pdm", "hatch", "go",
    "gh", "kubectl", "helm", "make", "just", "task", "bundle", "rake", "dotnet", "mvn", "gradle",
    "gradlew", "terraform", "ansible-playbook", "flask", "git", "systemctl", "journalctl", "apt",
    "apt-get", "pip", "pip3", "forge", "anvil", "cast", "docker", "podman", "nerdctl", "compose",
    "docker-compose",
}
# Builtins and text tools: their arguments are data, not a program to start.
NON_LAUNCHING = {
    "echo", "printf", ":", "true", "false", "test", "[", "[[", "export", "local", "readonly", "declare",
    "typeset", "logger", "grep", "egrep", "fgrep", "sed", "awk", "cut", "tr", "tee", "cat", "less", "more",
    "head", "tail", "jq", "yq", "read", "set", "unset", "shift", "return", "exit", "trap", "wait", "kill",
    "pkill", "pgrep", "ps", "which", "type", "hash", "alias", "source", ".", "cd", "pushd", "popd",
}

# Unresolved placeholders: `@TOKEN@` (autoconf and sed templates), `<fill-me>`
# style angle brackets, and the classic `changeme`. An angle placeholder starts
# with a letter and does not end in a space, so `a <b >c` redirections in an
# `sh -c` string do not match.
_PLACEHOLDER = re.compile(
    r"@[A-Z][A-Z0-9_]*@"
    r"|<[A-Za-z](?:[A-Za-z0-9 _.:/-]{0,62}[A-Za-z0-9])?>"
    r"|\b(?:change[-_]?me|CHANGE[-_]?ME|ChangeMe)\b"
)
_FLAG_WORD = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9-]{0,47}$")


def find_placeholders(text: str) -> list[str]:
    """Return the placeholder tokens in a value, in order, without repeats."""
    found: list[str] = []
    for match in _PLACEHOLDER.finditer(text):
        if match.group(0) not in found:
            found.append(match.group(0))
    return found


def show_command(argv: list[str], limit: int = 200) -> str:
    """Return argv as one line for a report, with secret values redacted."""
    text = " ".join(redact.redact_argv(argv))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_flags(words: list[str]) -> list[str]:
    """Return the option names among unknown argv words, never their values.

    A word that does not look like an option name is shown as `<redacted>`:
    it could be a value pasted without its flag.
    """
    shown = []
    for word in words:
        if not word.startswith("-"):
            continue
        flag = word.partition("=")[0]
        shown.append(flag if _FLAG_WORD.match(flag) else redact.REDACTED)
    return shown


def numeric(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() and len(value) <= 20 else None


@dataclass
class LintContext:
    """Configuration and facts gathered across the files of one lint run."""

    config: Config
    flags_loader: Callable[[], ManagerFlags] = accepted_flags
    # Basenames of the files a manager in a linted unit reads with --settings-file.
    settings_names: set[str] = field(default_factory=set)
    # Basenames of scripts a Dockerfile or compose file runs as its entrypoint or command.
    container_scripts: set[str] = field(default_factory=set)
    # Unit names (with and without `.service`) whose ExecStart is a manager daemon.
    manager_units: set[str] = field(default_factory=set)
    _flags: ManagerFlags | None = None

    @property
    def manager_flags(self) -> ManagerFlags:
        """Return the `blueprint run` flags, read once per run and only when a manager is seen."""
        if self._flags is None:
            self._flags = self.flags_loader()
        return self._flags

    def make(self, finding_id: str, summary: str, *, path: str, line: int | None = None,
             severity: Severity | None = None, binary: str | None = None, **fields) -> Finding:
        """Build a finding and apply the configured severity override and allow-list."""
        finding = make(finding_id, summary, severity=severity, path=path, line=line, **fields)
        override = self.config.severity_overrides.get(finding_id)
        if override is not None:
            finding.severity = override
        allowance = None
        for unit in finding.field_values("unit"):
            allowance = allowance or self.config.allowance_for(unit=unit)
        if binary:
            allowance = allowance or self.config.allowance_for(binary=posixpath.basename(binary))
        if allowance is not None:
            finding.severity = Severity.INFO
            finding.allowed_reason = allowance.reason
        return finding

    def is_instance(self, launch: Launch, inherited: dict[str, str] | None = None) -> bool:
        """Apply the instance tests to a program a file starts.

        `launch.env` is what the launcher sets for this program alone, and
        all of the instance tests use it. `inherited` is what a script
        exported earlier: it only counts together with a `run` subcommand,
        because a deploy script exports ids and then runs many other tools.
        """
        argv = launch.argv
        if not argv:
            return False
        name = posixpath.basename(argv[0])
        if name in TOOL_RUNNERS or name in NON_LAUNCHING:
            return False
        if identify.argv_is_instance(argv, launch.env, self.config.instance_binaries):
            return True
        return bool(inherited) and identify.has_run_subcommand(argv) and identify.has_coordinates(argv, inherited)

    @staticmethod
    def is_manager(argv: list[str]) -> bool:
        return bool(argv) and identify.manager_kind(argv[0], argv, through_cargo=True) == "daemon"

    def unknown_manager_flags(self, argv: list[str]) -> list[str]:
        """Return the argv words the manager daemon would reject."""
        flags = self.manager_flags
        if posixpath.basename(argv[0]) == "blueprint-manager":
            _options, unknown = identify.manager_options(argv[0], argv)
        else:
            _options, unknown = identify.manager_options(argv[0], argv, flags.with_value, flags.switches)
        return unknown

    def unknown_flag_finding(self, argv: list[str], *, path: str, line: int, where: str,
                             **fields) -> Finding | None:
        """Return a manager-unknown-flag finding (warning in lint) when argv has flags the manager rejects."""
        unknown = self.unknown_manager_flags(argv)
        if not unknown:
            return None
        flags = show_flags(unknown) or [f"{len(unknown)} unexpected argument(s)"]
        source = self.manager_flags.source
        return self.make(
            "manager-unknown-flag",
            f"{where} starts the manager with flags `blueprint run` rejects: {' '.join(flags)}; "
            "clap exits with status 2 at every start",
            path=path, line=line, severity=Severity.WARNING,
            evidence=[f"command: {show_command(argv)}", f"flags checked against {source}"],
            **fields,
        )

    def placeholder_findings(self, value: str, *, path: str, line: int, subject: str, **fields) -> list[Finding]:
        """Return one placeholder-value finding per placeholder token in a value; `subject` names the setting."""
        findings = []
        for token in find_placeholders(value):
            findings.append(self.make(
                "placeholder-value",
                f"{subject} contains the unresolved placeholder {token}",
                path=path, line=line, **fields,
            ))
        return findings


def coordinates(launch: Launch, environment: dict[str, str]) -> dict[str, int | None]:
    """Return numeric blueprint and service ids from the environment or argv, where written literally."""
    options = identify.argv_coordinates(launch.argv)
    found: dict[str, int | None] = {}
    for field_name, variable in (("blueprint_id", "BLUEPRINT_ID"), ("service_id", "SERVICE_ID")):
        value = numeric(environment.get(variable))
        found[field_name] = value if value is not None else numeric(options.get(field_name))
    return found


def pinned_names(environment: dict[str, str]) -> list[str]:
    """Return which of BLUEPRINT_ID, SERVICE_ID and TEST_MODE an environment sets (names only)."""
    return [name for name in ("BLUEPRINT_ID", "SERVICE_ID", "TEST_MODE") if name in environment]
