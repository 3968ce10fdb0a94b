"""Secrets planted everywhere the doctor reads on a live host never reach any output.

The fixture starts a stand-in manager (secrets in its environment, argv
URLs and settings file, which its instances inherit) and a hand-run
instance (secrets in argv and environment), and writes a unit root with a
manager unit, a drop-in, an EnvironmentFile= and a direct-run unit full of
secrets. Each bpm-doctor command runs in a private mount namespace where
that unit root is bind-mounted over /etc/systemd/system, so the real
command line reads it as it would read a host's units.

Outputs checked: check in text, JSON and Nagios format with -vv (stdout and
stderr), --output, --textfile, snapshot -o and a check of that snapshot.
Also /metrics and /healthz of a running `serve -vv` and its log, and `lint`
in text, JSON and SARIF over a repository that contains the same files.
systemd's global environment is covered in test_secrets_systemd.py.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live.conftest import (  # noqa: F401 - standin_binaries is a fixture used by name
    BLUEPRINT_BASE,
    LiveProcesses,
    base_environment,
    standin_binaries,
    start_manager,
    wait_for_hand_run,
)
from tests.support import tools

pytestmark = pytest.mark.live

BLUEPRINT = BLUEPRINT_BASE + 73
UNIT_DIRECTORY = "/etc/systemd/system"
_RANDOM = random.Random(7_301)
SECRETS = {
    "manager environment": "S3CRmgrEnvQuartz4417",
    "manager environment URL": "S3CRmgrEnvUrlHeron",
    "manager argv URL path": "S3CRargvUrlPathOtter8830",
    "settings file": "S3CRsettingsAmber2093",
    "settings file URL": "S3CRsettingsUrlLynx",
    "hand-run argv": "S3CRhandArgvCobalt5561",
    "hand-run argv inline": "S3CRhandInlineFinch",
    "hand-run argv hex": "0x" + "".join(_RANDOM.choice("0123456789abcdef") for _ in range(64)),
    "hand-run environment": "S3CRhandEnvSlate",
    "waiting shell script": "S3CRshellScriptIvory",
    "waiting shell assignment": "S3CRshellAssignLinen",
    "unit Environment": "S3CRunitEnvGarnet",
    "unit ExecStart": "S3CRunitExecJade",
    "unit ExecStart URL": "S3CRunitUrlOnyx",
    "drop-in": "S3CRdropinBeryl",
    "EnvironmentFile": "S3CRenvFileTopaz",
    "EnvironmentFile quoted": "S3CRenvFileQuotedPearl",
    "unit comment token": "S3CR" + "".join(_RANDOM.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
                                           for _ in range(44)),
}


@dataclass
class Planted:
    outputs: dict[str, str]
    planted: dict[str, bool]
    hand_run: int
    manager: int


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_unit_root(root: Path, work: Path, binaries) -> Path:
    """Write the manager unit, its drop-in and EnvironmentFile=, and a direct-run unit, all holding secrets."""
    units = root / "units"
    (units / "blueprint-manager.service.d").mkdir(parents=True)
    env_file = work / "unit.env"
    env_file.write_text(f"PRIVATE_KEY={SECRETS['EnvironmentFile']}\n"
                        f"export GAS_KEY=\"{SECRETS['EnvironmentFile quoted']}\" # rotate monthly\n")
    env_file.chmod(0o640)
    (units / "blueprint-manager.service").write_text(
        "[Unit]\nDescription=Tangle Blueprint Manager\n"
        f"# backup signer {SECRETS['unit comment token']}\n\n"
        f"[Service]\nWorkingDirectory={work}\nEnvironmentFile={env_file}\n"
        f"Environment=SIGNER_PRIVATE_KEY={SECRETS['unit Environment']} RUST_LOG=info\n"
        f"ExecStart={binaries.manager} blueprint run --settings-file {work}/settings.env "
        f"--http-rpc-url https://operator:{SECRETS['unit ExecStart URL']}@rpc.example.invalid/v3/x\n"
        "Restart=always\n\n[Install]\nWantedBy=multi-user.target\n")
    (units / "blueprint-manager.service.d" / "10-token.conf").write_text(
        f"[Service]\nEnvironment=\"API_TOKEN={SECRETS['drop-in']}\"\n")
    (units / "quill-direct.service").write_text(
        f"[Service]\nEnvironment=BLUEPRINT_ID={BLUEPRINT} SERVICE_ID=99\n"
        f"ExecStart={binaries.instance} run --private-key {SECRETS['unit ExecStart']}\n")
    return units


def in_unit_namespace(units: Path, argv: list[str]) -> list[str]:
    """Return argv run in a private mount namespace with `units` bind-mounted over /etc/systemd/system."""
    unshare = tools.require("unshare", "util-linux")
    script = 'mount --bind "$0" ' + UNIT_DIRECTORY + ' && exec "$@"'
    return [unshare, "--mount", "--propagation", "private", "--", "sh", "-c", script, str(units), *argv]


def doctor_argv(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "bpm_doctor", "-vv", "--config", os.devnull, *arguments]


def run(units: Path, *arguments: str, namespace: bool = True) -> subprocess.CompletedProcess:
    argv = doctor_argv(*arguments)
    return subprocess.run(in_unit_namespace(units, argv) if namespace else argv, capture_output=True, text=True,
                          timeout=120, errors="replace")


def scrape(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.read().decode(errors="replace")


def serve_outputs(units: Path, work: Path) -> dict[str, str]:
    port = free_port()
    stderr_path = work / "serve.stderr"
    with open(stderr_path, "w") as stderr:
        environment = {key: value for key, value in os.environ.items() if key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        daemon = subprocess.Popen(in_unit_namespace(units, doctor_argv("serve", "--listen", f"127.0.0.1:{port}",
                                                                       "--interval", "5")),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=environment)
    try:
        deadline = time.monotonic() + 60
        metrics = healthz = ""
        while time.monotonic() < deadline:
            try:
                healthz = scrape(port, "/healthz")
                metrics = scrape(port, "/metrics")
                if '"check_status": "CRITICAL"' in healthz:
                    break
            except OSError:
                pass
            time.sleep(0.25)
        assert '"check_status": "CRITICAL"' in healthz, f"serve did not finish a scan: {healthz!r}"
        openmetrics = ""
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(request, timeout=5) as response:
            openmetrics = response.read().decode(errors="replace")
    finally:
        # The namespace's sh execs python, so the Popen pid is the daemon itself.
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
    return {"serve /metrics": metrics, "serve /metrics openmetrics": openmetrics, "serve /healthz": healthz,
            "serve log": stderr_path.read_text(errors="replace")}


def lint_outputs(root: Path, units: Path, work: Path, binaries) -> dict[str, str]:
    repository = root / "deploy-repo"
    (repository / "systemd").mkdir(parents=True)
    for unit in units.rglob("*"):
        if unit.is_file():
            target = repository / "systemd" / unit.relative_to(units)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(unit.read_text())
    (repository / "settings.env").write_text((work / "settings.env").read_text())
    (repository / "unit.env").write_text((work / "unit.env").read_text())
    (repository / "start.sh").write_text(
        "#!/bin/sh\n"
        f"SIGNER_KEY={SECRETS['hand-run environment']} BLUEPRINT_ID={BLUEPRINT} SERVICE_ID=1 "
        f"{binaries.instance} run --password {SECRETS['hand-run argv']} &\n")
    outputs = {}
    for output_format in ("text", "json", "sarif"):
        completed = run(units, "lint", "--format", output_format, str(repository), namespace=False)
        assert completed.returncode in (0, 1), completed.stderr
        outputs[f"lint {output_format}"] = completed.stdout
        outputs[f"lint {output_format} log"] = completed.stderr
    return outputs


@pytest.fixture(scope="module")
def planted(standin_binaries, tmp_path_factory) -> Planted:
    if not os.path.isdir(UNIT_DIRECTORY) or os.geteuid() != 0:
        pytest.skip(f"needs root and an existing {UNIT_DIRECTORY} to bind-mount the test unit root over")
    lint_help = subprocess.run(doctor_argv("lint", "--help"), capture_output=True, text=True, timeout=60)
    root = tmp_path_factory.mktemp("secrets")
    work, home, log = root / "work", root / "home", root / "processes.log"
    home.mkdir()
    with LiveProcesses(standin_binaries, log) as live:
        manager = start_manager(
            live, work, home, [(BLUEPRINT, 11)],
            extra_env={"OPERATOR_PRIVATE_KEY": SECRETS["manager environment"],
                       "KEYSTORE_URI": f"file://op:{SECRETS['manager environment URL']}@/srv/keystore"},
            extra_settings=(f"KEYSTORE_PASSWORD={SECRETS['settings file']}",
                            f"BACKUP_RPC_URL=https://user:{SECRETS['settings file URL']}@rpc.example.invalid/"),
            http_rpc_url=f"http://127.0.0.1:8545/v3/{SECRETS['manager argv URL path']}",
        )
        units = write_unit_root(root, work, standin_binaries)
        command = (f"TEST_MODE=true BLUEPRINT_ID={BLUEPRINT} SERVICE_ID=11 "
                   f"SIGNER_KEY={SECRETS['hand-run environment']} {shlex.quote(str(standin_binaries.instance))} run "
                   f"--password {SECRETS['hand-run argv']} --private-key={SECRETS['hand-run argv inline']} "
                   f"{SECRETS['hand-run argv hex']} &")
        live.reap(live.spawn(["bash", "-c", command], base_environment(home), work))
        hand_run = wait_for_hand_run(live, BLUEPRINT, 11, not_parent=manager.pid)
        # A shell that waits for its instance keeps the whole script, secrets included, in its argv.
        script = (f"cd {shlex.quote(str(work))} && TEST_MODE=true BLUEPRINT_ID={BLUEPRINT} SERVICE_ID=12 "
                  f"SIGNER_KEY={SECRETS['waiting shell assignment']} {shlex.quote(str(standin_binaries.instance))} "
                  f"run --password {SECRETS['waiting shell script']} & wait")
        shell = live.spawn(["bash", "-c", script], base_environment(home), work)
        wait_for_hand_run(live, BLUEPRINT, 12)

        host_text = b"".join(Path(path).read_bytes() for path in (
            f"/proc/{manager.pid}/environ", f"/proc/{manager.pid}/cmdline", f"/proc/{hand_run}/environ",
            f"/proc/{hand_run}/cmdline", f"/proc/{shell.pid}/cmdline", str(work / "settings.env"), str(work / "unit.env"),
            *(str(path) for path in units.rglob("*") if path.is_file())))
        planted_on_host = {place: secret.encode() in host_text for place, secret in SECRETS.items()}

        outputs: dict[str, str] = {}
        for output_format in ("text", "json", "nagios"):
            completed = run(units, "check", "--format", output_format)
            assert completed.returncode == 2, completed.stderr
            outputs[f"check {output_format}"] = completed.stdout
            outputs[f"check {output_format} log"] = completed.stderr
        report_path, textfile = root / "report.json", root / "metrics.prom"
        completed = run(units, "check", "--format", "json", "--output", str(report_path), "--textfile", str(textfile))
        outputs["check --output"] = report_path.read_text()
        outputs["check --textfile"] = textfile.read_text()
        snapshot_path = root / "host.hostsnap"
        completed = run(units, "snapshot", "-o", str(snapshot_path))
        assert completed.returncode == 0, completed.stderr
        outputs["snapshot file"] = snapshot_path.read_text(errors="replace")
        outputs["snapshot log"] = completed.stderr
        completed = run(units, "check", "--format", "json", "--snapshot", str(snapshot_path), namespace=False)
        outputs["check of snapshot"] = completed.stdout + completed.stderr
        outputs.update(serve_outputs(units, work))
        if lint_help.returncode == 0:
            outputs.update(lint_outputs(root, units, work, standin_binaries))
        return Planted(outputs, planted_on_host, hand_run, manager.pid)


@pytest.mark.parametrize("place", sorted(SECRETS))
def test_secret_was_planted_on_host(planted, place):
    assert planted.planted[place], f"{place}: the secret never reached /proc or the files; the test plants nothing"


def test_every_output_was_produced(planted):
    expected = {"check text", "check json", "check nagios", "check --output", "check --textfile", "snapshot file",
                "check of snapshot", "serve /metrics", "serve /healthz", "serve log"}
    assert expected <= set(planted.outputs)
    if "lint sarif" not in planted.outputs:
        pytest.skip("`bpm-doctor lint --help` failed, so lint outputs were not checked")


def test_doctor_read_the_planted_places(planted):
    snapshot = planted.outputs["snapshot file"]
    for path in ("blueprint-manager.service", "blueprint-manager.service.d/10-token.conf", "quill-direct.service"):
        assert f"#=== file {UNIT_DIRECTORY}/{path}" in snapshot
    assert "settings.env" in snapshot
    assert "unit.env" in snapshot
    report = json.loads(planted.outputs["check json"])
    hand_run = [finding for finding in report["findings"] if finding["id"] == "hand-run-instance"
                and finding.get("pid") == planted.hand_run]
    assert hand_run
    assert "--password <redacted>" in " ".join(hand_run[0]["evidence"])


@pytest.mark.parametrize("place", sorted(SECRETS))
def test_secret_absent_from_every_output(planted, place):
    leaked = [name for name, output in planted.outputs.items() if SECRETS[place] in output]
    assert leaked == [], f"{place} secret found in: {', '.join(leaked)}"
