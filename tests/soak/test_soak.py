"""Soak: many scan cycles under process churn and scrape load, with memory, descriptors and latency measured.

Short by default, for CI: the daemon runs for 60 s (12 scans at the 5 s
minimum interval), so the Scanner is also driven directly for 2,000 cycles
under churn. Set BPM_DOCTOR_SOAK_SECONDS to run both for that long instead,
such as BPM_DOCTOR_SOAK_SECONDS=3600 for an hour each.

The churn runs in a private PID namespace (tests/support/pidns.py) with
the scanner or daemon; scrapes come from this process over 127.0.0.1.
Needs root for the namespace.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import threading
import time
import urllib.request

import pytest

from bpm_doctor import config as config_module, serve
from bpm_doctor.collect import collect_host
from bpm_doctor.sdnotify import Notifier
from tests.support import pidns, standins

pytestmark = pytest.mark.live

SOAK_SECONDS = float(os.environ.get("BPM_DOCTOR_SOAK_SECONDS", "0") or 0)
DAEMON_SECONDS = SOAK_SECONDS or 60.0
SCANNER_CYCLES = 10**9 if SOAK_SECONDS else 2000
SCANNER_MAX_SECONDS = SOAK_SECONDS or 600.0
# RSS creeps under churn while the Python heap (tracemalloc) and the number
# of gc-tracked objects stay flat: by 75 to 190 bytes per scan on the
# machine docs/reliability.md describes, cause not identified. The allowance
# is 4 MiB plus 256 bytes per scan after warm-up. Keeping one snapshot per
# scan (about 100 KiB) would exceed it within a hundred scans.
RSS_BASE_TOLERANCE_KIB = 4 * 1024
RSS_TOLERANCE_KIB_PER_SCAN = 0.25
DESCRIPTOR_TOLERANCE = 1
SCRAPE_CLIENTS = 8
SCRAPE_PAUSE_SECONDS = 0.02


@pytest.fixture
def workdir():
    with standins.short_workdir("bpms") as path:
        yield path


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def test_scanner_cycles_keep_memory_and_descriptors_flat(workdir):
    timeout = SCANNER_MAX_SECONDS + 300
    completed = pidns.run_in_namespace("tests.support.race_probe", "scanner", "--workdir", str(workdir),
                                       "--cycles", str(SCANNER_CYCLES), "--max-seconds", str(SCANNER_MAX_SECONDS),
                                       timeout=timeout)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))
    samples = result["samples"]
    warm = next(sample for sample in samples if sample["cycle"] >= result["warmup_cycles"])
    last = samples[-1]
    assert result["cycles"] >= min(SCANNER_CYCLES, 2000)
    assert result["scan_failures_total"] == 0
    assert result["check_failures_total"] == 0
    assert result["churn"]["started_total"] >= result["cycles"]
    allowance = RSS_BASE_TOLERANCE_KIB + RSS_TOLERANCE_KIB_PER_SCAN * (last["cycle"] - warm["cycle"])
    assert last["rss_kib"] - warm["rss_kib"] <= allowance, samples
    assert abs(last["fds"] - warm["fds"]) <= DESCRIPTOR_TOLERANCE, samples


def _vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as stream:
        for line in stream:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _daemon_host_pid(namespace_pid: int, timeout: float = 30) -> int:
    """Return the host pid of `bpm_doctor serve` below the unshare process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pidns.descendants(namespace_pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as stream:
                    argv = stream.read().split(b"\0")
            except OSError:
                continue
            if b"bpm_doctor" in argv and b"serve" in argv:
                return pid
        time.sleep(0.1)
    raise AssertionError("bpm-doctor serve did not start in the namespace")


def _scrape(port: int) -> tuple[int, float, dict[str, float]]:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
        status = response.status
    elapsed = time.monotonic() - started
    values = {}
    for line in body.splitlines():
        name, _, value = line.partition(" ")
        if name in ("bpm_doctor_scans_total", "bpm_doctor_scan_failures_total", "bpm_doctor_check_failures_total"):
            values[name] = float(value)
    return status, elapsed, values


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_daemon_soak_under_churn_and_scrapes(workdir):
    port = free_port()
    stop_file = workdir / "stop-daemon"
    daemon_stderr = workdir / "daemon.stderr"
    process = pidns.start_in_namespace(
        "tests.support.race_probe", "serve", "--workdir", str(workdir), "--seconds", str(DAEMON_SECONDS + 30),
        "--port", str(port), "--daemon-stderr", str(daemon_stderr), "--stop-file", str(stop_file))
    latencies: list[float] = []
    failures: list[str] = []
    last_values: dict[str, float] = {}
    scraping = threading.Event()
    done = threading.Event()
    lock = threading.Lock()

    def client():
        while not done.is_set():
            if not scraping.wait(0.1):
                continue
            try:
                status, elapsed, values = _scrape(port)
            except OSError as error:
                with lock:
                    failures.append(f"{type(error).__name__}: {error}")
                continue
            with lock:
                latencies.append(elapsed)
                if status != 200:
                    failures.append(f"HTTP {status}")
                last_values.update(values)
            time.sleep(SCRAPE_PAUSE_SECONDS)

    clients = [threading.Thread(target=client, daemon=True) for _ in range(SCRAPE_CLIENTS)]
    samples = []
    try:
        daemon_pid = _daemon_host_pid(process.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if _scrape(port)[2].get("bpm_doctor_scans_total", 0) >= 2:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        for thread in clients:
            thread.start()
        started = time.monotonic()
        while time.monotonic() - started < DAEMON_SECONDS:
            scraping.set()
            time.sleep(min(5.0, max(0.0, DAEMON_SECONDS - (time.monotonic() - started))))
            scraping.clear()
            time.sleep(0.3)  # let in-flight scrapes finish, so their sockets are not counted
            samples.append({"seconds": round(time.monotonic() - started, 1), "rss_kib": _vm_rss_kib(daemon_pid),
                            "fds": _descriptors(daemon_pid)})
    finally:
        done.set()
        scraping.set()
        for thread in clients:
            thread.join(timeout=15)
        stop_file.touch()
        try:
            stdout, _stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    result = json.loads(stdout.strip().splitlines()[-1])
    events = [json.loads(line) for line in daemon_stderr.read_text().splitlines() if line.startswith("{")]
    summary = {
        "scrapes": len(latencies), "failures": failures[:10], "failure_count": len(failures),
        "latency_p50": statistics.median(latencies) if latencies else None,
        "latency_p99": percentile(latencies, 0.99) if latencies else None,
        "latency_max": max(latencies) if latencies else None,
        "metrics": last_values, "samples": samples, "churn": result["churn"],
    }
    print(json.dumps(summary, indent=1))
    assert result["daemon_status"] == 0
    assert failures == []
    assert len(latencies) >= DAEMON_SECONDS * 10
    assert summary["latency_p99"] < 1.0
    assert last_values["bpm_doctor_scans_total"] >= DAEMON_SECONDS / 5 - 1
    assert last_values["bpm_doctor_scan_failures_total"] == 0
    assert last_values["bpm_doctor_check_failures_total"] == 0
    assert [event for event in events if event.get("level") == "error"] == []
    first, last = samples[0], samples[-1]
    allowance = RSS_BASE_TOLERANCE_KIB + RSS_TOLERANCE_KIB_PER_SCAN * last_values["bpm_doctor_scans_total"]
    assert last["rss_kib"] - first["rss_kib"] <= allowance, samples
    assert abs(last["fds"] - first["fds"]) <= DESCRIPTOR_TOLERANCE, samples


def test_scrape_never_waits_for_scan():
    """Scrapes during long scans are served from the last result, in a small fraction of a scan's time.

    Each scan here is eight real scans of this host in a row, so a scan
    lasts long enough for many scrapes to land inside it.
    """
    def slow_collect(config):
        for _ in range(7):
            collect_host(config)
        return collect_host(config)

    daemon = serve.Daemon(config_module.Config(), "127.0.0.1:0", 5.0, notifier=Notifier(backend=lambda _m: True),
                          collect=slow_collect)
    daemon.start()
    scans: list[tuple[float, float]] = []
    scrapes: list[tuple[float, float]] = []
    done = threading.Event()

    def scan_loop():
        while not done.is_set():
            started = time.monotonic()
            daemon.scanner.scan()
            scans.append((started, time.monotonic()))

    host, port = daemon.server.server_address[:2]
    scanner = threading.Thread(target=scan_loop, daemon=True)
    try:
        daemon.scanner.scan()
        scanner.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            started = time.monotonic()
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
                assert response.status == 200
                response.read()
            scrapes.append((started, time.monotonic()))
            time.sleep(0.01)
    finally:
        done.set()
        scanner.join(timeout=60)
        daemon.close()
    during = [end - start for start, end in scrapes
              if any(scan_start <= start <= scan_end for scan_start, scan_end in scans)]
    scan_seconds = statistics.median(end - start for start, end in scans)
    p99 = percentile(during, 0.99)
    print(json.dumps({"scans": len(scans), "scan_seconds_median": scan_seconds, "scrapes": len(scrapes),
                      "scrapes_during_scan": len(during), "p50": statistics.median(during), "p99": p99,
                      "max": max(during)}, indent=1))
    assert len(during) >= 50
    assert p99 < 0.25
    assert p99 < scan_seconds / 2
