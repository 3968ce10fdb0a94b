"""Drive the booted systemd from the tests: units, journal, stand-ins and bpm-doctor runs inside.

`SystemdHost` wraps a `boot.BootedSystemd` with the compiled stand-ins and a
state directory that is writable at the same path inside and outside the
namespace. `InstalledUnits` puts units into /run/systemd/system, a tmpfs
inside, and removes them again.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bpm_doctor import snapshot as snapshot_module
from bpm_doctor.model import Snapshot
from tests.support import standins
from tests.systemd import boot

UNIT_DIRECTORY = "/run/systemd/system"
DOCTOR_TIMEOUT_SECONDS = 60
SYSTEMCTL_TIMEOUT_SECONDS = 20
WAIT_SECONDS = 15
# The line the stand-in instance prints to stderr once it runs (tests/standins/instance.c).
READY_LINE = re.compile(
    r"ready pid=(?P<pid>\d+) ppid=(?P<ppid>\d+) blueprint=(?P<blueprint>\d+) service=(?P<service>\d+) "
    r"bridge=(?P<bridge>\w+)"
)


@dataclass(frozen=True)
class ReadyInstance:
    """One `ready` line that the stand-in instance printed to its journal."""

    pid: int
    ppid: int
    blueprint_id: int
    service_id: int
    bridge: str


@dataclass
class SystemdHost:
    """The booted systemd, the stand-ins and a writable state directory visible at the same path inside."""

    booted: boot.BootedSystemd
    binaries: standins.StandinBinaries
    state: Path
    doctor_config: Path

    def systemctl(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.booted.systemctl(*arguments, timeout=SYSTEMCTL_TIMEOUT_SECONDS, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        return self.booted.show(unit, *properties)

    def journal(self, unit: str) -> list[str]:
        """Return the unit's journal messages, oldest first."""
        completed = self.booted.run(
            ["journalctl", "--unit", unit, "--output", "cat", "--no-pager", "--quiet"],
            timeout=SYSTEMCTL_TIMEOUT_SECONDS, check=False,
        )
        return completed.stdout.splitlines()

    def ready_instances(self, unit: str) -> list[ReadyInstance]:
        found = []
        for line in self.journal(unit):
            match = READY_LINE.search(line)
            if match:
                found.append(ReadyInstance(
                    pid=int(match["pid"]), ppid=int(match["ppid"]), blueprint_id=int(match["blueprint"]),
                    service_id=int(match["service"]), bridge=match["bridge"],
                ))
        return found

    def wait_for(self, predicate, description: str, timeout: float = WAIT_SECONDS):
        return self.booted.wait_for(predicate, timeout, description)

    def scenario_directory(self, name: str) -> Path:
        """Return a fresh writable directory for one scenario."""
        directory = self.state / f"{name}-{uuid.uuid4().hex[:6]}"
        directory.mkdir(parents=True)
        return directory

    def doctor(self, *arguments: str) -> subprocess.CompletedProcess:
        """Run the real bpm-doctor command line inside the namespace, as root, with an empty configuration."""
        command = [sys.executable, "-m", "bpm_doctor", "--config", str(self.doctor_config), *arguments]
        return self.booted.run(command, timeout=DOCTOR_TIMEOUT_SECONDS, check=False)

    def check_report(self) -> dict:
        """Run `bpm-doctor check --format json` inside and return the parsed report."""
        completed = self.doctor("check", "--format", "json")
        if not completed.stdout:
            raise AssertionError(f"bpm-doctor check exited with {completed.returncode} and no output:\n"
                                 f"{completed.stderr}")
        report = json.loads(completed.stdout)
        assert report["exit_code"] == completed.returncode, completed.stderr
        return report

    def take_snapshot(self, directory: Path) -> Snapshot:
        """Run `bpm-doctor snapshot` inside and load the file it wrote."""
        path = directory / "host.hostsnap"
        completed = self.doctor("snapshot", "--output", str(path))
        assert completed.returncode == 0, f"bpm-doctor snapshot exited with {completed.returncode}:\n{completed.stderr}"
        return snapshot_module.load(path)


@dataclass
class InstalledUnits:
    """Units that one scenario installed into /run/systemd/system.

    `remove()` stops and deletes them. `names` lists the units to stop on
    removal. Template names stay out of it, because systemctl rejects them,
    and `track()` adds their instances.
    """

    host: SystemdHost
    names: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def __enter__(self) -> InstalledUnits:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def install(self, name: str, text: str, dropins: dict[str, str] | None = None) -> None:
        """Write a unit file and its drop-ins, then reload systemd."""
        path = f"{UNIT_DIRECTORY}/{name}"
        if "@." not in name:
            self.names.append(name)
        self.paths.append(path)
        self.host.booted.write_file(path, text)
        for dropin_name, dropin_text in (dropins or {}).items():
            dropin_path = f"{UNIT_DIRECTORY}/{name}.d/{dropin_name}"
            self.paths.append(dropin_path)
            self.host.booted.write_file(dropin_path, dropin_text)
        self.host.systemctl("daemon-reload")

    def track(self, name: str) -> None:
        """Stop `name` on removal too, such as an instance of an installed template."""
        self.names.append(name)

    def remove(self) -> None:
        """Stop, disable and delete every installed unit, then check that nothing of them still runs."""
        if not self.paths:
            return
        if self.names:
            self.host.systemctl("stop", *self.names, check=False)
            self.host.systemctl("disable", "--runtime", *self.names, check=False)
            self.host.systemctl("reset-failed", *self.names, check=False)
        for path in reversed(self.paths):
            self.host.booted.remove_file(path)
        for path in self.paths:
            dropin_directory = self.host.booted.inside_path(f"{path}.d")
            if dropin_directory.is_dir():
                dropin_directory.rmdir()
        self.host.systemctl("daemon-reload")
        leftovers = {name: self.host.show(name, "LoadState", "ActiveState", "MainPID") for name in self.names}
        self.names.clear()
        self.paths.clear()
        for name, state in leftovers.items():
            assert state.get("ActiveState") == "inactive", f"{name} still runs after removal: {state}"
