"""The Prometheus collector and `check --textfile`: series, labels, bounds and promtool."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys

import pytest
from prometheus_client import openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from bpm_doctor import catalogue, config as config_module
from bpm_doctor.diagnose import diagnose
from bpm_doctor.errors import DoctorError
from bpm_doctor.model import Process, Snapshot
from bpm_doctor.report import prometheus, verdict
from tests.support import hostsnap, tools

OPERATOR = "0x" + "ab" * 20


def result_for(snapshot: Snapshot, config: config_module.Config):
    findings, view = diagnose(snapshot, config)
    return verdict(findings, snapshot, view)


def case_path(name: str):
    path = hostsnap.cases_dir() / f"{name}.hostsnap"
    if not path.exists():
        message = f"case {path} is missing; set BPM_DOCTOR_CASES"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def case_result(name: str, config: config_module.Config | None = None):
    return result_for(hostsnap.load(case_path(name)), config or config_module.Config())


def render(result, config=None, **state) -> str:
    config = config or config_module.Config()
    scan_state = prometheus.state_from_result(result, 0.125, now=1_700_000_000.0) if result else prometheus.ScanState()
    if state:
        from dataclasses import replace

        scan_state = replace(scan_state, **state)
    return prometheus.render_text(scan_state, config).decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name: str, **labels) -> float | None:
    return found.get((name, frozenset(labels.items())))


def series_of(found, name: str) -> dict[frozenset, float]:
    return {labels: number for (sample_name, labels), number in found.items() if sample_name == name}


def hand_run_snapshot(pairs: list[tuple[int, int]]) -> Snapshot:
    """Return a snapshot with one hand-run instance (login session, no manager) per pair."""
    snapshot = Snapshot(source="test")
    for index, (blueprint, service) in enumerate(pairs):
        pid = 1000 + index
        snapshot.processes[pid] = Process(
            pid=pid, ppid=1, argv=["/opt/quill/quill-operator", "run"], exe="/opt/quill/quill-operator",
            env={"BLUEPRINT_ID": str(blueprint), "SERVICE_ID": str(service)},
            cgroup="/user.slice/user-1000.slice/session-4.scope",
        )
    return snapshot


def test_every_catalogue_id_has_a_findings_series():
    found = samples(render(result_for(Snapshot(source="test"), config_module.Config())))
    series = series_of(found, "bpm_doctor_findings")
    assert len(series) == len(catalogue.IDS)
    for entry in catalogue.ENTRIES:
        assert value(found, "bpm_doctor_findings", id=entry.id, severity=entry.severity.label) == 0


def test_severity_override_changes_the_label():
    config = config_module.parse('[severity]\nstale-socket = "info"\n')
    found = samples(render(result_for(Snapshot(source="test"), config), config))
    assert value(found, "bpm_doctor_findings", id="stale-socket", severity="info") == 0
    assert value(found, "bpm_doctor_findings", id="stale-socket", severity="warning") is None


def test_hand_run_and_duplicate_case():
    found = samples(render(case_result("F14-handrun-in-tmux-duplicate")))
    assert value(found, "bpm_doctor_findings", id="hand-run-instance", severity="critical") == 1
    assert value(found, "bpm_doctor_findings", id="duplicate-service", severity="critical") == 1
    assert value(found, "bpm_doctor_instances", blueprint_id="42", service_id="11", launcher="tmux") == 1
    assert value(found, "bpm_doctor_instances", blueprint_id="42", service_id="11", launcher="manager") == 1
    assert value(found, "bpm_doctor_manager_processes") == 1
    assert value(found, "bpm_doctor_manager_units_enabled") == 1
    assert value(found, "bpm_doctor_findings_by_severity", severity="critical") == 3


def test_manager_unit_state_and_restarts():
    text = render(case_result("F27-manager-crashloop-bad-flags"))
    found = samples(text)
    states = {dict(labels)["state"]: number for labels, number in series_of(found, "bpm_doctor_manager_unit_state").items()
              if dict(labels)["unit"] == "quill5-manager.service"}
    assert states == {"active": 0, "activating": 1, "deactivating": 0, "inactive": 0, "failed": 0}
    assert value(found, "bpm_doctor_manager_unit_restarts", unit="quill5-manager.service") == 4120
    assert "# TYPE bpm_doctor_manager_unit_restarts gauge" in text


def test_stale_references_count_objects_by_kind():
    found = samples(render(case_result("F22-stale-manager-dirs-and-cache")))
    assert set(dict(labels)["kind"] for labels in series_of(found, "bpm_doctor_stale_references")) == set(
        prometheus.STALE_KINDS)
    assert value(found, "bpm_doctor_stale_references", kind="stale-cached-binary") == 3
    assert value(found, "bpm_doctor_stale_references", kind="stale-socket") == 1
    assert value(found, "bpm_doctor_stale_references", kind="stale-service-dir") >= 2
    assert value(found, "bpm_doctor_stale_references", kind="stale-unit") == 0


def test_instances_overflow_past_max_services():
    config = config_module.parse("max_services = 2\n")
    snapshot = hand_run_snapshot([(5, 1), (5, 2), (5, 3), (6, 1), (7, 9)])
    found = samples(render(result_for(snapshot, config), config))
    series = {tuple(sorted(dict(labels).items())): number
              for labels, number in series_of(found, "bpm_doctor_instances").items()}
    assert series == {
        (("blueprint_id", "5"), ("launcher", "shell"), ("service_id", "1")): 1,
        (("blueprint_id", "5"), ("launcher", "shell"), ("service_id", "2")): 1,
        (("blueprint_id", "other"), ("launcher", "shell"), ("service_id", "other")): 3,
    }


def test_allowed_findings_are_counted_apart():
    config = config_module.parse('[[allow]]\nbinary = "quill-operator"\nreason = "lab box"\n')
    found = samples(render(result_for(hand_run_snapshot([(5, 1)]), config), config))
    assert value(found, "bpm_doctor_findings", id="hand-run-instance", severity="critical") == 0
    assert value(found, "bpm_doctor_findings_allowed") >= 1
    assert value(found, "bpm_doctor_findings_by_severity", severity="info") >= 1


def test_read_errors_known_reasons_and_overflow():
    snapshot = Snapshot(source="test", read_errors={"permission-denied:environ": 4, "Weird Reason!": 2})
    found = samples(render(result_for(snapshot, config_module.Config())))
    assert value(found, "bpm_doctor_read_errors", reason="permission-denied:environ") == 4
    assert value(found, "bpm_doctor_read_errors", reason="vanished") == 0
    assert value(found, "bpm_doctor_read_errors", reason="other") == 2
    assert value(found, "bpm_doctor_scan_complete") == 0


def test_read_error_reasons_are_capped():
    errors = {f"reason-{index:03d}": 1 for index in range(100)}
    series = prometheus.read_error_series(errors)
    assert len(series) == prometheus.MAX_READ_ERROR_REASONS + 1
    assert series[-1] == ("other", 100 - (prometheus.MAX_READ_ERROR_REASONS - len(prometheus.KNOWN_READ_ERROR_REASONS)))


def test_no_label_names_a_pid_path_or_argv():
    text = render(case_result("F14-handrun-in-tmux-duplicate"), config_module.parse(f'operator_address = "{OPERATOR}"\n'))
    for (name, labels), _number in samples(text).items():
        for label, label_value in labels:
            assert label not in ("pid", "path", "argv", "cmdline", "exe", "env")
            assert not label_value.startswith("/"), f"{name} has a path in {label}={label_value}"


def test_self_metrics_of_a_one_shot_check():
    found = samples(render(case_result("R02-healthy-tree")))
    assert value(found, "bpm_doctor_build_info", version=prometheus.__version__) == 1
    assert value(found, "bpm_doctor_scans_total") == 1
    assert value(found, "bpm_doctor_scan_failures_total") == 0
    assert value(found, "bpm_doctor_check_failures_total") == 0
    assert value(found, "bpm_doctor_scan_success") == 1
    assert value(found, "bpm_doctor_scan_duration_seconds") == 0.125
    assert value(found, "bpm_doctor_last_scan_success_timestamp_seconds") == 1_700_000_000.0


def test_operator_info_only_when_configured():
    result = case_result("R02-healthy-tree")
    without = samples(render(result))
    assert series_of(without, "bpm_doctor_operator_info") == {}
    config = config_module.parse(f'operator_address = "{OPERATOR}"\n')
    with_operator = samples(render(result, config))
    assert value(with_operator, "bpm_doctor_operator_info", operator_address=OPERATOR) == 1


def test_exec_event_series_only_from_the_daemon():
    result = case_result("R02-healthy-tree")
    one_shot = samples(render(result))
    assert series_of(one_shot, "bpm_doctor_exec_events") == {}
    assert value(one_shot, "bpm_doctor_scan_processes_unread") is None

    daemon = samples(render(result, exec_events="unverified", exec_events_lost_total=3, processes_unread=0))
    assert value(daemon, "bpm_doctor_exec_events", state="unverified") == 1
    assert value(daemon, "bpm_doctor_exec_events", state="on") == 0
    assert value(daemon, "bpm_doctor_exec_events", state="off") == 0
    assert value(daemon, "bpm_doctor_exec_events_lost_total") == 3
    assert value(daemon, "bpm_doctor_scan_processes_unread") == 0


def test_before_the_first_scan_only_self_metrics():
    found = samples(render(None))
    names = {name for name, _labels in found}
    assert names == {
        "bpm_doctor_build_info", "bpm_doctor_scans_total", "bpm_doctor_scan_failures_total",
        "bpm_doctor_check_failures_total", "bpm_doctor_scan_success",
        "bpm_doctor_last_scan_success_timestamp_seconds",
    }
    assert value(found, "bpm_doctor_last_scan_success_timestamp_seconds") == 0
    assert value(found, "bpm_doctor_scan_success") == 0


def test_no_created_series_in_either_format():
    result = case_result("R02-healthy-tree")
    config = config_module.Config()
    text = render(result)
    registry = prometheus.registry_for(lambda: prometheus.state_from_result(result, 0.1), config)
    open_metrics = openmetrics.exposition.generate_latest(registry).decode()
    assert "_created" not in text
    assert "_created" not in open_metrics
    assert os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES") == "True"


def test_openmetrics_output_parses():
    result = case_result("F14-handrun-in-tmux-duplicate")
    registry = prometheus.registry_for(lambda: prometheus.state_from_result(result, 0.1), config_module.Config())
    text = openmetrics.exposition.generate_latest(registry).decode()
    assert text.endswith("# EOF\n")
    families = {family.name: family for family in parse_openmetrics(text)}
    assert families["bpm_doctor_scans"].type == "counter"
    assert families["bpm_doctor_build"].type == "info"


def test_describe_lists_every_metric_once():
    collector = prometheus.DoctorCollector(prometheus.ScanState, config_module.Config())
    names = [family.name for family in collector.describe()]
    assert len(names) == len(set(names)) == len(prometheus.METRICS)


def test_collector_on_a_shared_registry():
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(prometheus.DoctorCollector(prometheus.ScanState, config_module.Config()))
    with pytest.raises(ValueError):
        registry.register(prometheus.DoctorCollector(prometheus.ScanState, config_module.Config()))
    assert b"bpm_doctor_build_info" in generate_latest(registry)


@pytest.mark.parametrize("case", ["R02-healthy-tree", "F14-handrun-in-tmux-duplicate", "F22-stale-manager-dirs-and-cache",
                                  "F27-manager-crashloop-bad-flags"])
def test_promtool_check_metrics(case):
    promtool = tools.require("promtool", "prometheus")
    config = config_module.parse(f'operator_address = "{OPERATOR}"\n')
    text = render(case_result(case, config), config)
    completed = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout + completed.stderr == ""


# --- check --textfile -------------------------------------------------------


def test_write_textfile_replaces_file_atomically(tmp_path):
    path = tmp_path / "bpm-doctor.prom"
    path.write_text("old content\n")
    result = case_result("F14-handrun-in-tmux-duplicate")
    prometheus.write_textfile(str(path), result, config_module.Config(), scan_duration_seconds=0.5)
    found = samples(path.read_text())
    assert value(found, "bpm_doctor_findings", id="hand-run-instance", severity="critical") == 1
    assert value(found, "bpm_doctor_scan_duration_seconds") == 0.5
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["bpm-doctor.prom"]


def test_write_textfile_private_registry_has_no_process_metrics(tmp_path):
    path = tmp_path / "bpm-doctor.prom"
    prometheus.write_textfile(str(path), case_result("R02-healthy-tree"), config_module.Config())
    text = path.read_text()
    assert "process_" not in text
    assert "python_" not in text


def test_write_textfile_rejects_other_suffix(tmp_path):
    with pytest.raises(DoctorError, match=r"\.prom"):
        prometheus.write_textfile(str(tmp_path / "metrics.txt"), case_result("R02-healthy-tree"), config_module.Config())


def test_write_textfile_missing_directory(tmp_path):
    with pytest.raises(DoctorError, match="cannot write textfile"):
        prometheus.write_textfile(str(tmp_path / "absent" / "x.prom"), case_result("R02-healthy-tree"),
                                  config_module.Config())


def test_write_textfile_leaves_no_temporary_on_failure(tmp_path, monkeypatch):
    def fail(_source, _target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(DoctorError, match="No space left"):
        prometheus.write_textfile(str(tmp_path / "x.prom"), case_result("R02-healthy-tree"), config_module.Config())
    assert os.listdir(tmp_path) == []


def test_textfile_argument():
    parser = argparse.ArgumentParser(exit_on_error=False)
    prometheus.add_check_arguments(parser)
    assert parser.parse_args(["--textfile", "/var/lib/node/bpm.prom"]).textfile == "/var/lib/node/bpm.prom"
    assert parser.parse_args([]).textfile is None
    with pytest.raises(argparse.ArgumentError, match=r"must end in|ending in \.prom"):
        parser.parse_args(["--textfile", "/var/lib/node/bpm.txt"])


def test_check_command_writes_textfile(tmp_path):
    case = case_path("F14-handrun-in-tmux-duplicate")
    path = tmp_path / "bpm-doctor.prom"
    completed = subprocess.run(
        [sys.executable, "-m", "bpm_doctor", "check", "--snapshot", str(case), "--format", "nagios",
         "--textfile", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout.startswith("BPM-DOCTOR CRITICAL")
    found = samples(path.read_text())
    assert value(found, "bpm_doctor_findings", id="duplicate-service", severity="critical") == 1
    assert value(found, "bpm_doctor_scan_duration_seconds") > 0


def test_check_command_rejects_textfile_suffix(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "bpm_doctor", "check", "--textfile", str(tmp_path / "bpm.txt")],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 3
    assert "ending in .prom" in completed.stderr
