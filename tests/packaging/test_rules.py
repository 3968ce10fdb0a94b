"""The shipped Prometheus rules: promtool checks and tests, coverage of every alert, runbook anchors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import tools

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
RULES = PACKAGING / "prometheus" / "bpm-doctor.rules.yml"
RULES_TEST = PACKAGING / "prometheus" / "bpm-doctor.rules.test.yml"
RUNBOOK = PACKAGING.parent / "docs" / "runbook.md"
DASHBOARDS = sorted((PACKAGING / "grafana").glob("*.json"))
RUNBOOK_BASE = "https://github.com/bpm-doctor/bpm-doctor/blob/main/docs/runbook.md#"


def alert_blocks(text: str) -> dict[str, str]:
    """Split the rules file into {alert name: its text up to the next rule}."""
    blocks = {}
    parts = re.split(r"(?m)^\s+- (?=alert:|record:)", text)
    for part in parts[1:]:
        match = re.match(r"alert: (\S+)", part)
        if match:
            blocks[match.group(1)] = part
    return blocks


def alert_tests(text: str) -> dict[str, list[bool]]:
    """Map each alert name in the test file to one entry per evaluation: True when it expects an alert."""
    found: dict[str, list[bool]] = {}
    for block in re.split(r"(?m)^\s+- eval_time:", text)[1:]:
        match = re.search(r"alertname: (\S+)", block)
        if match is None:
            continue
        expects_none = re.search(r"exp_alerts: \[\]", block) is not None
        found.setdefault(match.group(1), []).append(not expects_none)
    return found


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    promtool = tools.require("promtool", "prometheus")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_promtool_check_rules():
    completed = run_promtool("check", "rules", str(RULES))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"SUCCESS: {len(alert_blocks(RULES.read_text())) + 1} rules found" in completed.stdout


def test_promtool_test_rules():
    completed = run_promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "SUCCESS" in completed.stdout


def test_rules_test_fails_on_a_changed_rule(tmp_path):
    shutil.copy(RULES_TEST, tmp_path)
    changed = RULES.read_text().replace(
        'expr: bpm_doctor_findings{id="hand-run-instance"} > 0\n        for: 1m',
        'expr: bpm_doctor_findings{id="hand-run-instance"} > 0\n        for: 5m')
    assert changed != RULES.read_text()
    (tmp_path / RULES.name).write_text(changed)
    completed = run_promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert completed.returncode == 1
    assert "BpmDoctorHandRunInstance" in completed.stdout + completed.stderr


def test_every_alert_is_tested_firing_and_silent():
    alerts = set(alert_blocks(RULES.read_text()))
    tested = alert_tests(RULES_TEST.read_text())
    assert alerts == set(tested)
    for name, expectations in tested.items():
        assert True in expectations, f"{name} is never expected to fire"
        assert False in expectations, f"{name} is never expected to stay silent"


def test_recording_rule_is_tested():
    assert "expr: blueprint_service_operator:bpm_doctor_instance_hosts:count\n" in RULES_TEST.read_text()


@pytest.mark.parametrize("name", sorted(alert_blocks(RULES.read_text())))
def test_alert_labels_and_annotations(name):
    block = alert_blocks(RULES.read_text())[name]
    assert name.startswith("BpmDoctor")
    assert re.search(r"(?m)^\s+severity: (critical|warning|info|\"\{\{ \$labels\.severity \}\}\")$", block)
    for annotation in ("summary", "description", "runbook_url"):
        assert re.search(rf"(?m)^\s+{annotation}: ", block), f"{name} has no {annotation}"
    assert f"runbook_url: {RUNBOOK_BASE}{name.lower()}\n" in block
    summary = re.search(r"(?m)^\s+summary: (.*)$", block).group(1)
    assert "{{" not in summary, "summaries stay static so grouped alerts share a headline"


def test_runbook_has_a_section_per_alert():
    headings = set(re.findall(r"(?m)^## (\S+)$", RUNBOOK.read_text()))
    assert set(alert_blocks(RULES.read_text())) <= headings


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.name for path in DASHBOARDS])
def test_dashboard_json(path):
    board = json.loads(path.read_text())
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panel_ids = [panel["id"] for panel in board["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert "bpm_doctor" in target["expr"] or "up{" in target["expr"]


def test_both_dashboards_ship():
    assert [path.name for path in DASHBOARDS] == ["bpm-doctor-fleet.json", "bpm-doctor-host.json"]
