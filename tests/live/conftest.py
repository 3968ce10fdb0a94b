"""Fixtures for live tests: stand-in binaries, processes started from them, and bpm-doctor runs.

The stand-in manager and instance are compiled from tests/standins/ once per
session into pytest's temporary directory, as `cargo-tangle` and
`quill-operator`, so /proc/PID/exe names them as a real host would
(tests/support/standins.py).

Every process a test starts is ended by pid. That covers the process groups
that `LiveProcesses.spawn` creates, killed while their leader is unreaped so
the group id cannot have been reused. It also covers the pids a test adopts,
and any process whose /proc/PID/exe is one of the compiled stand-ins, a path
unique to this session. Nothing is matched by name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.standins import StandinBinaries, compile_standins, missing_compiler

# Blueprint ids of this pytest session are BLUEPRINT_BASE plus a small
# offset. The base comes from the pytest pid, so two concurrent sessions
# never share a (blueprint, service), and the range starts far above the
# small fixed ids other tests use.
BLUEPRINT_BASE = 9_000_000_000 + os.getpid() * 100
READY_LINE = re.compile(
    r"ready pid=(?P<pid>\d+) ppid=(?P<ppid>\d+) blueprint=(?P<blueprint>\d+) service=(?P<service>\d+) "
    r"bridge=(?P<bridge>\w+)"
)
# Contract addresses for the settings file. Any 0x-prefixed 40-digit hex value passes.
CONTRACTS = {
    "TANGLE_CONTRACT": "0x" + "1" * 40,
    "STAKING_CONTRACT": "0x" + "2" * 40,
    "STATUS_REGISTRY_CONTRACT": "0x" + "3" * 40,
}
WAIT_SECONDS = 20.0
POLL_SECONDS = 0.05


@pytest.fixture(scope="session")
def standin_binaries(tmp_path_factory):
    """Compile the stand-ins, and at session end kill any process still running one of them."""
    if not sys.platform.startswith("linux"):
        pytest.skip("live tests read /proc and need Linux")
    reason = missing_compiler()
    if reason is not None:
        pytest.skip(reason)
    binaries = compile_standins(tmp_path_factory.mktemp("standins"))
    yield binaries
    for pid in pids_running(binaries.all()):
        _kill(pid)


def pids_running(executables: tuple[Path, ...]) -> list[int]:
    """Return the pids whose /proc/PID/exe is one of the given files."""
    targets = {str(path) for path in executables}
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            target = os.readlink(f"/proc/{name}/exe")
        except OSError:
            continue
        if target in targets:
            found.append(int(name))
    return sorted(found)


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def process_exists(pid: int) -> bool:
    """Return True while /proc/PID exists and the process is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            data = stream.read()
    except OSError:
        return False
    state = data[data.rfind(b")") + 2:].split()[0]
    return state not in (b"Z", b"X")


def parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2:].split()[1])


def wait_until(condition, description: str, log: Path | None = None, timeout: float = WAIT_SECONDS):
    """Poll `condition` until it returns a true value, and return that value.

    Raises AssertionError naming `description`, with the log's last lines,
    after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = "\nlog tail:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise AssertionError(f"timed out after {timeout:g} s waiting for {description}{tail}")
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class ReadyInstance:
    """One `ready` line printed by the stand-in instance."""

    pid: int
    ppid: int
    blueprint_id: int
    service_id: int
    bridge: str


def ready_instances(log: Path) -> list[ReadyInstance]:
    """Return every instance that reported ready in a log, oldest first."""
    if not log.exists():
        return []
    found = []
    for match in READY_LINE.finditer(log.read_text(errors="replace")):
        found.append(ReadyInstance(
            pid=int(match["pid"]), ppid=int(match["ppid"]), blueprint_id=int(match["blueprint"]),
            service_id=int(match["service"]), bridge=match["bridge"],
        ))
    return found


class LiveProcesses:
    """Processes one scenario started, all ended by pid in `cleanup`."""

    def __init__(self, binaries: StandinBinaries, log: Path):
        self.binaries = binaries
        self.log = log
        self._unreaped: list[subprocess.Popen] = []
        self._adopted: set[int] = set()

    def __enter__(self) -> LiveProcesses:
        return self

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        """Start a process as the leader of a new session and process group, with its output in the log."""
        with open(self.log, "ab") as stream:
            popen = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stream, stderr=stream,
                start_new_session=True,
            )
        self._unreaped.append(popen)
        return popen

    def adopt(self, pid: int) -> None:
        """Record a process started outside the spawned groups (a tmux server, a setsid launch)."""
        self._adopted.add(pid)

    def reap(self, popen: subprocess.Popen, timeout: float = WAIT_SECONDS) -> int:
        """Wait for a spawned process to exit and return its status."""
        status = popen.wait(timeout=timeout)
        if popen in self._unreaped:
            self._unreaped.remove(popen)
        return status

    def cleanup(self) -> None:
        for pid in sorted(self._adopted):
            _kill(pid)
        for popen in self._unreaped:
            # The leader is not reaped yet, so its pid, and with it the
            # group id, still belongs to this test.
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids_running(self.binaries.all()):
            _kill(pid)
        for popen in self._unreaped:
            popen.wait(timeout=WAIT_SECONDS)
        self._unreaped.clear()
        wait_until(lambda: not [pid for pid in self._adopted if process_exists(pid)]
                   and not pids_running(self.binaries.all()),
                   "the processes of this scenario to exit")


def base_environment(home: Path) -> dict[str, str]:
    """Return a small environment for started processes.

    TMUX, STY, XDG_RUNTIME_DIR and the caller's other variables stay out, so
    launcher attribution does not change when the tests run inside tmux or a
    desktop session.
    """
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "SHELL": "/bin/sh",
    }


@dataclass
class ManagerRun:
    """A running stand-in manager and the instances it spawned, keyed by (blueprint, service)."""

    popen: subprocess.Popen
    workdir: Path
    instances: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def socket_path(self, blueprint_id: int, service_id: int) -> Path:
        label = f"svc-{blueprint_id}-{service_id}"
        return self.workdir / "blueprint-manager" / "run" / label / f"{label}.sock"


def write_settings(workdir: Path, blueprint_id: int, services: list[tuple[int, int]], instance: Path,
                   extra_lines: tuple[str, ...] = (), mode: int = 0o600) -> Path:
    """Write the manager's settings.env: coordinates, contracts and the stand-in's inputs."""
    lines = [f"BLUEPRINT_ID={blueprint_id}"]
    lines += [f"{name}={value}" for name, value in CONTRACTS.items()]
    lines.append("STANDIN_SERVICES=" + ",".join(f"{b}/{s}" for b, s in services))
    lines.append(f"STANDIN_INSTANCE_BINARY={instance}")
    lines += list(extra_lines)
    path = workdir / "settings.env"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(mode)
    return path


def start_manager(live: LiveProcesses, workdir: Path, home: Path, services: list[tuple[int, int]],
                  extra_env: dict[str, str] | None = None, extra_settings: tuple[str, ...] = (),
                  settings_mode: int = 0o600, http_rpc_url: str = "http://127.0.0.1:8545") -> ManagerRun:
    """Start the stand-in manager in `workdir` and wait until each service's instance has pinged its bridge."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_settings(workdir, services[0][0], services, live.binaries.instance, extra_settings, settings_mode)
    argv = [
        str(live.binaries.manager), "blueprint", "run",
        "--http-rpc-url", http_rpc_url,
        "--ws-rpc-url", "ws://127.0.0.1:8546",
        "--keystore-path", "./keystore",
        "--data-dir", "./data",
        "--settings-file", "./settings.env",
    ]
    env = base_environment(home) | (extra_env or {})
    run = ManagerRun(live.spawn(argv, env, workdir), workdir)

    def spawned_all() -> bool:
        connected = {
            (ready.blueprint_id, ready.service_id): ready.pid
            for ready in ready_instances(live.log)
            if ready.ppid == run.pid and ready.bridge == "connected"
        }
        sockets_exist = all(run.socket_path(*service).is_socket() for service in services)
        if sockets_exist and set(connected) >= set(services):
            run.instances = {service: connected[service] for service in services}
            return True
        return False

    wait_until(spawned_all, f"manager pid {run.pid} to bind its bridges and see {len(services)} instance(s) connect",
               live.log)
    return run


def wait_for_hand_run(live: LiveProcesses, blueprint_id: int, service_id: int, not_parent: int | None = None) -> int:
    """Wait until a hand-run instance for (blueprint, service) reports ready and return its pid."""

    def find() -> int | None:
        for ready in ready_instances(live.log):
            if (ready.blueprint_id, ready.service_id) == (blueprint_id, service_id) and ready.ppid != not_parent \
                    and process_exists(ready.pid):
                return ready.pid
        return None

    pid = wait_until(find, f"a hand-run instance for blueprint {blueprint_id} service {service_id}", live.log)
    live.adopt(pid)
    return pid


@dataclass
class Report:
    """A parsed `bpm-doctor check --format json` report."""

    data: dict

    @property
    def findings(self) -> list[dict]:
        return self.data["findings"]

    def findings_for(self, finding_id: str, pid: int | None = None) -> list[dict]:
        """Return the findings with this id, and with `pid` only those that name that pid."""
        return [f for f in self.findings if f["id"] == finding_id and (pid is None or pid in finding_pids(f))]

    def finding_ids_for(self, pid: int) -> set[str]:
        return {f["id"] for f in self.findings if pid in finding_pids(f)}

    def instance(self, pid: int) -> dict | None:
        return next((entry for entry in self.data["inventory"]["instances"] if entry["pid"] == pid), None)

    def running_manager_pids(self) -> list[int]:
        return [entry["pid"] for entry in self.data["inventory"]["manager_daemons"] if entry["pid"] is not None]

    def signature_for(self, pids: set[int]) -> list[tuple]:
        """Return (id, named pids among `pids`, blueprint, service) of each finding that names one of `pids`.

        Other pids are left out, because processes of other tests may come
        and go between two scans (multiple-managers names every manager).
        """
        signature = []
        for finding in self.findings:
            named = sorted(pids & set(finding_pids(finding)))
            if named:
                signature.append((finding["id"], tuple(named), finding.get("blueprint_id"), finding.get("service_id")))
        return sorted(signature)


def finding_pids(finding: dict) -> list[int]:
    value = finding.get("pid")
    if value is None:
        return []
    return sorted(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Doctor:
    """Runs the real bpm-doctor command line in a subprocess, with an empty configuration file."""

    config: Path

    def run(self, *arguments: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "bpm_doctor", "--config", str(self.config), *arguments]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def check(self, *arguments: str, output_format: str = "json") -> str:
        """Run `check --format FORMAT` and return its stdout.

        Any exit status is accepted, because a check exits 1 to 3 by design
        (3 also when a scan as non-root could not read everything).
        """
        result = self.run("check", "--format", output_format, *arguments)
        if not result.stdout:
            raise AssertionError(f"bpm-doctor check exited with {result.returncode} and no output:\n{result.stderr}")
        return result.stdout

    def report(self, *arguments: str) -> Report:
        """Run `check --format json` and return the parsed report."""
        return Report(json.loads(self.check(*arguments)))

    def snapshot(self, path: Path) -> None:
        """Run `snapshot -o PATH`, and raise AssertionError unless it exits 0."""
        result = self.run("snapshot", "-o", str(path))
        if result.returncode != 0:
            raise AssertionError(f"bpm-doctor snapshot exited with {result.returncode}:\n{result.stderr}")


@pytest.fixture(scope="session")
def doctor(tmp_path_factory) -> Doctor:
    config = tmp_path_factory.mktemp("doctor-config") / "config.toml"
    config.write_text("")
    return Doctor(config)


def cgroup_is_root() -> bool:
    """Return True when this process sits in the root cgroup, as on a host without systemd.

    Processes started by the tests inherit this cgroup. Where it names a unit
    or a session, bpm-doctor takes a detached process's launcher from it, so
    the launcher a test may expect depends on where the tests run.
    """
    from bpm_doctor.collect.processes import read_cgroup

    return read_cgroup(os.getpid()) in ("/", None)
