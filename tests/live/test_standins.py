"""The stand-in manager and instance behave as their header comments promise.

The live checks are only as good as the stand-ins, so these tests read
/proc for what the manager passes to its instances and run the failure
paths the real programs have.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live.conftest import (
    BLUEPRINT_BASE,
    LiveProcesses,
    ManagerRun,
    base_environment,
    process_exists,
    start_manager,
    wait_until,
    write_settings,
)

pytestmark = pytest.mark.live

SPAWN = BLUEPRINT_BASE + 51


def _read_proc(pid: int, name: str) -> list[str]:
    with open(f"/proc/{pid}/{name}", "rb") as stream:
        return stream.read().decode(errors="replace").rstrip("\0").split("\0")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", "rb") as stream:
        data = stream.read()
    return data[data.rfind(b")") + 2:].decode().split()


@dataclass
class SpawnedInstance:
    manager: ManagerRun
    argv: list[str]
    environment: dict[str, str]
    cwd: str
    process_group: int
    session: int


@pytest.fixture(scope="module")
def spawned(standin_binaries, tmp_path_factory) -> SpawnedInstance:
    base = tmp_path_factory.mktemp("standin-spawn")
    home = base / "home"
    home.mkdir()
    with LiveProcesses(standin_binaries, base / "processes.log") as live:
        manager = start_manager(
            live, base / "work", home, [(SPAWN, 3)],
            extra_env={"OPERATOR_NOTE": "from-environment"},
            extra_settings=("OPERATOR_NOTE=from-settings", "SETTINGS_ONLY=from-settings"),
        )
        pid = manager.instances[(SPAWN, 3)]
        environment = dict(entry.partition("=")[::2] for entry in _read_proc(pid, "environ"))
        fields = _stat_fields(pid)
        return SpawnedInstance(manager, _read_proc(pid, "cmdline"), environment, os.readlink(f"/proc/{pid}/cwd"),
                               int(fields[2]), int(fields[3]))


def test_instance_argv_is_run_pretty_vv(spawned, standin_binaries):
    assert spawned.argv == [str(standin_binaries.instance), "run", "--pretty", "-vv"]


@pytest.mark.parametrize("name, expected", [
    ("BLUEPRINT_ID", str(SPAWN)),
    ("SERVICE_ID", "3"),
    ("PROTOCOL", "tangle"),
    ("CHAIN", "local_testnet"),
    ("BOOTNODES", ""),
    ("KEYSTORE_URI", "./keystore"),
    ("HTTP_RPC_URL", "http://127.0.0.1:8545/"),
    ("KMS_URL", "https://kms.tangle.tools"),
    ("BRIDGE_SOCKET_PATH", f"./blueprint-manager/run/svc-{SPAWN}-3/svc-{SPAWN}-3.sock"),
])
def test_instance_environment_value(spawned, name, expected):
    assert spawned.environment.get(name) == expected


def test_instance_data_dir_is_absolute(spawned):
    assert spawned.environment.get("DATA_DIR") == str(spawned.manager.workdir / "data" / f"blueprint-{SPAWN}-quill")


def test_settings_reach_instance(spawned):
    assert spawned.environment.get("SETTINGS_ONLY") == "from-settings"


def test_settings_do_not_override_environment(spawned):
    assert spawned.environment.get("OPERATOR_NOTE") == "from-environment"


def test_instance_shares_manager_cwd(spawned):
    assert spawned.cwd == str(spawned.manager.workdir)


def test_instance_shares_manager_process_group(spawned):
    assert spawned.process_group == spawned.manager.pid


def test_instance_shares_manager_session(spawned):
    assert spawned.session == spawned.manager.pid


def test_sigint_kills_instances(standin_binaries, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with LiveProcesses(standin_binaries, tmp_path / "processes.log") as live:
        manager = start_manager(live, tmp_path / "work", home, [(BLUEPRINT_BASE + 52, 1), (BLUEPRINT_BASE + 52, 2)])
        os.kill(manager.pid, signal.SIGINT)
        status = live.reap(manager.popen)
        wait_until(lambda: not any(process_exists(pid) for pid in manager.instances.values()),
                   "the instances to die after SIGINT", live.log)
    assert status == 0


def _run_manager(live: LiveProcesses, workdir: Path, home: Path, *extra: str) -> int:
    argv = [str(live.binaries.manager), "blueprint", "run", *extra]
    return live.reap(live.spawn(argv, base_environment(home), workdir))


def test_manager_rejects_instance_flag(standin_binaries, tmp_path):
    write_settings(tmp_path, BLUEPRINT_BASE + 53, [(BLUEPRINT_BASE + 53, 1)], standin_binaries.instance)
    with LiveProcesses(standin_binaries, tmp_path / "processes.log") as live:
        status = _run_manager(live, tmp_path, tmp_path, "--chain", "testnet")
    assert status == 2
    assert "unexpected argument '--chain'" in (tmp_path / "processes.log").read_text()


def test_manager_requires_blueprint_id(standin_binaries, tmp_path):
    (tmp_path / "settings.env").write_text("TANGLE_CONTRACT=0x" + "1" * 40 + "\n")
    with LiveProcesses(standin_binaries, tmp_path / "processes.log") as live:
        status = _run_manager(live, tmp_path, tmp_path)
    assert status == 1
    assert "Missing BLUEPRINT_ID" in (tmp_path / "processes.log").read_text()


def test_instance_without_bridge_exits(standin_binaries, tmp_path):
    environment = base_environment(tmp_path) | {"BLUEPRINT_ID": str(BLUEPRINT_BASE + 54), "SERVICE_ID": "1"}
    with LiveProcesses(standin_binaries, tmp_path / "processes.log") as live:
        status = live.reap(live.spawn([str(standin_binaries.instance), "run"], environment, tmp_path))
    assert status == 1
    assert "Unable to establish bridge connection" in (tmp_path / "processes.log").read_text()


def test_unpinged_instance_killed_after_timeout(standin_binaries, tmp_path):
    """TEST_MODE in the settings reaches the instance, which then never pings the bridge."""
    blueprint_id = BLUEPRINT_BASE + 55
    write_settings(tmp_path, blueprint_id, [(blueprint_id, 1)], standin_binaries.instance,
                   extra_lines=("TEST_MODE=true", "STANDIN_PING_TIMEOUT_SECONDS=1"))
    log = tmp_path / "processes.log"
    with LiveProcesses(standin_binaries, log) as live:
        live.spawn([str(standin_binaries.manager), "blueprint", "run"], base_environment(tmp_path), tmp_path)
        timeout_line = f"Service never connected to bridge (svc-{blueprint_id}-1)"
        wait_until(lambda: timeout_line in log.read_text(errors="replace"), "the manager to kill the instance", log)
        reaped_line = f"Process for svc-{blueprint_id}-1 exited: killed by signal 9"
        wait_until(lambda: reaped_line in log.read_text(errors="replace"), "the manager to reap the instance", log)
