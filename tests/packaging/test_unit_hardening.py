"""The shipped systemd units: `systemd-analyze verify` prints nothing, and the exposure stays at most 2.5.

Both checks run offline, without systemd as PID 1. verify resolves
ExecStart= on this machine's file system, so when bpm-doctor is not
installed in /usr/bin the units are checked from a copy whose ExecStart=
points at a stub; every other line is verified as shipped. The man page that
Documentation= names is found through MANPATH, from packaging/man.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import tools

REPOSITORY = Path(__file__).resolve().parents[2]
UNIT_DIRECTORY = REPOSITORY / "packaging" / "systemd"
MAN_PAGE = REPOSITORY / "packaging" / "man" / "bpm-doctor.1"
SERVICES = ("bpm-doctor.service", "bpm-doctor-check.service")
UNITS = (*SERVICES, "bpm-doctor-check.timer")
INSTALLED_EXECUTABLE = "/usr/bin/bpm-doctor"
# systemd-analyze's --threshold is on a 0-100 scale: ten times the exposure.
MAX_EXPOSURE = 2.5


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    return tools.require("systemd-analyze", "systemd")


@pytest.fixture(scope="module")
def staged_units(tmp_path_factory) -> Path:
    """Copy the units, with ExecStart= pointing at a stub when bpm-doctor is not installed."""
    directory = tmp_path_factory.mktemp("units")
    executable = INSTALLED_EXECUTABLE
    if not os.access(INSTALLED_EXECUTABLE, os.X_OK):
        stub = directory / "bin" / "bpm-doctor"
        stub.parent.mkdir()
        stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        stub.chmod(0o755)
        executable = str(stub)
    for name in UNITS:
        text = (UNIT_DIRECTORY / name).read_text(encoding="utf-8")
        (directory / name).write_text(text.replace(INSTALLED_EXECUTABLE, executable), encoding="utf-8")
    man_section = directory / "man" / "man1"
    man_section.mkdir(parents=True)
    shutil.copy(MAN_PAGE, man_section / MAN_PAGE.name)
    return directory


def _analyze(systemd_analyze: str, directory: Path, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "MANPATH": str(directory / "man"), "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
    return subprocess.run([systemd_analyze, *arguments], cwd=directory, capture_output=True, text=True,
                          env=environment, timeout=60, check=False)


@pytest.mark.parametrize("name", UNITS)
def test_verify_prints_nothing(systemd_analyze, staged_units, name):
    if shutil.which("man") is None:
        arguments = ("verify", "--man=no", f"./{name}")
    else:
        arguments = ("verify", f"./{name}")
    completed = _analyze(systemd_analyze, staged_units, *arguments)
    assert completed.stdout + completed.stderr == ""
    assert completed.returncode == 0


@pytest.mark.parametrize("name", SERVICES)
def test_exposure_at_most_limit(systemd_analyze, staged_units, name):
    threshold = str(round(MAX_EXPOSURE * 10))
    completed = _analyze(systemd_analyze, staged_units, "security", "--offline=true",
                         f"--threshold={threshold}", f"./{name}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", completed.stdout)
    assert match, completed.stdout + completed.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, completed.stdout
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_services_keep_required_access(name):
    """The sandbox settings that bpm-doctor cannot work without, and the ones it must never get."""
    text = (UNIT_DIRECTORY / name).read_text(encoding="utf-8")
    settings = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert "User=bpm-doctor" in settings
    assert "CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH" in settings
    assert "AmbientCapabilities=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH" in settings
    families = next(line for line in settings if line.startswith("RestrictAddressFamilies="))
    assert "AF_UNIX" in families.split("=", 1)[1].split()
    for forbidden in ("PrivateUsers=", "PrivateNetwork=", "PrivateTmp=", "ProtectProc=", "ProcSubset="):
        assert not any(line.startswith(forbidden) for line in settings), forbidden


@pytest.mark.parametrize("name", UNITS)
def test_debian_links_point_at_units(name):
    """debian/ installs the files under packaging/systemd through symbolic links, never copies."""
    link = REPOSITORY / "debian" / ("bpm-doctor.service" if name == "bpm-doctor.service" else f"bpm-doctor.{name}")
    assert link.is_symlink()
    assert link.resolve() == (UNIT_DIRECTORY / name).resolve()
