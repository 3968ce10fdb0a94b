"""Stale units under a real systemd 252: leftovers, missing executables, template helpers, KillMode, drop-ins.

Each scenario fixture installs units into the booted systemd and brings
them into a state an operator box shows: run once and stopped, failed with
203/EXEC, or disabled after the service ended. It then runs the real
`bpm-doctor check --format json` inside the namespace, removes the units
and returns what it saw. Blueprint ids 9043 to 9046 belong to this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.systemd.host import UNIT_DIRECTORY, InstalledUnits, SystemdHost
from tests.systemd.stale_helpers import (
    findings,
    manager_unit,
    start_manager,
    summaries,
    wait_for_properties,
    write_settings,
)

pytestmark = pytest.mark.systemd

MANAGER_UNIT = "blueprint-manager.service"
# Blueprints of the manager units in the exec-missing, KillMode and drop-in scenarios.
EXEC_MISSING_BLUEPRINT = 9044
MANAGER_BLUEPRINT = 9046


# A direct-run unit that was run once and then stopped, never enabled.

LEFTOVER_UNIT = "quill-runtime-old.service"
LEFTOVER_BLUEPRINT = 9043


@dataclass
class LeftoverScenario:
    report: dict
    properties: dict[str, str]


@pytest.fixture(scope="module")
def leftover(systemd_host: SystemdHost) -> LeftoverScenario:
    host = systemd_host
    text = (
        "[Unit]\n"
        "Description=Quill operator runtime (TEST/DEV ONLY)\n"
        "\n"
        "[Service]\n"
        f"ExecStart={host.binaries.instance} run\n"
        "Environment=SERVICE_ID=11\n"
        f"Environment=BLUEPRINT_ID={LEFTOVER_BLUEPRINT}\n"
        "Environment=TEST_MODE=true\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    with InstalledUnits(host) as units:
        units.install(LEFTOVER_UNIT, text)
        host.systemctl("start", LEFTOVER_UNIT)
        main_pid = int(host.show(LEFTOVER_UNIT, "MainPID")["MainPID"])
        host.wait_for(lambda: [r for r in host.ready_instances(LEFTOVER_UNIT) if r.pid == main_pid],
                      f"{LEFTOVER_UNIT} (pid {main_pid}) to report ready")
        host.systemctl("stop", LEFTOVER_UNIT)
        properties = wait_for_properties(host, LEFTOVER_UNIT, UnitFileState="disabled", ActiveState="inactive")
        report = host.check_report()
    return LeftoverScenario(report, properties)


def test_leftover_direct_run_unit_is_stale(leftover):
    found = findings(leftover.report, "stale-unit", LEFTOVER_UNIT)
    assert len(found) == 1, summaries(leftover.report)
    assert found[0]["severity"] == "warning"
    assert found[0]["path"] == f"{UNIT_DIRECTORY}/{LEFTOVER_UNIT}"
    assert "launches an instance directly" in found[0]["summary"]


def test_leftover_is_not_direct_run_unit(leftover):
    assert findings(leftover.report, "direct-run-unit", LEFTOVER_UNIT) == [], summaries(leftover.report)


# Units whose ExecStart executable is gone: a renamed product's unit and a
# manager unit pointing at a removed cargo-tangle. Both failed with 203/EXEC.

RENAMED_UNIT = "surplus-operator.service"
RENAMED_EXECUTABLE = "/opt/surplus/surplus-operator"
GONE_CARGO_TANGLE = "/opt/tangle/bin/cargo-tangle"


@dataclass
class ExecMissingScenario:
    report: dict
    renamed: dict[str, str]
    manager: dict[str, str]


@pytest.fixture(scope="module")
def exec_missing(systemd_host: SystemdHost) -> ExecMissingScenario:
    host = systemd_host
    directory = host.scenario_directory("exec-missing")
    settings = write_settings(directory, host, EXEC_MISSING_BLUEPRINT, 11)
    renamed_text = (
        "[Unit]\n"
        "Description=Surplus operator\n"
        "\n"
        "[Service]\n"
        f"ExecStart={RENAMED_EXECUTABLE} --serve\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    with InstalledUnits(host) as units:
        units.install(RENAMED_UNIT, renamed_text)
        units.install(MANAGER_UNIT, manager_unit(directory, settings, GONE_CARGO_TANGLE))
        # The start jobs fail at exec, so systemctl may report an error here.
        host.systemctl("enable", "--runtime", "--now", RENAMED_UNIT, MANAGER_UNIT, check=False)
        renamed = wait_for_properties(host, RENAMED_UNIT, ActiveState="failed", ExecMainStatus="203")
        manager = wait_for_properties(host, MANAGER_UNIT, ExecMainStatus="203")
        report = host.check_report()
    return ExecMissingScenario(report, renamed, manager)


def test_renamed_unit_exec_missing(exec_missing):
    found = findings(exec_missing.report, "exec-missing", RENAMED_UNIT)
    assert len(found) == 1, summaries(exec_missing.report)
    assert found[0]["severity"] == "warning"
    assert found[0]["path"] == RENAMED_EXECUTABLE
    assert "the last start failed with status 203/EXEC" in found[0]["evidence"]


def test_manager_unit_exec_missing_is_critical(exec_missing):
    found = findings(exec_missing.report, "exec-missing", MANAGER_UNIT)
    assert len(found) == 1, summaries(exec_missing.report)
    assert found[0]["severity"] == "critical"
    assert found[0]["path"] == GONE_CARGO_TANGLE


def test_enabled_unit_not_stale(exec_missing):
    assert exec_missing.renamed.get("ActiveState") == "failed"
    assert findings(exec_missing.report, "stale-unit", RENAMED_UNIT) == [], summaries(exec_missing.report)


# Template helpers named for service ids. A running manager serves
# 9045/11, so service 11 is active and services 9 and 12 are not.

HELPER_BLUEPRINT = 9045
ACTIVE_SERVICE = 11
KEEPER_SERVICE = "keeper@.service"
KEEPER_TIMER = "keeper@.timer"
WARDEN_SERVICE = "warden@.service"


@dataclass
class HelperScenario:
    report: dict
    states: dict[str, dict[str, str]]
    listed_units: list[str]


@pytest.fixture(scope="module")
def helpers(systemd_host: SystemdHost) -> HelperScenario:
    """Keepers for services 9, 11 and 12: the timers of 9 and 11 disabled and stopped, the timer of 12 still on.

    Each keeper run failed, so its service instance stays loaded in `failed`.
    `warden@.service` has an [Install] section, unlike `keeper@.service`,
    and its instance for service 9 failed without ever being enabled.
    """
    host = systemd_host
    directory = host.scenario_directory("helpers")
    settings = write_settings(directory, host, HELPER_BLUEPRINT, ACTIVE_SERVICE)
    keeper = (
        "[Unit]\n"
        "Description=keeper for service %i\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "ExecStart=/bin/sh -c 'echo submitting tick for service %i; exit 1'\n"
    )
    timer = "[Timer]\nOnActiveSec=1h\n\n[Install]\nWantedBy=timers.target\n"
    warden = (
        "[Service]\n"
        "Type=oneshot\n"
        "ExecStart=/bin/sh -c 'exit 1'\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    with InstalledUnits(host) as units:
        start_manager(host, units, MANAGER_UNIT, manager_unit(directory, settings, str(host.binaries.manager)))
        units.install(KEEPER_SERVICE, keeper)
        units.install(KEEPER_TIMER, timer)
        units.install(WARDEN_SERVICE, warden)
        for service in (9, ACTIVE_SERVICE, 12):
            units.track(f"keeper@{service}.timer")
            units.track(f"keeper@{service}.service")
            host.systemctl("enable", "--runtime", "--now", f"keeper@{service}.timer")
            host.systemctl("start", f"keeper@{service}.service", check=False)
        for service in (9, ACTIVE_SERVICE):
            host.systemctl("disable", "--runtime", "--now", f"keeper@{service}.timer")
        units.track("warden@9.service")
        host.systemctl("start", "warden@9.service", check=False)

        names = ["keeper@9.service", "keeper@12.service", "keeper@12.timer", "warden@9.service"]
        for name in names:
            wait_for_properties(host, name, LoadState="loaded")
        listed = host.systemctl("list-units", "--all", "--plain", "--no-legend", "--type=service,timer").stdout
        listed_units = [line.split()[0] for line in listed.splitlines() if line.split()]
        report = host.check_report()
        states = {name: host.show(name, "UnitFileState", "ActiveState") for name in names}
    return HelperScenario(report, states, listed_units)


def test_systemd_reports_instance_states(helpers):
    """What systemd 252 reports, which the stale-unit rule depends on."""
    assert helpers.states["keeper@9.service"] == {"UnitFileState": "static", "ActiveState": "failed"}
    assert helpers.states["warden@9.service"] == {"UnitFileState": "disabled", "ActiveState": "failed"}
    assert helpers.states["keeper@12.timer"]["UnitFileState"] == "enabled-runtime"


def test_disabled_timer_instance_unloaded(helpers):
    """systemd unloads a disabled, stopped timer instance, so no scan can see it."""
    assert "keeper@9.timer" not in helpers.listed_units
    assert "keeper@12.timer" in helpers.listed_units


def test_keeper_for_ended_service_is_stale(helpers):
    found = findings(helpers.report, "stale-unit", "keeper@9.service")
    assert len(found) == 1, summaries(helpers.report)
    assert found[0]["severity"] == "warning"
    assert found[0]["path"] == f"{UNIT_DIRECTORY}/{KEEPER_SERVICE}"
    assert "named for service 9, which is not active" in found[0]["summary"]


def test_disabled_warden_instance_is_stale(helpers):
    found = findings(helpers.report, "stale-unit", "warden@9.service")
    assert len(found) == 1, summaries(helpers.report)
    assert found[0]["severity"] == "warning"


def test_keeper_for_active_service_not_stale(helpers):
    assert findings(helpers.report, "stale-unit", f"keeper@{ACTIVE_SERVICE}.service") == [], summaries(helpers.report)


def test_keeper_with_enabled_timer_not_stale(helpers):
    for name in ("keeper@12.service", "keeper@12.timer"):
        assert findings(helpers.report, "stale-unit", name) == [], summaries(helpers.report)


# A manager unit with KillMode=process.

@dataclass
class KillModeScenario:
    report: dict
    fragment: str


@pytest.fixture(scope="module")
def kill_mode(systemd_host: SystemdHost) -> KillModeScenario:
    host = systemd_host
    directory = host.scenario_directory("kill-mode")
    settings = write_settings(directory, host, MANAGER_BLUEPRINT, 11)
    text = manager_unit(directory, settings, str(host.binaries.manager), extra_service_lines=("KillMode=process",))
    with InstalledUnits(host) as units:
        start_manager(host, units, MANAGER_UNIT, text)
        assert host.show(MANAGER_UNIT, "KillMode")["KillMode"] == "process"
        report = host.check_report()
    return KillModeScenario(report, text)


def test_kill_mode_process_reported(kill_mode):
    found = findings(kill_mode.report, "killmode-not-control-group", MANAGER_UNIT)
    assert len(found) == 1, summaries(kill_mode.report)
    assert found[0]["severity"] == "warning"
    assert found[0]["path"] == f"{UNIT_DIRECTORY}/{MANAGER_UNIT}"
    assert found[0]["line"] == kill_mode.fragment.splitlines().index("KillMode=process") + 1


# A drop-in that adds a second ExecStart= without the empty reset line.

DROPIN = "10-flags.conf"


@dataclass
class DropinScenario:
    report: dict
    load_state: str
    journal: list[str]


@pytest.fixture(scope="module")
def dropin(systemd_host: SystemdHost) -> DropinScenario:
    host = systemd_host
    directory = host.scenario_directory("dropin")
    settings = write_settings(directory, host, MANAGER_BLUEPRINT, 12)
    override = (
        "[Service]\n"
        f"ExecStart={host.binaries.manager} blueprint run --data-dir {directory}/data "
        f"--keystore-path {directory}/keystore --settings-file {settings} --allow-unchecked-attestations\n"
    )
    with InstalledUnits(host) as units:
        units.install(MANAGER_UNIT, manager_unit(directory, settings, str(host.binaries.manager)),
                      dropins={DROPIN: override})
        load_state = host.show(MANAGER_UNIT, "LoadState")["LoadState"]
        report = host.check_report()
        journal = host.journal(MANAGER_UNIT)
    return DropinScenario(report, load_state, journal)


def test_systemd_refuses_second_exec_start(dropin):
    assert dropin.load_state == "bad-setting", dropin.journal


def test_dropin_overrides_exec_start_reported(dropin):
    found = findings(dropin.report, "dropin-overrides-execstart", MANAGER_UNIT)
    assert len(found) == 1, summaries(dropin.report)
    assert found[0]["severity"] == "critical"
    assert found[0]["path"] == f"{UNIT_DIRECTORY}/{MANAGER_UNIT}.d/{DROPIN}"
    assert found[0]["line"] == 2


def test_dropin_unit_load_error_reported(dropin):
    found = findings(dropin.report, "unit-load-error", MANAGER_UNIT)
    assert len(found) == 1, summaries(dropin.report)
    assert found[0]["severity"] == "critical"
    assert "bad-setting" in found[0]["summary"]
    assert any("Refusing" in line for line in found[0]["evidence"]), found[0]["evidence"]
