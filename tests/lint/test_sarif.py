"""SARIF 2.1.0 output: valid against the schema, with levels, locations, rules and suppressions."""

from __future__ import annotations

import copy
import os

import pytest

from bpm_doctor.report import sarif
from tests.lint import schema_check
from tests.lint.helpers import lint, write


@pytest.fixture(scope="module")
def schema():
    return schema_check.load_schema()


def _repository(root):
    write(root, "deploy/ferry-runtime.service", """
        [Service]
        Environment=BLUEPRINT_ID=9 SERVICE_ID=5
        ExecStart=/srv/ferry/bin/ferry-relay run
    """)
    write(root, "deploy/remote.service", """
        [Service]
        Environment=PROTOCOL=tangle
        # bpm-doctor: ignore[direct-run-unit] remote-target image
        ExecStart=/opt/blueprint/bin/ferry-relay run
    """)
    write(root, "deploy/settings with space.env", """
        BLUEPRINT_ID=9
        SERVICE_ID=2
    """, mode=0o600)


def _log(root, extra_paths=()):
    _repository(root)
    result = lint(root / "deploy", *extra_paths)
    return sarif.to_dict(result, cwd=str(root))


def test_log_is_valid_sarif(tmp_path, schema):
    log = _log(tmp_path, [tmp_path / "missing.service"])
    assert schema_check.validate(log, schema) == []


def test_levels_follow_severity(tmp_path):
    results = _log(tmp_path)["runs"][0]["results"]
    levels = {(r["ruleId"], r["level"]) for r in results}
    assert ("direct-run-unit", "error") in levels
    assert ("settings-missing-key", "warning") in levels
    assert ("settings-service-id", "note") in levels


def test_locations_are_relative_with_lines(tmp_path):
    results = _log(tmp_path)["runs"][0]["results"]
    direct = next(r for r in results if r["ruleId"] == "direct-run-unit" and "suppressions" not in r)
    location = direct["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "deploy/ferry-runtime.service"
    assert location["region"] == {"startLine": 3}
    missing_key = next(r for r in results if r["ruleId"] == "settings-missing-key")
    location = missing_key["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "deploy/settings%20with%20space.env"
    assert "region" not in location


def test_path_outside_cwd_is_file_uri(tmp_path):
    _repository(tmp_path)
    log = sarif.to_dict(lint(tmp_path / "deploy"), cwd="/nonexistent-cwd")
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]}
    assert all(uri.startswith("file:///") for uri in uris)


def test_undecodable_file_name_is_percent_encoded(tmp_path, schema):
    name = os.fsdecode(b"bad\xff\xfe.service")
    write(tmp_path, name, """
        [Service]
        Environment=BLUEPRINT_ID=9 SERVICE_ID=5
        ExecStart=/srv/ferry/bin/ferry-relay run
    """)
    log = sarif.to_dict(lint(tmp_path / name), cwd=str(tmp_path))
    assert schema_check.validate(log, schema) == []
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]}
    assert uris == {"bad%FF%FE.service"}
    assert sarif.render(lint(tmp_path / name)).isascii()


def test_suppressed_result_carries_justification(tmp_path):
    results = _log(tmp_path)["runs"][0]["results"]
    suppressed = [r for r in results if "suppressions" in r]
    assert len(suppressed) == 1
    assert suppressed[0]["suppressions"] == [{"kind": "inSource", "justification": "remote-target image"}]


def test_rules_come_from_catalogue(tmp_path):
    run = _log(tmp_path)["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    rule_ids = [rule["id"] for rule in rules]
    assert "runbook-direct-run" in rule_ids
    assert "manager-down" not in rule_ids
    for rule in rules:
        assert rule["shortDescription"]["text"]
        assert rule["help"]["text"]
    by_id = {rule["id"]: rule for rule in rules}
    assert by_id["manager-unknown-flag"]["defaultConfiguration"]["level"] == "warning"
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]


def test_unchecked_path_is_tool_notification(tmp_path):
    invocation = _log(tmp_path, [tmp_path / "missing.service"])["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert invocation["toolExecutionNotifications"][0]["level"] == "error"
    assert "missing.service: not found" in invocation["toolExecutionNotifications"][0]["message"]["text"]


@pytest.mark.parametrize("mutate, message", [
    (lambda log: log.pop("version"), "missing required property 'version'"),
    (lambda log: log["runs"][0]["results"][0].update(level="fatal"), "'fatal' is not one of"),
    (lambda log: log["runs"][0]["results"][0].pop("message"), "missing required property 'message'"),
    (lambda log: log.update(extra=1), "property 'extra' is not allowed"),
    (lambda log: log["runs"][0]["results"][0]["locations"][0]["physicalLocation"].update(region={"startLine": 0}),
     "less than 1"),
])
def test_schema_check_rejects_broken_logs(tmp_path, schema, mutate, message):
    log = copy.deepcopy(_log(tmp_path))
    mutate(log)
    errors = schema_check.validate(log, schema)
    assert any(message in error for error in errors), errors


def test_jsonschema_agrees_when_installed(tmp_path, schema):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    jsonschema.validate(_log(tmp_path, [tmp_path / "missing.service"]), schema)
