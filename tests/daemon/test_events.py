"""Finding events: each finding logged once when it appears and once when it clears."""

from __future__ import annotations

import structlog

from bpm_doctor.daemon import events
from bpm_doctor.diagnose.findings import make
from bpm_doctor.model import Severity


def hand_run(pid: int, service: int = 1):
    return make("hand-run-instance", f"instance pid {pid} was started by a login shell", pid=pid,
                launcher="shell", blueprint_id=9777, service_id=service,
                evidence=["argv: quill-operator run --keystore-password hunter2"])


def test_same_finding_is_not_a_change():
    first = events.index([hand_run(10)])
    second = events.index([hand_run(10)])
    assert events.changes(first, second) == ([], [])


def test_new_pid_is_one_cleared_and_one_appeared():
    appeared, cleared = events.changes(events.index([hand_run(10)]), events.index([hand_run(11)]))
    assert [finding.pid for finding in appeared] == [11]
    assert [finding.pid for finding in cleared] == [10]


def test_identity_includes_lists_of_pids():
    duplicate = make("duplicate-service", "two instances", pid=[10, 11], blueprint_id=9777, service_id=1)
    assert events.finding_identity(duplicate) == ("duplicate-service", None, (10, 11), None, 9777, 1)


def test_identity_ignores_summary_and_severity():
    first = hand_run(10)
    second = hand_run(10)
    second.summary = "reworded"
    second.severity = Severity.INFO
    assert events.finding_identity(first) == events.finding_identity(second)


def test_logged_fields_leave_out_evidence():
    logger = structlog.get_logger()
    with structlog.testing.capture_logs() as logs:
        events.log_changes(logger, [hand_run(10)], [])
    assert logs == [{
        "event": "finding_appeared", "log_level": "warning", "id": "hand-run-instance", "severity": "critical",
        "summary": "instance pid 10 was started by a login shell", "pid": 10, "launcher": "shell",
        "blueprint_id": 9777, "service_id": 1,
    }]
    assert "hunter2" not in repr(logs)


def test_levels_by_kind():
    logger = structlog.get_logger()
    info = make("stale-service-dir", "leftover dirs", path=["/run/x/svc-1-2"])
    failed = make("check-failed", "check x raised KeyError")
    with structlog.testing.capture_logs() as logs:
        events.log_changes(logger, [info, failed], [hand_run(10)])
    assert [(entry["event"], entry["log_level"], entry["id"]) for entry in logs] == [
        ("finding_appeared", "info", "stale-service-dir"),
        ("finding_appeared", "error", "check-failed"),
        ("finding_cleared", "info", "hand-run-instance"),
    ]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_budget_holds_back_flood():
    clock = FakeClock()
    budget = events.EventBudget(burst=5, per_minute=60, monotonic=clock)
    logger = structlog.get_logger()
    with structlog.testing.capture_logs() as logs:
        events.log_changes(logger, [hand_run(pid) for pid in range(100, 108)], [hand_run(99)], budget)
    assert [entry["event"] for entry in logs] == ["finding_appeared"] * 5 + ["finding_events_suppressed"]
    assert logs[-1]["appeared"] == 3
    assert logs[-1]["cleared"] == 1
    assert logs[-1]["log_level"] == "warning"


def test_budget_refills_with_time():
    clock = FakeClock()
    budget = events.EventBudget(burst=5, per_minute=60, monotonic=clock)
    assert budget.take(10) == 5
    assert budget.take(1) == 0
    clock.now += 3
    assert budget.take(10) == 3
    clock.now += 3600
    assert budget.take(10) == 5


def test_budget_never_holds_back_check_failed():
    clock = FakeClock()
    budget = events.EventBudget(burst=1, per_minute=60, monotonic=clock)
    failed = make("check-failed", "check x raised KeyError")
    logger = structlog.get_logger()
    with structlog.testing.capture_logs() as logs:
        events.log_changes(logger, [hand_run(10), hand_run(11), failed], [], budget)
    logged = [(entry["event"], entry.get("id")) for entry in logs]
    assert ("finding_appeared", "check-failed") in logged
    assert logged.count(("finding_appeared", "hand-run-instance")) == 1
