"""`bpm-doctor check` with fewer privileges than root: a partial verdict is UNKNOWN, never OK.

tests/support/privilege_probe.py starts a stand-in manager and its instance
as root in a private PID namespace, then runs the check as full root, as
root with an empty capability bounding set (no CAP_SYS_PTRACE,
CAP_DAC_READ_SEARCH or CAP_DAC_OVERRIDE), and as uid 65534. Without those
capabilities the instance's environment, exe and cwd cannot be read, so it
cannot even be recognised as an instance. The check must report UNKNOWN
(exit 3) and count the read errors by reason. A critical problem it can still
see from argv alone must stay CRITICAL (exit 2). Needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import pidns, standins, tools
from tests.support.privilege_probe import SYSTEM_PYTHON

pytestmark = pytest.mark.live

REDUCED = ("root-no-capabilities", "nobody")


def system_python_problem() -> str | None:
    """Return why /usr/bin/python3 cannot run bpm-doctor as uid 65534, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing; the uid 65534 run needs an interpreter outside /root"
    completed = subprocess.run([SYSTEM_PYTHON, "-c", "import structlog, prometheus_client"], capture_output=True,
                               timeout=60)
    if completed.returncode != 0:
        return (f"{SYSTEM_PYTHON} cannot import structlog and prometheus_client "
                "(Debian packages python3-structlog and python3-prometheus-client)")
    return None


def run_probe(scenario: str) -> dict:
    reason = standins.missing_compiler()
    if reason:
        pytest.skip(reason)
    tools.require("setpriv", "util-linux")
    missing = system_python_problem()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing + "; CI must install it", pytrace=False)
        pytest.skip(missing)
    workdir = Path(tempfile.mkdtemp(prefix="bpm-privilege-"))
    try:
        completed = pidns.run_in_namespace("tests.support.privilege_probe", "--workdir", str(workdir),
                                           "--scenario", scenario, timeout=300)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    outcomes = {}
    for outcome in result["outcomes"]:
        outcome["report"] = json.loads(outcome["json"]["stdout"])
        outcomes[outcome["mode"]] = outcome
    return {"started": result["started"], "outcomes": outcomes}


@pytest.fixture(scope="module")
def managed():
    return run_probe("managed")


@pytest.fixture(scope="module")
def hand_run():
    return run_probe("hand-run")


def test_root_sees_managed_instance(managed):
    report = managed["outcomes"]["root"]["report"]
    assert report["complete"] is True
    assert [entry["pid"] for entry in report["inventory"]["instances"]] == [managed["started"]["managed_instance"]]
    assert report["exit_code"] in (0, 1)


@pytest.mark.parametrize("mode", REDUCED)
def test_unreadable_instance_is_unknown(managed, mode):
    outcome = managed["outcomes"][mode]
    report = outcome["report"]
    assert outcome["json"]["exit_code"] == 3, outcome["json"]["stderr"]
    assert outcome["nagios"]["exit_code"] == 3
    assert outcome["nagios"]["stdout"].startswith("BPM-DOCTOR UNKNOWN: ")
    assert report["status"] == "UNKNOWN"
    assert report["complete"] is False
    assert report["inventory"]["instances"] == []


@pytest.mark.parametrize("mode", REDUCED)
def test_read_errors_counted_by_reason(managed, mode):
    read_errors = managed["outcomes"][mode]["report"]["read_errors"]
    for reason in ("permission-denied:environ", "permission-denied:exe", "permission-denied:cwd"):
        assert read_errors.get(reason) == 2, read_errors


@pytest.mark.parametrize("mode", REDUCED)
def test_partial_scan_reports_no_false_critical(managed, mode):
    findings = managed["outcomes"][mode]["report"]["findings"]
    assert [finding["id"] for finding in findings if finding["severity"] == "critical"] == []


@pytest.mark.parametrize("mode", REDUCED)
def test_partial_scan_logs_incomplete(managed, mode):
    events = [json.loads(line) for line in managed["outcomes"][mode]["json"]["stderr"].splitlines()
              if line.startswith("{")]
    assert "scan_incomplete" in [event["event"] for event in events]
    assert "internal error" not in managed["outcomes"][mode]["json"]["stderr"]


def test_textfile_marks_scan_incomplete(managed):
    textfile = managed["outcomes"]["root-no-capabilities"]["textfile"]
    assert "bpm_doctor_scan_complete 0.0" in textfile.splitlines()
    assert 'bpm_doctor_read_errors{reason="permission-denied:environ"} 2.0' in textfile.splitlines()


def test_nobody_run_uses_system_python(managed):
    assert managed["outcomes"]["nobody"]["python"] == "/usr/bin/python3"


@pytest.mark.parametrize("mode", REDUCED)
def test_visible_critical_stays_critical(hand_run, mode):
    outcome = hand_run["outcomes"][mode]
    report = outcome["report"]
    assert outcome["json"]["exit_code"] == 2, outcome["json"]["stderr"]
    assert outcome["nagios"]["exit_code"] == 2
    assert report["complete"] is False
    hand_run_pids = [finding.get("pid") for finding in report["findings"] if finding["id"] == "hand-run-instance"]
    assert hand_run_pids == [hand_run["started"]["hand_run"]]
