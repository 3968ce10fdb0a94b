"""The alert pipeline under a real systemd 252: bpm-doctor.service, Prometheus, Alertmanager and a webhook.

bpm-doctor runs as a Type=notify unit in the booted systemd. Prometheus,
Alertmanager, a stdlib webhook and a hand-run instance run beside it as
transient units (systemd-run), all on 127.0.0.1 of the namespace's own
network namespace. Prometheus loads the shipped rules with every `for:` set
to 0s. The instance fires BpmDoctorHandRunInstance at the webhook, and
stopping it resolves the alert. Blueprint id 9047 belongs to this module.

The webhook appends each Alertmanager payload as one JSON line to a file in
the state directory, which the test reads from the host.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.support import tools
from tests.systemd.host import InstalledUnits, SystemdHost
from tests.test_serve import RULES, rules_with_short_for

pytestmark = pytest.mark.systemd

DOCTOR_UNIT = "bpm-doctor.service"
PROMETHEUS_UNIT = "bpm-ci-prometheus.service"
ALERTMANAGER_UNIT = "bpm-ci-alertmanager.service"
WEBHOOK_UNIT = "bpm-ci-webhook.service"
INSTANCE_UNIT = "bpm-ci-quill-operator.service"
ALERT_NAME = "BpmDoctorHandRunInstance"
BLUEPRINT_ID = 9047
SERVICE_ID = 1
# The namespace has a network namespace of its own, so fixed ports cannot
# collide with listeners on the host.
DOCTOR_PORT = 19737
PROMETHEUS_PORT = 19090
ALERTMANAGER_PORT = 19093
WEBHOOK_PORT = 19094
# Prometheus scrapes and evaluates every second, but needs a few seconds
# after start before its first sample. The daemon scans every 5 s.
FIRING_TIMEOUT_SECONDS = 30
RESOLVED_TIMEOUT_SECONDS = 30
JOURNAL_LINES = 30

WEBHOOK_SCRIPT = """\
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, output = int(sys.argv[1]), sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        payload = json.loads(self.rfile.read(length) or b"{}")
        line = (json.dumps(payload) + "\\n").encode()
        descriptor = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def alert_binaries() -> tuple[str, str]:
    """Return the Prometheus and Alertmanager paths, or skip (fail under CI=true) when one is missing."""
    prometheus = tools.require("prometheus", "prometheus")
    alertmanager = tools.require("prometheus-alertmanager", "prometheus-alertmanager")
    return prometheus, alertmanager


def doctor_unit(host: SystemdHost) -> str:
    """Return bpm-doctor.service for the namespace, based on packaging/systemd/bpm-doctor.service.

    User=bpm-doctor and its capabilities are left out, because that user
    does not exist on the test host, so the daemon runs as root here.
    NOTE: the shipped sandboxing options are left out too, so this test does
    not check that the hardened unit starts.
    """
    return f"""\
[Unit]
Description=bpm-doctor daemon under test

[Service]
Type=notify
NotifyAccess=main
ExecStart={sys.executable} -m bpm_doctor --config {host.doctor_config} serve --listen 127.0.0.1:{DOCTOR_PORT} --interval 5
WatchdogSec=30
Environment=PROMETHEUS_DISABLE_CREATED_SERIES=True
"""


def write_configs(directory: Path) -> None:
    """Write the rules, prometheus.yml, alertmanager.yml and the webhook script into `directory`."""
    rules_text, replaced = rules_with_short_for(RULES.read_text())
    assert replaced == rules_text.count("- alert:"), "not every alert's for: was shortened"
    (directory / "rules.yml").write_text(rules_text)
    (directory / "alertmanager.yml").write_text(f"""\
route:
  receiver: hook
  group_by: [alertname, instance]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{WEBHOOK_PORT}/hook
        send_resolved: true
""")
    (directory / "prometheus.yml").write_text(f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{directory / 'rules.yml'}]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{ALERTMANAGER_PORT}']
scrape_configs:
  - job_name: bpm-doctor
    static_configs:
      - targets: ['127.0.0.1:{DOCTOR_PORT}']
""")
    (directory / "webhook.py").write_text(WEBHOOK_SCRIPT)


def make_instance(directory: Path) -> Path:
    """Create the stand-in hand-run instance: a copy of /bin/cat named quill-operator and a FIFO named run.

    Started as `quill-operator run`, it blocks opening the FIFO until stopped.
    """
    binary = directory / "quill-operator"
    shutil.copy2("/bin/cat", binary)
    os.mkfifo(directory / "run")
    return binary


def start_transient(host: SystemdHost, started: list[str], unit: str, *arguments: str) -> None:
    """Start a transient service with systemd-run and record it for cleanup."""
    started.append(unit)
    host.booted.run(["systemd-run", f"--unit={unit}", "--collect", "--quiet", *arguments])


def stop_transient(host: SystemdHost, units: list[str]) -> list[str]:
    """Stop transient services and return the ones that still run."""
    if units:
        host.systemctl("stop", *units, check=False)
    return [unit for unit in units if host.show(unit, "ActiveState").get("ActiveState") not in ("inactive", "")]


def webhook_alerts(path: Path, status: str) -> list[dict]:
    """Return the alerts named ALERT_NAME with `status` from the payloads the webhook wrote so far."""
    if not path.exists():
        return []
    alerts = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            continue  # The webhook is still writing this line.
        for alert in json.loads(line).get("alerts", []):
            if alert["status"] == status and alert["labels"].get("alertname") == ALERT_NAME:
                alerts.append(alert)
    return alerts


def journals(host: SystemdHost, units: list[str]) -> str:
    """Return the last journal lines of each unit, for failure messages."""
    sections = []
    for unit in units:
        lines = host.journal(unit)[-JOURNAL_LINES:]
        sections.append(f"--- {unit}\n" + "\n".join(lines))
    return "\n".join(sections)


def test_alert_fires_and_resolves(alert_binaries, systemd_host: SystemdHost):
    """Run the whole pipeline in the booted systemd: the hand-run instance fires the alert, stopping it resolves it."""
    prometheus, alertmanager = alert_binaries
    host = systemd_host
    directory = host.scenario_directory("alerts")
    write_configs(directory)
    instance_binary = make_instance(directory)
    payloads = directory / "webhook.jsonl"
    started: list[str] = []

    with InstalledUnits(host) as units:
        try:
            units.install(DOCTOR_UNIT, doctor_unit(host))
            # systemctl start of a Type=notify unit returns once READY=1 arrives, or fails.
            start = host.systemctl("start", DOCTOR_UNIT, check=False)
            assert start.returncode == 0, f"{start.stderr}\n{journals(host, [DOCTOR_UNIT])}"

            state = host.show(DOCTOR_UNIT, "ActiveState", "SubState", "Type", "NotifyAccess", "WatchdogUSec",
                              "StatusText")
            assert state["ActiveState"] == "active", state
            assert state["SubState"] == "running", state
            assert state["Type"] == "notify", state
            assert state["NotifyAccess"] == "main", state
            assert state["WatchdogUSec"] == "30s", state
            assert state["StatusText"], f"no STATUS= received: {state}"

            start_transient(host, started, WEBHOOK_UNIT,
                            sys.executable, str(directory / "webhook.py"), str(WEBHOOK_PORT), str(payloads))
            start_transient(host, started, ALERTMANAGER_UNIT,
                            alertmanager, f"--config.file={directory / 'alertmanager.yml'}",
                            f"--storage.path={directory / 'alertmanager-data'}",
                            f"--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}", "--cluster.listen-address=")
            start_transient(host, started, PROMETHEUS_UNIT,
                            prometheus, f"--config.file={directory / 'prometheus.yml'}",
                            f"--storage.tsdb.path={directory / 'tsdb'}",
                            f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}")
            start_transient(host, started, INSTANCE_UNIT,
                            f"--working-directory={directory}", f"--setenv=BLUEPRINT_ID={BLUEPRINT_ID}",
                            f"--setenv=SERVICE_ID={SERVICE_ID}", "--setenv=TEST_MODE=true",
                            str(instance_binary), "run")

            try:
                firing = host.wait_for(lambda: webhook_alerts(payloads, "firing"),
                                       f"{ALERT_NAME} to reach the webhook as firing", FIRING_TIMEOUT_SECONDS)
            except TimeoutError as error:
                raise AssertionError(f"{error}\n{journals(host, [DOCTOR_UNIT, *started])}") from None
            labels = firing[0]["labels"]
            assert labels["instance"] == f"127.0.0.1:{DOCTOR_PORT}", labels
            assert labels["job"] == "bpm-doctor", labels
            assert labels["severity"] == "critical", labels

            host.systemctl("stop", INSTANCE_UNIT)
            try:
                host.wait_for(lambda: webhook_alerts(payloads, "resolved"),
                              f"{ALERT_NAME} to reach the webhook as resolved", RESOLVED_TIMEOUT_SECONDS)
            except TimeoutError as error:
                raise AssertionError(f"{error}\n{journals(host, [DOCTOR_UNIT, *started])}") from None

            assert host.show(DOCTOR_UNIT, "ActiveState")["ActiveState"] == "active", "bpm-doctor stopped during the test"
        finally:
            still_running = stop_transient(host, list(reversed(started)))
            assert not still_running, f"transient units still run after stop: {still_running}"
