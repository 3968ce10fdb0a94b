"""Fixtures for the end-to-end tests under a real systemd booted as PID 1 in namespaces.

One systemd serves the whole session (tests/systemd/boot.py). Its work
directory is under the checkout (`.pytest-systemd/<unique>/`), because /tmp
inside the namespace is a separate tmpfs. `bin/` contains the compiled
stand-ins, read-only inside. `state/` is bound writable at the same path,
for settings files, manager working directories and snapshots.

The tests skip when this machine cannot boot systemd that way: not root,
unshare, nsenter, /lib/systemd/systemd or gcc missing, or a failed boot. With
CI=true in the environment, a missing tool or a failed boot fails the
tests instead, because CI installs everything they need.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import pytest

from tests.support import standins
from tests.systemd import boot
from tests.systemd.host import SystemdHost

REPOSITORY = Path(__file__).resolve().parents[2]
WORK_ROOT = REPOSITORY / ".pytest-systemd"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str):
    """Skip the systemd tests, or fail them when CI=true."""
    if _in_ci():
        pytest.fail(f"CI=true, but the systemd tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def systemd_host():
    """Boot systemd once per session and yield a SystemdHost, then power it off and clean up."""
    if os.geteuid() != 0:
        pytest.skip("needs root (unshare, mount and cgroup writes)")
    reason = boot.missing_requirements() or standins.missing_compiler()
    if reason:
        _unavailable(reason)
    try:
        boot.check_visible_inside(Path(sys.executable))
        boot.check_visible_inside(REPOSITORY)
    except ValueError as error:
        _unavailable(str(error))

    for problem in boot.remove_stale(WORK_ROOT):
        warnings.warn(f"left over from an earlier run: {problem}", stacklevel=1)
    # The name must match boot.STALE_WORKDIR, so a later run can remove it if this one is killed.
    workdir = WORK_ROOT / f"session-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    state = workdir / "state"
    state.mkdir(parents=True)
    try:
        binaries = standins.compile_standins(workdir / "bin")
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        boot.remove_workdir(workdir)
        _unavailable(f"could not compile the stand-ins: {error}")
    doctor_config = workdir / "bin" / "bpm-doctor.toml"
    doctor_config.write_text("")

    try:
        booted = boot.boot(workdir, writable=[state])
    except boot.BootError as error:
        boot.remove_workdir(workdir)
        _unavailable(f"systemd did not boot in a namespace:\n{error}")
    try:
        yield SystemdHost(booted=booted, binaries=binaries, state=state, doctor_config=doctor_config)
    finally:
        problems = booted.shutdown()
        try:
            WORK_ROOT.rmdir()  # Fails while another run still has a directory in it.
        except OSError:
            pass
        assert not problems, "systemd shutdown left problems:\n" + "\n".join(problems)
