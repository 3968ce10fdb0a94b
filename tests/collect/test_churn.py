"""Scans under heavy process churn: exits, zombies and reused pids never crash a scan or mix two processes.

Each test runs tests/support/race_probe.py as PID 1 of a private PID
namespace, where tests/support/churn.py starts thousands of processes that
look like manager daemons, managed instances, hand-run instances and
orphans, and recycles pids from a small range so that they are reused
within milliseconds. The probe checks every scan against the churn log:
argv and environment tags of one process must agree, and every hand-run,
orphan or duplicate finding must match a process that was really started
at that pid. Needs root for the namespace.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import pidns, standins, tools

pytestmark = pytest.mark.live

SCAN_SECONDS = 20.0
SERVE_SECONDS = 22.0


@pytest.fixture
def workdir():
    with standins.short_workdir("bpmc") as path:
        yield path


def probe(workdir: Path, *arguments: str, timeout: float) -> dict:
    completed = pidns.run_in_namespace("tests.support.race_probe", *arguments, "--workdir", str(workdir),
                                       timeout=timeout)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_scans_under_churn_never_mix_processes(workdir, mode):
    """Full scans read every process; incremental scans share a ProcessCache as the daemon's do."""
    extra = ["--incremental"] if mode == "incremental" else []
    result = probe(workdir, "scan", "--seconds", str(SCAN_SECONDS), *extra, timeout=SCAN_SECONDS + 120)
    print(json.dumps(result, indent=1))
    assert result["exceptions"] == 0, result["violations"]
    assert result["violation_count"] == 0, result["violations"]
    assert result["scans"] >= 50
    assert result["churn"]["started_total"] >= 2000
    assert result["churn"]["reused_pids"] >= 1000, "the namespace did not recycle pids"
    assert result["vanished_reads"] > 0, "no process vanished during a read, so the races were not exercised"
    if mode == "incremental":
        assert result["cached_reads_last_scan"] > 0, "the cache was never used"


def probe_on_host(workdir: Path, *arguments: str, timeout: float) -> dict:
    """Run the probe in this host's PID namespace; on a timeout, kill it and what it started, by pid."""
    environment = {**os.environ, "PYTHONPATH": str(pidns.REPOSITORY)}
    probe_process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.race_probe", *arguments, "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(pidns.REPOSITORY), env=environment)
    try:
        output, errors = probe_process.communicate(timeout=timeout)
    finally:
        if probe_process.poll() is None:
            for pid in pidns.descendants(probe_process.pid):
                os.kill(pid, signal.SIGKILL)
            probe_process.kill()
            probe_process.communicate()
    assert probe_process.returncode == 0, errors[-4000:]
    return json.loads(output.strip().splitlines()[-1])


def test_event_fed_scans_under_churn_stay_current(workdir):
    """Scans that skip processes the kernel's events report unchanged still see every exec and reparenting.

    The events only reach the initial PID namespace, so this probe churns
    on the host, without recycled pids.
    """
    tools.require_proc_connector()
    result = probe_on_host(workdir, "scan", "--seconds", str(SCAN_SECONDS), "--events",
                           timeout=SCAN_SECONDS + 120)
    print(json.dumps(result, indent=1))
    assert result["exceptions"] == 0, result["violations"]
    assert result["violation_count"] == 0, result["violations"]
    assert result["scans"] >= 50
    assert result["churn"]["started_total"] >= 2000
    events = result["events"]
    assert events["distrusted"] is None
    assert events["unread_total"] > 0, "no scan skipped a process, so the event path was not exercised"
    assert events["changes_checked"] > 0, "no process changed between scans, so nothing was checked"


@pytest.fixture(scope="module")
def reuse_result():
    with standins.short_workdir("bpmc") as path:
        result = probe(path, "reuse", timeout=180)
    print(json.dumps(result, indent=1))
    return {entry["scenario"]: entry for entry in result["scenarios"]}


@pytest.mark.parametrize("scenario", ["swap-after-stat", "swap-before-environ"])
def test_pid_reused_during_read_is_dropped(reuse_result, scenario):
    """An orphan-looking instance replaced by a manager at the same pid during its read is counted as vanished."""
    entry = reuse_result[scenario]
    assert entry["swapped"], "the collector never opened the hooked /proc file; the hook needs updating"
    assert entry["reused"], f"the pid was not reused: {entry}"
    assert entry["seen_argv"] is None
    assert entry["vanished"] >= 1
    assert entry["victim_findings"] == []
    assert entry["check_failed"] == []


def test_pid_reused_within_one_tick_never_mixes(reuse_result):
    """Start times have clock-tick resolution, so this swap passes a start-time check; nothing may mix anyway."""
    entry = reuse_result["swap-before-environ-same-tick"]
    assert entry["same_tick"] >= 1, f"no attempt put both processes in one clock tick: {entry}"
    assert entry["outcomes"]["mixed"] == 0, entry["mixed_examples"]
    assert entry["outcomes"]["victim"] == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def scrape_metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
    return values


def test_daemon_under_churn(workdir):
    port = free_port()
    daemon_stderr = workdir / "daemon.stderr"
    stop_file = workdir / "stop-daemon"
    process = pidns.start_in_namespace(
        "tests.support.race_probe", "serve", "--workdir", str(workdir), "--seconds", str(SERVE_SECONDS),
        "--port", str(port), "--daemon-stderr", str(daemon_stderr), "--stop-file", str(stop_file))
    last = {}
    scrapes = 0

    try:
        deadline = time.monotonic() + SERVE_SECONDS - 1
        while time.monotonic() < deadline:
            try:
                last = scrape_metrics(port)
                scrapes += 1
            except OSError:
                pass
            time.sleep(0.5)
        stdout, _stderr = process.communicate(timeout=120)
    finally:
        stop_file.touch()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    result = json.loads(stdout.strip().splitlines()[-1])
    events = [json.loads(line) for line in daemon_stderr.read_text().splitlines() if line.startswith("{")]
    print(json.dumps({"result": result, "metrics": last, "scrapes": scrapes}, indent=1))
    assert result["daemon_status"] == 0
    assert result["churn"]["started_total"] >= 1000
    assert scrapes >= 10
    assert last["bpm_doctor_scans_total"] >= 3
    assert last["bpm_doctor_scan_failures_total"] == 0
    assert last["bpm_doctor_check_failures_total"] == 0
    assert [event for event in events if event.get("level") == "error"] == []
    assert "Traceback" not in daemon_stderr.read_text()
