"""bpm-doctor against a real systemd: units, cgroups, `systemctl show` and the journal.

Each scenario fixture installs units into the booted systemd, waits until
their processes are up, runs the real `bpm-doctor check --format json` (and
`snapshot`) inside the namespace, removes the units again and returns what
it saw. The tests then assert on those results, one aspect each. Removing
the units before the tests run keeps the scenarios from seeing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bpm_doctor.model import Snapshot
from tests.systemd.host import InstalledUnits, SystemdHost

pytestmark = pytest.mark.systemd

MANAGER_UNIT = "blueprint-manager.service"
DIRECT_UNIT = "quill-runtime.service"
DIRECT_DROPIN = "10-restart.conf"
# A template unit beside the others: systemctl rejects template names in `show`.
TEMPLATE_UNIT = "bpm-ci-sleeper@.service"
TEMPLATE_INSTANCE = "bpm-ci-sleeper@1.service"
BLUEPRINT_ID = 9042
SERVICE_ID = 11
# Any 0x-prefixed 40-digit hex value passes the manager's settings check.
CONTRACTS = {
    "TANGLE_CONTRACT": "0x" + "1" * 40,
    "STAKING_CONTRACT": "0x" + "2" * 40,
    "STATUS_REGISTRY_CONTRACT": "0x" + "3" * 40,
}
# What the manager's crash-loop summary contains when the journal shows clap's
# usage error (bpm_doctor.journal.CRASH_CAUSES), as opposed to the fallback
# that reads only the exit status.
USAGE_ERROR_CAUSE = "cargo-tangle rejects its flags (usage error, exit status 2)"


def write_settings(directory: Path, host: SystemdHost) -> Path:
    """Write the manager's settings file: coordinates, contracts and the stand-in's inputs."""
    lines = [f"BLUEPRINT_ID={BLUEPRINT_ID}"]
    lines += [f"{name}={value}" for name, value in CONTRACTS.items()]
    lines.append(f"STANDIN_SERVICES={BLUEPRINT_ID}/{SERVICE_ID}")
    lines.append(f"STANDIN_INSTANCE_BINARY={host.binaries.instance}")
    path = directory / "settings.env"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def manager_unit(host: SystemdHost, directory: Path, extra_flags: str = "", crash_loop: bool = False) -> str:
    """Return a manager unit as an operator writes it, running the stand-in cargo-tangle.

    With `crash_loop`, systemd restarts the manager after 100 ms and gives up
    after four starts, so the unit comes to rest in `failed` within a second.
    """
    settings = write_settings(directory, host)
    unit_section = ["[Unit]", "Description=Tangle Blueprint Manager"]
    service_section = [
        "[Service]",
        f"WorkingDirectory={directory}",
        f"Environment=HOME={directory}",
        f"ExecStart={host.binaries.manager} blueprint run --data-dir {directory}/data "
        f"--keystore-path {directory}/keystore --settings-file {settings}{extra_flags}",
    ]
    if crash_loop:
        unit_section += ["StartLimitIntervalSec=60", "StartLimitBurst=4"]
        service_section += ["Restart=always", "RestartSec=100ms"]
    else:
        service_section += ["Restart=on-failure", "RestartSec=5s"]
    install_section = ["[Install]", "WantedBy=multi-user.target"]
    return "\n\n".join("\n".join(section) for section in (unit_section, service_section, install_section)) + "\n"


def direct_run_unit(host: SystemdHost) -> str:
    """Return a unit that starts the instance binary itself, with hard-coded coordinates and test mode."""
    return (
        "[Unit]\n"
        "Description=Quill operator runtime\n"
        "\n"
        "[Service]\n"
        f"ExecStart={host.binaries.instance} run\n"
        "Environment=TEST_MODE=true\n"
        f"Environment=SERVICE_ID={SERVICE_ID}\n"
        f"Environment=BLUEPRINT_ID={BLUEPRINT_ID}\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def start_manager(host: SystemdHost, units: InstalledUnits, directory: Path) -> tuple[int, int]:
    """Install, enable and start the manager unit, and return (manager pid, managed instance pid)."""
    units.install(MANAGER_UNIT, manager_unit(host, directory))
    host.systemctl("enable", "--runtime", "--now", MANAGER_UNIT)
    manager_pid = int(host.show(MANAGER_UNIT, "MainPID")["MainPID"])
    assert manager_pid > 0, host.journal(MANAGER_UNIT)

    def managed_instance():
        for ready in host.ready_instances(MANAGER_UNIT):
            if ready.ppid == manager_pid and ready.bridge == "connected":
                return ready
        return None

    ready = host.wait_for(managed_instance, f"the instance of manager pid {manager_pid} to connect to its bridge")
    assert (ready.blueprint_id, ready.service_id) == (BLUEPRINT_ID, SERVICE_ID)
    return manager_pid, ready.pid


def process_exists(host: SystemdHost, pid: int) -> bool:
    """Return True while a pid of the namespace is alive and not a zombie."""
    try:
        status = host.booted.inside_path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def findings(report: dict, finding_id: str) -> list[dict]:
    return [finding for finding in report["findings"] if finding["id"] == finding_id]


def pids_of(finding: dict) -> list[int]:
    value = finding.get("pid")
    if value is None:
        return []
    return sorted(value) if isinstance(value, list) else [value]


def summaries(report: dict) -> str:
    return "\n".join(f"  {f['severity']} {f['id']} pid={f.get('pid')} unit={f.get('unit')}: {f['summary']}"
                     for f in report["findings"])


@dataclass
class DirectRunScenario:
    report: dict
    snapshot: Snapshot
    manager_pid: int
    managed_pid: int
    direct_pid: int
    directory: Path
    instance_binary: Path


@pytest.fixture(scope="module")
def direct_run(systemd_host: SystemdHost) -> DirectRunScenario:
    """A supervised manager with its instance for 9042/11, plus an enabled direct-run unit for the same service."""
    host = systemd_host
    directory = host.scenario_directory("direct-run")
    with InstalledUnits(host) as units:
        manager_pid, managed_pid = start_manager(host, units, directory)
        units.install(TEMPLATE_UNIT, "[Service]\nExecStart=/bin/sleep infinity\n")
        host.systemctl("start", TEMPLATE_INSTANCE)
        units.track(TEMPLATE_INSTANCE)
        units.install(DIRECT_UNIT, direct_run_unit(host), dropins={DIRECT_DROPIN: "[Service]\nRestart=on-failure\n"})
        host.systemctl("enable", "--runtime", "--now", DIRECT_UNIT)
        direct_pid = int(host.show(DIRECT_UNIT, "MainPID")["MainPID"])
        ready = host.wait_for(
            lambda: [r for r in host.ready_instances(DIRECT_UNIT) if r.pid == direct_pid],
            f"{DIRECT_UNIT} (pid {direct_pid}) to report ready",
        )
        assert ready[0].bridge == "skipped", "TEST_MODE=true should make the instance skip the bridge"
        report = host.check_report()
        snapshot = host.take_snapshot(directory)
    return DirectRunScenario(report, snapshot, manager_pid, managed_pid, direct_pid, directory,
                             host.binaries.instance)


def test_direct_run_instance_is_hand_run(direct_run):
    found = [f for f in findings(direct_run.report, "hand-run-instance") if pids_of(f) == [direct_run.direct_pid]]
    assert len(found) == 1, summaries(direct_run.report)
    finding = found[0]
    assert finding["severity"] == "critical"
    assert finding["launcher"] == "systemd-unit"
    assert finding["unit"] == DIRECT_UNIT
    assert finding["blueprint_id"] == BLUEPRINT_ID
    assert finding["service_id"] == SERVICE_ID


def test_direct_run_unit_is_reported(direct_run):
    found = [f for f in findings(direct_run.report, "direct-run-unit") if f.get("unit") == DIRECT_UNIT]
    assert len(found) == 1, summaries(direct_run.report)
    finding = found[0]
    assert finding["severity"] == "critical"
    assert finding["pid"] == direct_run.direct_pid
    assert finding["path"] == f"/run/systemd/system/{DIRECT_UNIT}"


def test_direct_run_test_mode_is_reported(direct_run):
    found = [f for f in findings(direct_run.report, "test-mode") if pids_of(f) == [direct_run.direct_pid]]
    assert len(found) == 1, summaries(direct_run.report)
    assert found[0]["severity"] == "critical"
    assert not [f for f in findings(direct_run.report, "test-mode") if direct_run.managed_pid in pids_of(f)]


def test_duplicate_service_names_both_pids(direct_run):
    found = [f for f in findings(direct_run.report, "duplicate-service")
             if (f.get("blueprint_id"), f.get("service_id")) == (BLUEPRINT_ID, SERVICE_ID)]
    assert len(found) == 1, summaries(direct_run.report)
    assert found[0]["severity"] == "critical"
    assert pids_of(found[0]) == sorted([direct_run.managed_pid, direct_run.direct_pid])


def test_supervised_manager_raises_nothing(direct_run):
    report = direct_run.report
    assert findings(report, "manager-down") == [], summaries(report)
    assert [f for f in findings(report, "manager-unsupervised") if direct_run.manager_pid in pids_of(f)] == []
    assert findings(report, "multiple-managers") == [], summaries(report)
    assert [f for f in findings(report, "hand-run-instance") if direct_run.managed_pid in pids_of(f)] == []
    assert report["complete"] is True, report["read_errors"]
    assert report["exit_code"] == 2


def test_inventory_shows_managed_instance(direct_run):
    inventory = direct_run.report["inventory"]
    managers = [entry for entry in inventory["manager_daemons"] if entry["pid"] == direct_run.manager_pid]
    assert len(managers) == 1, inventory["manager_daemons"]
    assert managers[0]["unit"] == MANAGER_UNIT
    assert managers[0]["settings_file"] == str(direct_run.directory / "settings.env")
    assert managers[0]["data_dir"] == str(direct_run.directory / "data")

    by_pid = {entry["pid"]: entry for entry in inventory["instances"]}
    managed = by_pid[direct_run.managed_pid]
    assert managed["managed"] is True
    assert managed["manager_pid"] == direct_run.manager_pid
    assert managed["launcher"] == "manager"
    assert (managed["blueprint_id"], managed["service_id"]) == (BLUEPRINT_ID, SERVICE_ID)
    direct = by_pid[direct_run.direct_pid]
    assert direct["managed"] is False
    assert direct["launcher"] == "systemd-unit"
    assert direct["launcher_unit"] == DIRECT_UNIT

    kinds = {entry["name"]: entry["kind"] for entry in inventory["units"]}
    assert kinds[MANAGER_UNIT] == "manager"
    assert kinds[DIRECT_UNIT] == "direct-run"


def test_collector_reads_systemctl_show(direct_run):
    """The unit state comes from systemd 252's `systemctl show` output, not from the offline guess."""
    units = direct_run.snapshot.units
    direct = units[DIRECT_UNIT]
    assert direct.load_state == "loaded"
    assert direct.active_state == "active"
    assert direct.sub_state == "running"
    assert direct.unit_file_state == "enabled-runtime"
    assert direct.enabled
    assert direct.main_pid == direct_run.direct_pid
    assert direct.restarts == 0
    assert direct.kill_mode == "control-group"
    assert direct.fragment == f"/run/systemd/system/{DIRECT_UNIT}"
    assert direct.dropins == [f"/run/systemd/system/{DIRECT_UNIT}.d/{DIRECT_DROPIN}"]
    assert direct.exec_start == f"{direct_run.instance_binary} run"
    assert f"/run/systemd/system/{DIRECT_UNIT}.d/{DIRECT_DROPIN}" in direct_run.snapshot.files

    manager = units[MANAGER_UNIT]
    assert manager.main_pid == direct_run.manager_pid
    assert manager.unit_file_state == "enabled-runtime"
    assert manager.active_state == "active"

    template_instance = units[TEMPLATE_INSTANCE]
    assert template_instance.active_state == "active"
    assert template_instance.fragment == f"/run/systemd/system/{TEMPLATE_UNIT}"


def test_collector_reads_unit_cgroups(direct_run):
    processes = direct_run.snapshot.processes
    assert processes[direct_run.direct_pid].cgroup == f"/system.slice/{DIRECT_UNIT}"
    assert processes[direct_run.manager_pid].cgroup == f"/system.slice/{MANAGER_UNIT}"
    assert processes[direct_run.managed_pid].cgroup == f"/system.slice/{MANAGER_UNIT}"
    assert processes[direct_run.managed_pid].ppid == direct_run.manager_pid
    assert direct_run.snapshot.read_errors == {}


@dataclass
class ManagerDownScenario:
    report: dict
    instance_pid: int


@pytest.fixture(scope="module")
def manager_down(systemd_host: SystemdHost) -> ManagerDownScenario:
    """The manager unit stopped; KillMode=control-group took its instance with it."""
    host = systemd_host
    directory = host.scenario_directory("manager-down")
    with InstalledUnits(host) as units:
        _manager_pid, instance_pid = start_manager(host, units, directory)
        host.systemctl("stop", MANAGER_UNIT)
        host.wait_for(lambda: not process_exists(host, instance_pid),
                      f"instance pid {instance_pid} to die with {MANAGER_UNIT}")
        report = host.check_report()
    return ManagerDownScenario(report, instance_pid)


def test_stopped_manager_unit_is_down(manager_down):
    found = findings(manager_down.report, "manager-down")
    assert len(found) == 1, summaries(manager_down.report)
    assert found[0]["severity"] == "critical"
    assert found[0]["unit"] == MANAGER_UNIT
    assert manager_down.report["inventory"]["instances"] == []
    sites = manager_down.report["inventory"]["manager_daemons"]
    assert [(site["unit"], site["running"]) for site in sites] == [(MANAGER_UNIT, False)]


@dataclass
class CrashLoopScenario:
    report: dict
    journal: list[str]
    restarts: int


@pytest.fixture(scope="module")
def crash_loop(systemd_host: SystemdHost) -> CrashLoopScenario:
    """A manager unit passing `-t`, which `blueprint run` rejects, restarting until systemd gives up."""
    host = systemd_host
    directory = host.scenario_directory("crash-loop")
    with InstalledUnits(host) as units:
        units.install(MANAGER_UNIT, manager_unit(host, directory, extra_flags=" -t", crash_loop=True))
        host.systemctl("enable", "--runtime", MANAGER_UNIT)
        host.systemctl("start", MANAGER_UNIT, check=False)

        def failed_state():
            state = host.show(MANAGER_UNIT, "ActiveState", "SubState", "NRestarts", "ExecMainStatus")
            return state if state["ActiveState"] == "failed" else None

        # The check runs once the unit rests in `failed`, so it does not race a restart.
        state = host.wait_for(failed_state, f"{MANAGER_UNIT} to hit its start limit")
        assert state["ExecMainStatus"] == "2", state
        report = host.check_report()
        journal = host.journal(MANAGER_UNIT)
    return CrashLoopScenario(report, journal, int(state["NRestarts"]))


def test_stand_in_prints_clap_usage_error(crash_loop):
    assert "error: unexpected argument '-t' found" in crash_loop.journal
    assert crash_loop.restarts >= 3


def test_crash_loop_names_usage_error(crash_loop):
    found = findings(crash_loop.report, "manager-crashloop")
    assert len(found) == 1, summaries(crash_loop.report)
    finding = found[0]
    assert finding["severity"] == "critical"
    assert finding["unit"] == MANAGER_UNIT
    assert USAGE_ERROR_CAUSE in finding["summary"]
    assert "journal: error: unexpected argument '-t' found" in finding["evidence"]


def test_crash_loop_flags_unknown_flag(crash_loop):
    found = findings(crash_loop.report, "manager-unknown-flag")
    assert len(found) == 1, summaries(crash_loop.report)
    assert found[0]["severity"] == "critical"
    assert found[0]["unit"] == MANAGER_UNIT
    assert "-t" in found[0]["summary"]
