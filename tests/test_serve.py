"""`bpm-doctor serve`: the scan loop in process, the daemon as a subprocess, and alerts end to end.

The in-process tests drive `Daemon` and `Scanner` with fixture snapshots. The
`live` tests start real processes on loopback: the daemon itself (with a test
NOTIFY_SOCKET), and Prometheus plus Alertmanager (Debian packages
`prometheus` and `prometheus-alertmanager`) scraping it with the shipped
rules.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from bpm_doctor import config as config_module, diagnose as diagnose_module, serve
from bpm_doctor.daemon import scanner as scanner_module
from bpm_doctor.errors import DoctorError
from bpm_doctor.model import Process, Snapshot
from bpm_doctor.sdnotify import Notifier
from tests.support import tools
from tests.support.notify import NotifySocket

REPOSITORY = Path(__file__).resolve().parents[1]
RULES = REPOSITORY / "packaging" / "prometheus" / "bpm-doctor.rules.yml"


def hand_run_snapshot() -> Snapshot:
    snapshot = Snapshot(source="test")
    snapshot.processes[4242] = Process(
        pid=4242, ppid=1, argv=["/opt/quill/quill-operator", "run"], exe="/opt/quill/quill-operator",
        env={"BLUEPRINT_ID": "9777", "SERVICE_ID": "1"}, cgroup="/user.slice/user-0.slice/session-3.scope",
    )
    return snapshot


def metric_values(text: str) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def scrape(address: str, path: str = "/metrics", headers: dict | None = None) -> tuple[int, dict, str]:
    request = urllib.request.Request(f"http://{address}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


class Sequence:
    """A collect function that returns or raises the given items in turn, repeating the last."""

    def __init__(self, *items):
        self.items = list(items)

    def __call__(self, _config):
        item = self.items.pop(0) if len(self.items) > 1 else self.items[0]
        if isinstance(item, BaseException):
            raise item
        return item


@pytest.fixture
def daemon_factory():
    started = []

    def make(collect, interval=30.0, notifier=None, watchdog_seconds=None, config=None):
        daemon = serve.Daemon(config or config_module.Config(), "127.0.0.1:0", interval,
                              notifier=notifier or Notifier(backend=lambda _message: True),
                              collect=collect, watchdog_seconds=watchdog_seconds)
        daemon.start()
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.close()


# --- in process ---------------------------------------------------------------


def test_failed_scan_keeps_previous_result(daemon_factory):
    collect = Sequence(hand_run_snapshot(), OSError(13, "Permission denied"), OSError(13, "Permission denied"),
                       OSError(13, "Permission denied"), hand_run_snapshot())
    with structlog.testing.capture_logs() as logs:
        daemon = daemon_factory(collect)
        for _ in range(4):
            daemon.scanner.scan()
        status, _headers, text = scrape(daemon.address)
        found = metric_values(text)
        daemon.scanner.scan()
    assert status == 200
    assert found[("bpm_doctor_scan_success", frozenset())] == 0
    assert found[("bpm_doctor_scan_failures_total", frozenset())] == 3
    assert found[("bpm_doctor_scans_total", frozenset())] == 4
    assert found[("bpm_doctor_findings", frozenset({("id", "hand-run-instance"), ("severity", "critical")}))] == 1
    assert [entry["event"] for entry in logs if entry["event"].startswith("scan_")] == [
        "scan_failed", "scan_failed_again", "scan_failed_again", "scan_recovered"]
    failed = next(entry for entry in logs if entry["event"] == "scan_failed")
    assert failed["log_level"] == "error"
    assert failed["error"].startswith("PermissionError")
    assert daemon.scanner.state.success is True


def test_raising_check_is_counted_and_logged_once(daemon_factory, monkeypatch):
    def check_that_raises(_view):
        raise KeyError("boom")

    monkeypatch.setattr(diagnose_module, "CHECKS", diagnose_module.CHECKS + [check_that_raises])
    with structlog.testing.capture_logs() as logs:
        daemon = daemon_factory(Sequence(hand_run_snapshot()))
        for _ in range(3):
            daemon.scanner.scan()
        status, _headers, text = scrape(daemon.address)
    found = metric_values(text)
    assert status == 200
    assert found[("bpm_doctor_check_failures_total", frozenset())] == 3
    assert found[("bpm_doctor_findings", frozenset({("id", "check-failed"), ("severity", "critical")}))] == 1
    assert found[("bpm_doctor_findings", frozenset({("id", "hand-run-instance"), ("severity", "critical")}))] == 1
    assert found[("bpm_doctor_scan_success", frozenset())] == 0
    failed = [entry for entry in logs if entry.get("id") == "check-failed"]
    assert len(failed) == 1
    assert failed[0]["event"] == "finding_appeared"
    assert failed[0]["log_level"] == "error"
    assert "check_that_raises" in failed[0]["summary"]


def test_findings_logged_once_until_cleared(daemon_factory):
    collect = Sequence(hand_run_snapshot(), hand_run_snapshot(), hand_run_snapshot(), Snapshot(source="test"))
    with structlog.testing.capture_logs() as logs:
        daemon = daemon_factory(collect)
        for _ in range(4):
            daemon.scanner.scan()
    changes = [(entry["event"], entry["id"]) for entry in logs if entry["event"].startswith("finding_")]
    assert sorted(changes) == sorted([
        ("finding_appeared", "hand-run-instance"), ("finding_appeared", "manager-down"),
        ("finding_cleared", "hand-run-instance"), ("finding_cleared", "manager-down"),
    ])
    hand_run = next(entry for entry in logs if entry["event"] == "finding_appeared" and entry["id"] == "hand-run-instance")
    assert hand_run["pid"] == 4242
    assert hand_run["blueprint_id"] == 9777
    assert hand_run["service_id"] == 1
    assert hand_run["launcher"] == "shell"
    assert "evidence" not in hand_run


def test_loop_notifies_ready_status_watchdog_stopping(daemon_factory):
    messages = []
    notifier = Notifier(backend=lambda message: messages.append(message) or True)
    daemon = daemon_factory(Sequence(hand_run_snapshot()), interval=0.3, notifier=notifier, watchdog_seconds=0.1)
    stop = threading.Event()
    daemon.stop_reason = "SIGTERM"
    thread = threading.Thread(target=daemon.run, args=(stop,))
    thread.start()
    time.sleep(1.0)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    ready = [message for message in messages if message.startswith("READY=1\n")]
    assert len(ready) == 1
    assert ready[0] == ("READY=1\nSTATUS=CRITICAL: 0 manager daemon(s), 1 instance(s); "
                        "2 critical, 0 warning, 0 info")
    assert messages.index(ready[0]) <= 1
    assert sum(1 for message in messages if message.startswith("STATUS=")) >= 2
    assert messages.count("WATCHDOG=1") >= 5
    assert messages[-1] == "STOPPING=1\nSTATUS=stopping (SIGTERM)"
    assert daemon.server is None


def test_healthz_starting_ok_stale():
    now = [1000.0]
    scanner = scanner_module.Scanner(config_module.Config(), 10.0, collect=Sequence(hand_run_snapshot()),
                                     monotonic=lambda: now[0])
    code, body = scanner.health()
    assert (code, body["status"]) == (200, "starting")
    scanner.scan()
    now[0] += 29
    code, body = scanner.health()
    assert (code, body["status"], body["check_status"]) == (200, "ok", "CRITICAL")
    assert body["last_scan_success_age_seconds"] == 29
    now[0] += 2
    assert scanner.health()[0] == 503
    assert scanner.health()[1]["status"] == "stale"


def test_healthz_never_scanned_goes_stale():
    now = [0.0]
    scanner = scanner_module.Scanner(config_module.Config(), 5.0, collect=Sequence(OSError("x")),
                                     monotonic=lambda: now[0])
    scanner.scan()
    now[0] = 16
    code, body = scanner.health()
    assert (code, body["status"], body["last_scan_success_age_seconds"]) == (503, "stale", None)


def test_listen_address_in_use(daemon_factory):
    first = daemon_factory(Sequence(Snapshot(source="test")))
    second = serve.Daemon(config_module.Config(), first.address, 30.0, notifier=Notifier(backend=lambda m: True),
                          collect=Sequence(Snapshot(source="test")))
    with pytest.raises(DoctorError, match="cannot listen on 127.0.0.1:[0-9]+: Address already in use"):
        second.start()


def test_arguments():
    parser = argparse.ArgumentParser(exit_on_error=False)
    serve.add_arguments(parser)
    args = parser.parse_args(["--listen", "[::1]:9800", "--interval", "7.5"])
    assert (args.listen, args.interval) == ("[::1]:9800", 7.5)
    assert parser.parse_args([]).listen is None
    with pytest.raises(argparse.ArgumentError, match="expected 5 to 86400 seconds"):
        parser.parse_args(["--interval", "4"])
    with pytest.raises(argparse.ArgumentError, match="invalid listen address"):
        parser.parse_args(["--listen", "0.0.0.0"])


# --- the daemon as a subprocess -------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout: float, description: str, step: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {description}")


def stop_process(process: subprocess.Popen, timeout: float = 5) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


@pytest.fixture
def notify_socket(tmp_path):
    server = NotifySocket(str(tmp_path))
    yield server
    server.close()


def start_daemon(tmp_path: Path, notify_socket: NotifySocket, port: int, extra_env: dict | None = None,
                 prefix: list[str] | None = None):
    env = {key: value for key, value in os.environ.items() if key not in ("JOURNAL_STREAM", "WATCHDOG_PID")}
    env.update({"NOTIFY_SOCKET": notify_socket.address, "BPM_DOCTOR_DEBUG": "1"})
    env.update(extra_env or {})
    config = tmp_path / "config.toml"
    config.write_text('operator_address = "0x' + "12" * 20 + '"\n')
    stderr = open(tmp_path / "daemon.stderr", "w+")
    process = subprocess.Popen(
        (prefix or []) + [sys.executable, "-m", "bpm_doctor", "--config", str(config), "serve",
         "--listen", f"127.0.0.1:{port}", "--interval", "5"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=str(tmp_path),
    )
    return process, stderr


@pytest.mark.live
def test_daemon_end_to_end(tmp_path, notify_socket):
    port = free_port()
    address = f"127.0.0.1:{port}"
    process, stderr = start_daemon(tmp_path, notify_socket, port, {"WATCHDOG_USEC": "2000000"})
    try:
        ready = notify_socket.wait_for(b"READY=1", timeout=30)
        assert re.match(rb"READY=1\nSTATUS=(OK|WARNING|CRITICAL|UNKNOWN): \d+ manager daemon\(s\)", ready)

        status, headers, text = scrape(address)
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        found = metric_values(text)
        assert found[("bpm_doctor_scans_total", frozenset())] >= 1
        assert ("bpm_doctor_operator_info", frozenset({("operator_address", "0x" + "12" * 20)})) in found
        assert "_created" not in text
        promtool = shutil.which("promtool")
        if promtool:
            checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                                     timeout=30)
            assert checked.returncode == 0, checked.stdout + checked.stderr

        status, headers, body = scrape(address, "/healthz")
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body)["status"] == "ok"

        status, headers, text = scrape(address, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert text.endswith("# EOF\n")

        for request in (b"GET /" + b"x" * 70000 + b" HTTP/1.0\r\n\r\n",
                        b"GET /metrics HTTP/1.0\r\n" + b"X-Big: " + b"y" * 60000 + b"\r\n\r\n",
                        b"\x00\xff\x13garbage\r\n\r\n",
                        b"GET /metrics HTTP/1.0\r\nContent-Length: 100000000\r\n\r\npartial body"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                connection.sendall(request)
                try:
                    connection.recv(65536)
                except ConnectionResetError:
                    pass
            assert scrape(address)[0] == 200

        notify_socket.wait_for(b"WATCHDOG=1", timeout=5)

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert time.monotonic() - started < 2.5
        assert notify_socket.wait_for(b"STOPPING=1", timeout=2).startswith(b"STOPPING=1\nSTATUS=stopping (SIGTERM)")
    finally:
        stop_process(process)
        stderr.seek(0)
        log_text = stderr.read()
        stderr.close()
    events = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    names = [event["event"] for event in events]
    assert "Traceback" not in log_text
    assert names[0] == "serve_started"
    assert events[0]["listen"] == address
    assert events[0]["interval_seconds"] == 5.0
    assert events[0]["watchdog_seconds"] == 1.0
    assert names[-1] == "serve_stopping"
    assert events[-1]["reason"] == "SIGTERM"


@pytest.mark.live
def test_daemon_sigint_and_port_in_use(tmp_path, notify_socket):
    port = free_port()
    process, stderr = start_daemon(tmp_path, notify_socket, port)
    try:
        notify_socket.wait_for(b"READY=1", timeout=30)
        second = subprocess.run(
            [sys.executable, "-m", "bpm_doctor", "serve", "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30, env={**os.environ, "NOTIFY_SOCKET": ""},
        )
        assert second.returncode == 3
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        stop_process(process)
        stderr.close()


# --- Prometheus and Alertmanager on loopback -------------------------------------


class Webhook:
    """A stdlib HTTP server on loopback that records Alertmanager webhook payloads."""

    def __init__(self):
        self.payloads: list[dict] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with owner.lock:
                    owner.payloads.append(payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, status: str, alertname: str) -> list[dict]:
        with self.lock:
            return [alert for payload in self.payloads for alert in payload.get("alerts", [])
                    if alert["status"] == status and alert["labels"].get("alertname") == alertname]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def rules_with_short_for(text: str) -> tuple[str, int]:
    """Return the rules with every `for:` set to 0s, and how many were changed.

    The shipped durations (1 to 60 minutes) would make this test take that
    long; the expressions, labels and annotations stay as shipped.
    """
    return re.subn(r"(?m)^(\s+)for: \S+$", r"\1for: 0s", text)


def dashboard_expressions() -> list[str]:
    """Return every PromQL expression of the shipped Grafana dashboards, with variables set to match all."""
    expressions = []
    for path in sorted((REPOSITORY / "packaging" / "grafana").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expressions.append(target["expr"].replace("$job", ".*").replace("$instance", ".*"))
    return expressions


def child_pid(parent: int, timeout: float = 10) -> int:
    """Return the pid of the only child of `parent`, waiting for it to appear."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    return wait_until(lambda: int(children.read_text().split()[0]) if children.read_text().split() else None,
                      timeout, f"a child of pid {parent}", step=0.05)


def start_instance(tmp_path: Path, namespace_pid: int) -> subprocess.Popen:
    """Start a stand-in hand-run instance with argv `quill-operator run` in the pid namespace of `namespace_pid`.

    GNU sleep rejects "run" as a duration, so the stand-in is a copy of
    /bin/cat named quill-operator that blocks opening a FIFO named "run".
    Returns the nsenter process; the instance is its child.
    """
    directory = tmp_path / "instance"
    directory.mkdir()
    binary = directory / "quill-operator"
    shutil.copy2("/bin/cat", binary)
    os.mkfifo(directory / "run")
    env = {"PATH": "/usr/bin:/bin", "BLUEPRINT_ID": "9777", "SERVICE_ID": "1", "TEST_MODE": "true"}
    nsenter = shutil.which("nsenter") or "nsenter"
    return subprocess.Popen([nsenter, f"--target={namespace_pid}", "--pid", "--", str(binary), "run"],
                            cwd=str(directory), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.live
def test_prometheus_alert_fires_and_resolves(tmp_path, notify_socket):
    """Scrape the daemon with the shipped rules; a hand-run instance fires an alert, stopping it resolves it.

    The daemon and the stand-in instance run in a pid namespace of their own
    (unshare --pid --mount-proc), so hand-run processes of other tests on the
    same machine cannot keep the alert firing.
    """
    prometheus_binary = tools.require("prometheus", "prometheus")
    alertmanager_binary = tools.require("prometheus-alertmanager", "prometheus-alertmanager")
    unshare = tools.require("unshare", "util-linux")
    tools.require("nsenter", "util-linux")
    if os.geteuid() != 0:
        pytest.skip("a pid namespace with its own /proc needs root")
    daemon_port, prometheus_port, alertmanager_port = free_port(), free_port(), free_port()

    rules_text, replaced = rules_with_short_for(RULES.read_text())
    assert replaced == rules_text.count("- alert:")
    (tmp_path / "rules.yml").write_text(rules_text)
    webhook = Webhook()
    (tmp_path / "alertmanager.yml").write_text(f"""
route:
  receiver: hook
  group_by: [alertname, instance]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{webhook.port}/hook
        send_resolved: true
""")
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{tmp_path / 'rules.yml'}]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{alertmanager_port}']
scrape_configs:
  - job_name: bpm-doctor
    static_configs:
      - targets: ['127.0.0.1:{daemon_port}']
""")
    processes: list[subprocess.Popen] = []
    logs = open(tmp_path / "servers.log", "w")
    daemon_stderr = None
    try:
        processes.append(subprocess.Popen(
            [alertmanager_binary, f"--config.file={tmp_path / 'alertmanager.yml'}",
             f"--storage.path={tmp_path / 'alertmanager-data'}",
             f"--web.listen-address=127.0.0.1:{alertmanager_port}", "--cluster.listen-address="],
            stdout=logs, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        processes.append(subprocess.Popen(
            [prometheus_binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=logs, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        namespace, daemon_stderr = start_daemon(tmp_path, notify_socket, daemon_port,
                                                prefix=[unshare, "--pid", "--fork", "--mount-proc", "--kill-child", "--"])
        processes.append(namespace)
        notify_socket.wait_for(b"READY=1", timeout=30)
        daemon_pid = child_pid(namespace.pid)

        nsenter = start_instance(tmp_path, daemon_pid)
        processes.append(nsenter)
        instance_pid = child_pid(nsenter.pid)
        time.sleep(0.2)
        from bpm_doctor.collect import collect_host

        findings, view = diagnose_module.diagnose(collect_host(config_module.Config()), config_module.Config())
        assert instance_pid in view.instances
        assert (view.instances[instance_pid].blueprint_id, view.instances[instance_pid].service_id) == (9777, 1)
        assert any(finding.id == "hand-run-instance" and finding.pid == instance_pid for finding in findings)
        assert any(finding.id == "test-mode" and instance_pid in finding.field_values("pid") for finding in findings)

        firing = wait_until(lambda: webhook.alerts("firing", "BpmDoctorHandRunInstance"), 45,
                            "Alertmanager to deliver BpmDoctorHandRunInstance")
        labels = firing[0]["labels"]
        assert labels["severity"] == "critical"
        assert labels["instance"] == f"127.0.0.1:{daemon_port}"
        assert firing[0]["annotations"]["runbook_url"].endswith("runbook.md#bpmdoctorhandruninstance")
        wait_until(lambda: webhook.alerts("firing", "BpmDoctorTestMode"), 15, "BpmDoctorTestMode to fire")
        query = urllib.parse.quote('bpm_doctor_instances{blueprint_id="9777",service_id="1"}')
        _status, _headers, body = scrape(f"127.0.0.1:{prometheus_port}", f"/api/v1/query?query={query}")
        assert json.loads(body)["data"]["result"], body

        for expression in dashboard_expressions():
            query = urllib.parse.quote(expression)
            status, _headers, body = scrape(f"127.0.0.1:{prometheus_port}", f"/api/v1/query?query={query}")
            assert (status, json.loads(body)["status"]) == (200, "success"), f"{expression}: {body}"

        os.kill(instance_pid, signal.SIGTERM)
        nsenter.wait(timeout=5)
        wait_until(lambda: webhook.alerts("resolved", "BpmDoctorHandRunInstance"), 45,
                   "BpmDoctorHandRunInstance to resolve after the instance stopped")

        os.kill(daemon_pid, signal.SIGTERM)
        assert namespace.wait(timeout=5) == 0
    finally:
        for process in reversed(processes):
            stop_process(process)
        webhook.close()
        logs.close()
        if daemon_stderr is not None:
            daemon_stderr.close()
