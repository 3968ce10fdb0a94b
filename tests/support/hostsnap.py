"""Load the case files of the shared case folder for the tests.

`load(path)` reads a `*.hostsnap` case into the Snapshot that a live scan
would produce; `read_case(path)` also parses the header's expectations so a
test can check a verdict against them. One loader serves every case, so a new
case file drops in without code changes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bpm_doctor import config as config_module
from bpm_doctor import snapshot as snapshot_module
from bpm_doctor.model import Finding, Snapshot

REPOSITORY = Path(__file__).resolve().parents[2]
LINT_SUFFIXES = (".service", ".env", ".sh", ".yml", ".yaml", ".md")
_NUMERIC_FIELDS = {"pid", "line", "blueprint_id", "service_id"}


def cases_dir() -> Path:
    """Return the case folder: $BPM_DOCTOR_CASES, else ../shared/cases beside the checkout."""
    override = os.environ.get("BPM_DOCTOR_CASES")
    if override:
        return Path(override)
    return REPOSITORY.parent / "shared" / "cases"


def case_files() -> list[Path]:
    folder = cases_dir()
    if not folder.is_dir():
        return []
    # README.md describes the case format; it is not a case.
    return sorted(
        p for p in folder.iterdir()
        if p.name != "README.md" and (p.suffix == ".hostsnap" or p.name.endswith(LINT_SUFFIXES))
    )


def load(path: str | os.PathLike[str]) -> Snapshot:
    """Read a host case into a Snapshot."""
    return snapshot_module.load(path)


@dataclass
class Expectation:
    """One `expect`, `expect-not` or `expect: ok` header line."""

    kind: str
    severity: str | None
    finding_id: str | None
    keys: dict[str, list[str]]
    text: str


@dataclass
class Case:
    path: Path
    expectations: list[Expectation] = field(default_factory=list)
    config_lines: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name.rsplit(".", 1)[0]

    @property
    def is_host(self) -> bool:
        return self.path.suffix == ".hostsnap"

    def config(self) -> config_module.Config:
        return config_module.parse("\n".join(self.config_lines), f"{self.path} (config lines)")


def header_lines(path: Path) -> list[str]:
    """Return the header lines with their comment markers removed."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if path.suffix == ".hostsnap":
        header = []
        for line in lines:
            if line.startswith("#==="):
                break
            header.append(line)
        return [line[1:].lstrip() if line.startswith("#") else line for line in header]
    if path.suffix == ".md":
        match = re.match(r"\s*<!--(.*?)-->", text, re.DOTALL)
        return match.group(1).splitlines() if match else []
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line[1:].lstrip())
    return header


def read_case(path: str | os.PathLike[str]) -> Case:
    path = Path(path)
    case = Case(path)
    for line in header_lines(path):
        if line.startswith("config:"):
            case.config_lines.append(line.partition(":")[2].strip())
        elif line.startswith("expect-not:"):
            case.expectations.append(_parse_expectation("expect-not", line.partition(":")[2]))
        elif line.startswith("expect:"):
            case.expectations.append(_parse_expectation("expect", line.partition(":")[2]))
    return case


def _parse_expectation(kind: str, rest: str) -> Expectation:
    text = rest.strip()
    body = re.sub(r"\s*\(.*\)\s*$", "", text)
    words = body.split()
    severity = finding_id = None
    if kind == "expect" and words and words[0] == "ok":
        kind, words = "ok", words[1:]
    elif kind == "expect":
        severity, finding_id, words = words[0], words[1], words[2:]
    else:
        finding_id, words = words[0], words[1:]
    keys = {}
    for word in words:
        name, _, value = word.partition("=")
        keys[name] = value.split(",")
    return Expectation(kind, severity, finding_id, keys, text)


def _field_matches(finding: Finding, name: str, value: str) -> bool:
    wanted: object = int(value) if name in _NUMERIC_FIELDS and value.lstrip("-").isdigit() else value
    return wanted in finding.field_values(name)


def _single_keys_match(finding: Finding, keys: dict[str, list[str]], skip: str | None = None) -> bool:
    return all(
        _field_matches(finding, name, values[0])
        for name, values in keys.items() if name != skip and len(values) == 1
    )


def check(case: Case, findings: list[Finding]) -> list[str]:
    """Return the header lines of a case that the findings violate (empty: the case passes)."""
    failures = []
    used: set[int] = set()
    for expectation in case.expectations:
        if expectation.kind == "expect":
            if not _expect_met(expectation, findings, used):
                failures.append(f"expect: {expectation.text}")
        elif expectation.kind == "expect-not":
            for finding in findings:
                if finding.id == expectation.finding_id and all(
                    any(_field_matches(finding, name, value) for value in values)
                    for name, values in expectation.keys.items()
                ):
                    failures.append(f"expect-not: {expectation.text} (got {finding.id} {finding.summary})")
        else:
            for finding in findings:
                if finding.severity.label == "info":
                    continue
                if all(any(_field_matches(finding, n, v) for v in values) for n, values in expectation.keys.items()):
                    failures.append(f"expect: ok {expectation.text} (got {finding.severity.label} {finding.id}: {finding.summary})")
    return failures


def _expect_met(expectation: Expectation, findings: list[Finding], used: set[int]) -> bool:
    candidates = [
        (index, finding) for index, finding in enumerate(findings)
        if finding.id == expectation.finding_id and finding.severity.label == expectation.severity
        and _single_keys_match(finding, expectation.keys)
    ]
    listed = {name: values for name, values in expectation.keys.items() if len(values) > 1}
    if listed:
        for name, values in listed.items():
            for value in values:
                if not any(_field_matches(finding, name, value) for _index, finding in candidates):
                    return False
        return True
    for index, _finding in candidates:
        if index not in used:
            used.add(index)
            return True
    return False
