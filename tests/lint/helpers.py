"""Helpers for the lint tests: write files into a temporary repository and lint them."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bpm_doctor.config import Config, parse as parse_config
from bpm_doctor.lint import LintResult, lint_paths
from bpm_doctor.lint.manager_help import BUILT_IN
from bpm_doctor.model import Finding


def write(directory: Path, name: str, text: str, mode: int | None = None) -> Path:
    """Write dedented text to directory/name, creating parent directories."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    if mode is not None:
        path.chmod(mode)
    return path


def lint(*paths: Path | str, config: Config | str | None = None) -> LintResult:
    """Lint paths with the built-in manager flag set, so an installed cargo-tangle cannot change results."""
    if isinstance(config, str):
        config = parse_config(textwrap.dedent(config))
    return lint_paths([str(path) for path in paths], config or Config(), flags_loader=lambda: BUILT_IN)


def of_id(result: LintResult, finding_id: str) -> list[Finding]:
    return [finding for finding in result.findings if finding.id == finding_id]


def ids(result: LintResult) -> list[str]:
    return sorted(finding.id for finding in result.findings)
