"""JSON report of `bpm-doctor lint`, schema `bpm-doctor/lint/1`.

Top-level keys: `schema`, `version`, `generated_at` (ISO 8601, UTC),
`exit_code` (when the caller passes it), `counts` (active findings by
severity, and `suppressed`), `files` (how many files were checked),
`complete` (False when a path could not be checked), `errors` (one
`file: message` line each), `findings` and `suppressed`. A finding has the
keys of the check report's findings (`id`, `severity`, `summary`,
`remedy`, `evidence`, and where they apply `unit`, `path`, `line`,
`blueprint_id`, `service_id`, `launcher`, `allowed_reason`). A suppressed
finding has `suppression: {"reason": ...}` in place of `allowed_reason`.
New keys may be added within schema version 1; removing or changing one
raises the version.
"""

from __future__ import annotations

import datetime
import json

from bpm_doctor import __version__
from bpm_doctor.lint import LintResult
from bpm_doctor.model import Finding, Severity
from bpm_doctor.report.json_report import finding_to_dict

SCHEMA = "bpm-doctor/lint/1"


def suppressed_to_dict(finding: Finding) -> dict:
    data = finding_to_dict(finding)
    data.pop("allowed_reason", None)
    data["suppression"] = {"reason": finding.allowed_reason}
    return data


def to_dict(result: LintResult, exit_code: int | None = None) -> dict:
    counts = {severity.label: 0 for severity in Severity}
    for finding in result.findings:
        counts[finding.severity.label] += 1
    counts["suppressed"] = len(result.suppressed)
    data = {
        "schema": SCHEMA,
        "version": __version__,
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if exit_code is not None:
        data["exit_code"] = exit_code
    data.update({
        "counts": counts,
        "files": len(result.files),
        "complete": not result.errors,
        "errors": list(result.errors),
        "findings": [finding_to_dict(finding) for finding in result.findings],
        "suppressed": [suppressed_to_dict(finding) for finding in result.suppressed],
    })
    return data


def render(result: LintResult, exit_code: int | None = None) -> str:
    return json.dumps(to_dict(result, exit_code), indent=2) + "\n"
