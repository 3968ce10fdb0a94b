"""Live checks: the real `bpm-doctor check` scans processes started from the stand-in binaries.

Each scenario fixture starts its processes, runs the command line against
this host, ends every process it started, and returns the reports. So no
scenario's processes appear in another scenario's scan. Assertions look only
at the pids and blueprint ids a scenario started, because the host may run
other processes, including other tests' fake instances.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live.conftest import (
    BLUEPRINT_BASE,
    LiveProcesses,
    ManagerRun,
    Report,
    base_environment,
    cgroup_is_root,
    finding_pids,
    parent_pid,
    process_exists,
    start_manager,
    wait_for_hand_run,
    wait_until,
)

pytestmark = pytest.mark.live

# One blueprint id per scenario, unique to this pytest session.
HEALTHY, SHELL, TMUX, SETSID, ORPHANS, GONE, SECRET_BLUEPRINT, LIVE_SHELL = (
    BLUEPRINT_BASE + offset for offset in range(42, 50)
)
LAUNCH_FINDINGS = {"hand-run-instance", "orphan-instance", "duplicate-service"}
needs_root_cgroup = pytest.mark.skipif(
    not cgroup_is_root(),
    reason="this host puts test processes in a named cgroup, and bpm-doctor takes a detached process's "
           "launcher from the cgroup",
)


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _scenario_dirs(tmp_path_factory, name: str) -> tuple[Path, Path, Path]:
    """Return (log, working directory, home) for one scenario."""
    base = tmp_path_factory.mktemp(name)
    home = base / "home"
    home.mkdir()
    return base / "processes.log", base / "work", home


def _hand_run_script(instance: Path, blueprint_id: int, service_id: int, extra: str = "") -> str:
    """Return a shell command that starts the instance by hand, as an operator would."""
    return f"TEST_MODE=true BLUEPRINT_ID={blueprint_id} SERVICE_ID={service_id} {shlex.quote(str(instance))} run{extra}"


# Healthy: one manager, two managed instances.

@dataclass
class Healthy:
    manager: ManagerRun
    report: Report


@pytest.fixture(scope="module")
def healthy(standin_binaries, doctor, tmp_path_factory) -> Healthy:
    log, work, home = _scenario_dirs(tmp_path_factory, "healthy")
    with LiveProcesses(standin_binaries, log) as live:
        manager = start_manager(live, work, home, [(HEALTHY, 11), (HEALTHY, 12)])
        return Healthy(manager, doctor.report())


def test_healthy_instances_in_inventory(healthy):
    for pid in healthy.manager.instances.values():
        assert healthy.report.instance(pid) is not None, f"pid {pid} missing from {healthy.report.data['inventory']}"


def test_healthy_instances_are_managed(healthy):
    for pid in healthy.manager.instances.values():
        assert (healthy.report.instance(pid) or {}).get("managed") is True


def test_healthy_instances_name_manager_pid(healthy):
    for pid in healthy.manager.instances.values():
        assert (healthy.report.instance(pid) or {}).get("manager_pid") == healthy.manager.pid


def test_healthy_instances_have_no_launch_findings(healthy):
    for pid in healthy.manager.instances.values():
        launch = [f for f in healthy.report.findings if f["id"] in LAUNCH_FINDINGS and pid in finding_pids(f)]
        assert launch == []


def test_healthy_manager_has_no_gone_instance(healthy):
    assert healthy.report.findings_for("managed-instance-gone", healthy.manager.pid) == []


def test_healthy_bridge_sockets_not_stale(healthy):
    sockets = {str(healthy.manager.socket_path(*service)) for service in healthy.manager.instances}
    stale = [f for f in healthy.report.findings_for("stale-socket") if sockets & set(_as_list(f.get("path")))]
    assert stale == []


# Hand-run from a shell that exits at once: `bash -c '... &'`.

@dataclass
class ShellLaunch:
    manager: ManagerRun
    hand_run: int
    hand_run_parent: int | None
    shell_pid: int
    report: Report


@pytest.fixture(scope="module")
def shell_launch(standin_binaries, doctor, tmp_path_factory) -> ShellLaunch:
    log, work, home = _scenario_dirs(tmp_path_factory, "shell")
    with LiveProcesses(standin_binaries, log) as live:
        manager = start_manager(live, work, home, [(SHELL, 11), (SHELL, 12)])
        script = _hand_run_script(standin_binaries.instance, SHELL, 11) + " &"
        shell = live.spawn(["bash", "-c", script], base_environment(home), work)
        live.reap(shell)
        hand_run = wait_for_hand_run(live, SHELL, 11, not_parent=manager.pid)
        return ShellLaunch(manager, hand_run, parent_pid(hand_run), shell.pid, doctor.report())


def test_shell_hand_run_is_reparented(shell_launch):
    assert shell_launch.hand_run_parent != shell_launch.shell_pid


def test_shell_hand_run_reported_once(shell_launch):
    assert len(shell_launch.report.findings_for("hand-run-instance", shell_launch.hand_run)) == 1


def test_shell_hand_run_is_critical(shell_launch):
    for finding in shell_launch.report.findings_for("hand-run-instance", shell_launch.hand_run):
        assert finding["severity"] == "critical"


@needs_root_cgroup
def test_detached_shell_launcher_is_unknown(shell_launch):
    """The shell has exited and the instance sits under PID 1 in the root cgroup.

    Nothing left on the host names a shell: no parent chain, no session
    scope, no TMUX or STY variable. `unknown` is the honest launcher.
    """
    findings = shell_launch.report.findings_for("hand-run-instance", shell_launch.hand_run)
    assert [f.get("launcher") for f in findings] == ["unknown"]


def test_shell_hand_run_duplicates_managed_service(shell_launch):
    expected = sorted([shell_launch.manager.instances[(SHELL, 11)], shell_launch.hand_run])
    duplicates = [finding_pids(f) for f in shell_launch.report.findings_for("duplicate-service", shell_launch.hand_run)]
    assert duplicates == [expected]


def test_shell_hand_run_in_test_mode(shell_launch):
    assert shell_launch.report.findings_for("test-mode", shell_launch.hand_run) != []


def test_shell_hand_run_twin_stays_managed(shell_launch):
    twin = shell_launch.manager.instances[(SHELL, 11)]
    assert (shell_launch.report.instance(twin) or {}).get("managed") is True


# Hand-run from a shell that stays, detached from the test: `setsid -f bash -c '... & wait'`.

@dataclass
class LiveShell:
    hand_run: int
    parent_name: str | None
    report: Report


@pytest.fixture(scope="module")
def live_shell(standin_binaries, doctor, tmp_path_factory) -> LiveShell:
    log, work, home = _scenario_dirs(tmp_path_factory, "live-shell")
    work.mkdir()
    with LiveProcesses(standin_binaries, log) as live:
        script = _hand_run_script(standin_binaries.instance, LIVE_SHELL, 11) + " & wait"
        launcher = live.spawn(["setsid", "-f", "bash", "-c", script], base_environment(home), work)
        live.reap(launcher)
        hand_run = wait_for_hand_run(live, LIVE_SHELL, 11)
        shell_pid = parent_pid(hand_run)
        parent_name = None
        if shell_pid is not None and shell_pid > 1:
            live.adopt(shell_pid)
            parent_name = os.path.basename(os.readlink(f"/proc/{shell_pid}/exe"))
        return LiveShell(hand_run, parent_name, doctor.report())


def test_live_shell_is_instance_parent(live_shell):
    assert live_shell.parent_name == "bash"


def test_live_shell_hand_run_is_critical(live_shell):
    severities = [f["severity"] for f in live_shell.report.findings_for("hand-run-instance", live_shell.hand_run)]
    assert severities == ["critical"]


@needs_root_cgroup
def test_live_shell_launcher_is_shell(live_shell):
    launchers = [f.get("launcher") for f in live_shell.report.findings_for("hand-run-instance", live_shell.hand_run)]
    assert launchers == ["shell"]


# Hand-run inside a private tmux server.

@dataclass
class TmuxLaunch:
    hand_run: int
    report: Report


@pytest.fixture(scope="module")
def tmux_launch(standin_binaries, doctor, tmp_path_factory) -> TmuxLaunch:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed; the tmux launch test starts a private tmux server")
    log, work, home = _scenario_dirs(tmp_path_factory, "tmux")
    work.mkdir()
    # TMUX_TMPDIR keeps the server socket in this scenario's directory.
    env = base_environment(home) | {"TMUX_TMPDIR": str(log.parent), "TERM": "xterm"}
    command = _hand_run_script(standin_binaries.instance, TMUX, 11) + f" 2>>{shlex.quote(str(log))}"
    socket_name = f"bpm-doctor-live-{os.getpid()}"
    with LiveProcesses(standin_binaries, log) as live:
        started = subprocess.run(
            [tmux, "-f", "/dev/null", "-L", socket_name, "new-session", "-d", "-P", "-F", "#{pid} #{pane_pid}",
             "-s", "hand-run", command],
            env=env, cwd=work, capture_output=True, text=True, timeout=30,
        )
        pids = [int(word) for word in started.stdout.split() if word.isdigit()]
        for pid in pids:
            live.adopt(pid)
        assert started.returncode == 0, f"tmux new-session failed: {started.stderr}"
        assert len(pids) == 2, f"tmux new-session printed {started.stdout!r}, expected the server and pane pids"
        hand_run = wait_for_hand_run(live, TMUX, 11)
        return TmuxLaunch(hand_run, doctor.report())


def test_tmux_hand_run_is_critical(tmux_launch):
    severities = [f["severity"] for f in tmux_launch.report.findings_for("hand-run-instance", tmux_launch.hand_run)]
    assert severities == ["critical"]


def test_tmux_hand_run_launcher_is_tmux(tmux_launch):
    launchers = [f.get("launcher") for f in tmux_launch.report.findings_for("hand-run-instance", tmux_launch.hand_run)]
    assert launchers == ["tmux"]


# Hand-run with `setsid -f`: a new session, re-parented to PID 1 at once.

@dataclass
class SetsidLaunch:
    hand_run: int
    report: Report


@pytest.fixture(scope="module")
def setsid_launch(standin_binaries, doctor, tmp_path_factory) -> SetsidLaunch:
    log, work, home = _scenario_dirs(tmp_path_factory, "setsid")
    work.mkdir()
    argv = ["setsid", "-f", "env", "TEST_MODE=true", f"BLUEPRINT_ID={SETSID}", "SERVICE_ID=11",
            str(standin_binaries.instance), "run"]
    with LiveProcesses(standin_binaries, log) as live:
        live.reap(live.spawn(argv, base_environment(home), work))
        hand_run = wait_for_hand_run(live, SETSID, 11)
        return SetsidLaunch(hand_run, doctor.report())


def test_setsid_hand_run_is_critical(setsid_launch):
    severities = [f["severity"] for f in setsid_launch.report.findings_for("hand-run-instance", setsid_launch.hand_run)]
    assert severities == ["critical"]


@needs_root_cgroup
def test_setsid_launcher_is_unknown(setsid_launch):
    """setsid leaves no parent chain and, without systemd, no cgroup to name the launcher."""
    findings = setsid_launch.report.findings_for("hand-run-instance", setsid_launch.hand_run)
    assert [f.get("launcher") for f in findings] == ["unknown"]


# Orphans: SIGTERM the manager, then start a new one for the same services.

@dataclass
class Orphans:
    old_manager_status: int
    old_instances: dict[tuple[int, int], int]
    survivors: list[int]
    after_stop: Report
    restarted: ManagerRun
    after_restart: Report


@pytest.fixture(scope="module")
def orphans(standin_binaries, doctor, tmp_path_factory) -> Orphans:
    log, work, home = _scenario_dirs(tmp_path_factory, "orphans")
    services = [(ORPHANS, 11), (ORPHANS, 12)]
    with LiveProcesses(standin_binaries, log) as live:
        first = start_manager(live, work, home, services)
        os.kill(first.pid, signal.SIGTERM)
        status = live.reap(first.popen)
        old = dict(first.instances)
        wait_until(lambda: all(parent_pid(pid) not in (None, first.pid) for pid in old.values()),
                   "the orphaned instances to be re-parented", log)
        survivors = [pid for pid in old.values() if process_exists(pid)]
        after_stop = doctor.report()
        restarted = start_manager(live, work, home, services)
        return Orphans(status, old, survivors, after_stop, restarted, doctor.report())


def test_sigterm_kills_manager(orphans):
    assert orphans.old_manager_status == -signal.SIGTERM


def test_sigterm_leaves_instances_running(orphans):
    assert sorted(orphans.survivors) == sorted(orphans.old_instances.values())


def test_orphans_reported_after_sigterm(orphans):
    for pid in orphans.old_instances.values():
        assert len(orphans.after_stop.findings_for("orphan-instance", pid)) == 1


def test_orphans_not_hand_run(orphans):
    for pid in orphans.old_instances.values():
        assert orphans.after_stop.findings_for("hand-run-instance", pid) == []


def test_manager_down_matches_live_managers(orphans):
    """The orphans are a blueprint footprint, so manager-down is expected unless another manager daemon runs here."""
    down = orphans.after_stop.findings_for("manager-down") != []
    assert down == (orphans.after_stop.running_manager_pids() == [])


def test_restart_reports_duplicates(orphans):
    for service, old_pid in orphans.old_instances.items():
        expected = sorted([old_pid, orphans.restarted.instances[service]])
        duplicates = [finding_pids(f) for f in orphans.after_restart.findings_for("duplicate-service", old_pid)]
        assert duplicates == [expected]


def test_orphans_remain_after_restart(orphans):
    for pid in orphans.old_instances.values():
        assert len(orphans.after_restart.findings_for("orphan-instance", pid)) == 1


def test_orphan_socket_belongs_to_new_manager(orphans):
    expected = f"its bridge socket now belongs to pid {orphans.restarted.pid}"
    for pid in orphans.old_instances.values():
        evidence = [line for f in orphans.after_restart.findings_for("orphan-instance", pid) for line in f["evidence"]]
        assert expected in evidence


def test_restarted_instances_are_managed(orphans):
    for pid in orphans.restarted.instances.values():
        assert (orphans.after_restart.instance(pid) or {}).get("manager_pid") == orphans.restarted.pid


# A managed instance killed with SIGKILL: the manager keeps its bridge and does not respawn it.

@dataclass
class GoneInstance:
    manager: ManagerRun
    victim: int
    manager_alive: bool
    report: Report


@pytest.fixture(scope="module")
def gone_instance(standin_binaries, doctor, tmp_path_factory) -> GoneInstance:
    log, work, home = _scenario_dirs(tmp_path_factory, "gone")
    with LiveProcesses(standin_binaries, log) as live:
        manager = start_manager(live, work, home, [(GONE, 11), (GONE, 12)])
        victim = manager.instances[(GONE, 11)]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: f"Process for svc-{GONE}-11 exited" in log.read_text(errors="replace"),
                   f"manager pid {manager.pid} to reap instance pid {victim}", log)
        return GoneInstance(manager, victim, process_exists(manager.pid), doctor.report())


def test_manager_survives_instance_kill(gone_instance):
    assert gone_instance.manager_alive


def test_killed_instance_not_respawned(gone_instance):
    running = [entry for entry in gone_instance.report.data["inventory"]["instances"]
               if (entry["blueprint_id"], entry["service_id"]) == (GONE, 11)]
    assert running == []


def test_gone_instance_reported_for_manager(gone_instance):
    gone = [(f["blueprint_id"], f["service_id"])
            for f in gone_instance.report.findings_for("managed-instance-gone", gone_instance.manager.pid)]
    assert gone == [(GONE, 11)]


def test_gone_service_dirs_not_stale(gone_instance):
    stale = [f for f in gone_instance.report.findings_for("stale-service-dir")
             if (f.get("blueprint_id"), f.get("service_id")) == (GONE, 11)]
    assert stale == []


# Snapshot round trip and secrets.

SECRETS = {
    "manager environment": "quartz-heron-4417",
    "settings file": "amber-lynx-2093",
    "hand-run argv": "cobalt-finch-5561",
    "manager RPC URL": "slate-otter-8830",
}
OUTPUTS = ("json", "text", "nagios", "snapshot file", "snapshot check")


@dataclass
class Secrets:
    pids: set[int]
    hand_run: int
    settings_path: str
    planted: dict[str, bool]
    outputs: dict[str, str]
    live_report: Report
    snapshot_report: Report


def _contains(path: str, secret: str) -> bool:
    with open(path, "rb") as stream:
        return secret.encode() in stream.read()


@pytest.fixture(scope="module")
def secrets(standin_binaries, doctor, tmp_path_factory) -> Secrets:
    log, work, home = _scenario_dirs(tmp_path_factory, "secrets")
    with LiveProcesses(standin_binaries, log) as live:
        manager = start_manager(
            live, work, home, [(SECRET_BLUEPRINT, 11), (SECRET_BLUEPRINT, 12)],
            extra_env={"OPERATOR_PRIVATE_KEY": SECRETS["manager environment"]},
            extra_settings=(f"KEYSTORE_PASSWORD={SECRETS['settings file']}",),
            settings_mode=0o640,
            http_rpc_url=f"http://127.0.0.1:8545/v3/{SECRETS['manager RPC URL']}",
        )
        extra = f" --password {SECRETS['hand-run argv']} &"
        shell = live.spawn(["bash", "-c", _hand_run_script(standin_binaries.instance, SECRET_BLUEPRINT, 11, extra)],
                           base_environment(home), work)
        live.reap(shell)
        hand_run = wait_for_hand_run(live, SECRET_BLUEPRINT, 11, not_parent=manager.pid)
        planted = {
            "manager environment": _contains(f"/proc/{manager.pid}/environ", SECRETS["manager environment"]),
            "settings file": _contains(str(work / "settings.env"), SECRETS["settings file"]),
            "hand-run argv": _contains(f"/proc/{hand_run}/cmdline", SECRETS["hand-run argv"]),
            "manager RPC URL": _contains(f"/proc/{manager.pid}/cmdline", SECRETS["manager RPC URL"]),
        }
        outputs = {name: doctor.check(output_format=name) for name in ("json", "text", "nagios")}
        snapshot_path = log.parent / "host.snap"
        doctor.snapshot(snapshot_path)
        outputs["snapshot file"] = snapshot_path.read_text(errors="replace")
        outputs["snapshot check"] = doctor.check("--snapshot", str(snapshot_path))
        pids = {manager.pid, hand_run, *manager.instances.values()}
        live_report = Report(json.loads(outputs["json"]))
        snapshot_report = Report(json.loads(outputs["snapshot check"]))
        return Secrets(pids, hand_run, str(work / "settings.env"), planted, outputs, live_report, snapshot_report)


@pytest.mark.parametrize("place", sorted(SECRETS))
def test_planted_secret_reaches_host(secrets, place):
    assert secrets.planted[place]


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("place", sorted(SECRETS))
def test_secret_absent_from_output(secrets, place, output):
    assert SECRETS[place] not in secrets.outputs[output]


def test_readable_settings_secret_reported(secrets):
    paths = [f.get("path") for f in secrets.live_report.findings_for("secret-file-permissions")]
    assert secrets.settings_path in paths


def test_snapshot_check_sees_hand_run(secrets):
    assert "hand-run-instance" in secrets.snapshot_report.finding_ids_for(secrets.hand_run)


def test_snapshot_check_matches_live_check(secrets):
    assert secrets.snapshot_report.signature_for(secrets.pids) == secrets.live_report.signature_for(secrets.pids)
