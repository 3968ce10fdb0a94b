"""SARIF 2.1.0 report of `bpm-doctor lint`, for code-scanning tools.

One run: the tool driver with one rule per catalogue id that applies to
repository files, one result per finding, and an invocation that lists the
paths that could not be checked. Levels: critical is `error`, warning is
`warning`, info is `note`. Artifact URIs are relative to the working
directory when the file lies under it (code-scanning services resolve them
against the repository root), else absolute `file://` URIs. A finding
silenced by an inline comment carries `suppressions` with kind `inSource`
and the comment's reason as justification.
"""

from __future__ import annotations

import json
import os
import urllib.parse

from bpm_doctor import __version__, catalogue
from bpm_doctor.lint import LintResult
from bpm_doctor.model import Finding, Severity

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {Severity.CRITICAL: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
# Ids raised at another severity in lint than on a host: a file cannot show
# that the manager is crash-looping, only that it would reject its flags.
LINT_SEVERITIES = {"manager-unknown-flag": Severity.WARNING, "settings-missing-key": Severity.WARNING}

# One line per rule for code-scanning views; the catalogue's remedy is the help text.
DESCRIPTIONS = {
    "direct-run-unit": "A systemd unit starts a blueprint instance itself instead of the Blueprint Manager.",
    "dropin-overrides-execstart": "A drop-in breaks or replaces the manager unit's ExecStart.",
    "manager-unknown-flag": "The manager is started with flags `cargo-tangle blueprint run` rejects.",
    "settings-missing-key": "The manager's settings file lacks a key the manager requires.",
    "settings-service-id": "The manager's settings file pins SERVICE_ID, which the manager ignores.",
    "killmode-not-control-group": "The manager unit's KillMode can leave instances behind as orphans.",
    "secret-file-permissions": "A file with secret-like keys is readable by group or others.",
    "script-launches-instance": "A shell script starts a blueprint instance outside the Blueprint Manager.",
    "container-runs-instance": "A container runs a blueprint instance outside the Blueprint Manager.",
    "runbook-direct-run": "A document tells operators to run the instance by hand or skips the manager.",
    "placeholder-value": "A file meant for a host holds an unresolved placeholder.",
    "settings-divergence": "systemd's EnvironmentFile= and dotenv read a settings line differently.",
    "suppression-without-reason": "A bpm-doctor suppression comment gives no reason.",
    "check-failed": "A bpm-doctor check raised an error, so its findings are missing.",
}


def artifact_uri(path: str, cwd: str | None = None) -> str:
    """Return a file's URI relative to `cwd` when it lies under it, else an absolute file URI."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, cwd or os.getcwd())
    # Paths come from os.listdir and may hold undecodable bytes as lone
    # surrogates; quoting the original bytes keeps them in the URI (%FF).
    if relative != os.pardir and not relative.startswith(os.pardir + os.sep):
        return urllib.parse.quote(os.fsencode(relative.replace(os.sep, "/")))
    return "file://" + urllib.parse.quote(os.fsencode(absolute))


def rules(extra_ids: set[str] = frozenset()) -> list[dict]:
    """Return the SARIF rules: every catalogue id that applies to lint, plus any other id used."""
    found = []
    for entry in catalogue.ENTRIES:
        if "lint" not in entry.scope and entry.id not in extra_ids:
            continue
        found.append({
            "id": entry.id,
            "shortDescription": {"text": DESCRIPTIONS.get(entry.id, entry.id.replace("-", " ").capitalize())},
            "help": {"text": entry.remedy},
            "defaultConfiguration": {"level": LEVELS[LINT_SEVERITIES.get(entry.id, entry.severity)]},
        })
    return found


def _result(finding: Finding, rule_index: dict[str, int], cwd: str | None) -> dict:
    result: dict = {
        "ruleId": finding.id,
        "ruleIndex": rule_index[finding.id],
        "level": LEVELS[finding.severity],
        "message": {"text": finding.summary},
    }
    paths = finding.field_values("path")
    if paths:
        location: dict = {"artifactLocation": {"uri": artifact_uri(paths[0], cwd)}}
        if finding.line is not None and finding.line >= 1:
            location["region"] = {"startLine": finding.line}
        result["locations"] = [{"physicalLocation": location}]
    properties = {
        name: value for name, value in (
            ("unit", finding.unit), ("blueprintId", finding.blueprint_id), ("serviceId", finding.service_id),
            ("launcher", finding.launcher), ("evidence", list(finding.evidence) or None),
        ) if value is not None
    }
    if finding.suppressed:
        result["suppressions"] = [{"kind": "inSource", "justification": finding.allowed_reason or ""}]
    elif finding.allowed_reason:
        properties["allowedReason"] = finding.allowed_reason
    if properties:
        result["properties"] = properties
    return result


def to_dict(result: LintResult, cwd: str | None = None) -> dict:
    findings = result.findings + result.suppressed
    rule_list = rules({finding.id for finding in findings})
    rule_index = {rule["id"]: index for index, rule in enumerate(rule_list)}
    invocation: dict = {"executionSuccessful": not result.errors}
    if result.errors:
        invocation["toolExecutionNotifications"] = [
            {"level": "error", "message": {"text": error}} for error in result.errors
        ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": "bpm-doctor", "version": __version__, "rules": rule_list}},
            "invocations": [invocation],
            "results": [_result(finding, rule_index, cwd) for finding in findings],
        }],
    }


def render(result: LintResult, cwd: str | None = None) -> str:
    return json.dumps(to_dict(result, cwd), indent=2) + "\n"
