"""Boot a real systemd as PID 1 in namespaces, for the end-to-end tests.

`boot()` runs boot-hostroot.sh, which starts the host's /lib/systemd/systemd
in new PID, mount, UTS, IPC, network and cgroup namespaces over a read-only
bind mount of the host root. /run, /tmp and the /var directories systemd
writes to are tmpfs mounts inside, and systemd uses a cgroup2-only hierarchy
below a dedicated cgroup `bpm-ci-<unique>`. The returned `BootedSystemd` runs
commands inside through `nsenter -t <PID1> -a -r -w` and writes files into
the namespace's tmpfs mounts through /proc/<PID1>/root. `shutdown()` powers
it off, kills what is left by PID, and removes the cgroups and the work
directory.

Requirements: root, unshare and nsenter (util-linux), /lib/systemd/systemd,
and the hybrid cgroup layout: cgroup2 on /sys/fs/cgroup/unified and the
`name=systemd` v1 hierarchy on /sys/fs/cgroup/systemd.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BOOT_SCRIPT = Path(__file__).with_name("boot-hostroot.sh")
SYSTEMD = "/lib/systemd/systemd"
# The boot script creates its dedicated cgroup in both hierarchies and moves itself there.
CGROUP_HIERARCHIES = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")
# Inside the namespace these are tmpfs mounts, so a host directory below one
# of them cannot be seen or bound there.
HIDDEN_INSIDE = ("/run", "/tmp", "/var/tmp", "/var/log", "/var/lib/systemd", "/var/cache", "/proc", "/sys", "/dev")
COMMAND_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}

_PID1_TIMEOUT_SECONDS = 10
_READY_TIMEOUT_SECONDS = 20
_POWEROFF_TIMEOUT_SECONDS = 15
_KILL_TIMEOUT_SECONDS = 5
_CGROUP_REMOVE_TIMEOUT_SECONDS = 5
_POLL_SECONDS = 0.05
# prctl(2) option: the signal a process gets when the thread that forked it exits.
_PR_SET_PDEATHSIG = 1
# Names that boot() and the session fixture give. The number is the test process's pid.
STALE_CGROUP = re.compile(r"^bpm-ci-(?P<pid>[0-9]+)-[0-9a-f]{8}$")
STALE_WORKDIR = re.compile(r"^session-(?P<pid>[0-9]+)-[0-9a-f]{8}$")


class BootError(Exception):
    """Raised when systemd does not boot. The message contains the boot log."""


def missing_requirements() -> str | None:
    """Return why this machine cannot boot systemd in a namespace, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (unshare, mount and cgroup writes)"
    for tool, package in (("unshare", "util-linux"), ("nsenter", "util-linux"), ("chroot", "coreutils"),
                          ("bash", "bash")):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (install the {package} package)"
    if not os.access(SYSTEMD, os.X_OK):
        return f"{SYSTEMD} not found (install the systemd package)"
    # NOTE: a unified-only host (cgroup2 mounted on /sys/fs/cgroup) is not
    # supported: the boot script would create its cgroup in the wrong place.
    for hierarchy in CGROUP_HIERARCHIES:
        if not os.path.isfile(os.path.join(hierarchy, "cgroup.procs")):
            return (f"{hierarchy} is not a mounted cgroup hierarchy; the namespace boot supports only the "
                    "hybrid layout (cgroup2 on /sys/fs/cgroup/unified, name=systemd on /sys/fs/cgroup/systemd)")
    return None


def check_visible_inside(path: Path) -> None:
    """Raise ValueError when a host path would be hidden by a tmpfs inside the namespace."""
    resolved = os.path.realpath(path)
    for hidden in HIDDEN_INSIDE:
        if resolved == hidden or resolved.startswith(hidden + "/"):
            raise ValueError(f"{resolved} is below {hidden}, which is a tmpfs inside the booted systemd; "
                             "use a directory on the host root file system, such as one in the checkout")


@dataclass
class BootedSystemd:
    """A running systemd in its own namespaces, driven from the host."""

    launcher: subprocess.Popen
    workdir: Path
    newroot: Path
    cgroup: str
    log_path: Path
    pid1: int | None = None
    _stopped: bool = field(default=False, repr=False)

    def run(self, argv: list[str], timeout: float = 20, check: bool = True,
            environment: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command in every namespace of PID 1, with its root and working directory.

        The command gets a clean environment (`COMMAND_ENVIRONMENT` plus
        `environment`), not the test process's.
        """
        if self.pid1 is None:
            raise BootError("systemd is not running")
        command = ["nsenter", "-t", str(self.pid1), "-a", "-r", "-w", *argv]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False,
            env={**COMMAND_ENVIRONMENT, **(environment or {})},
        )
        if check and completed.returncode != 0:
            raise subprocess.CalledProcessError(completed.returncode, command, completed.stdout, completed.stderr)
        return completed

    def systemctl(self, *arguments: str, timeout: float = 20, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["systemctl", "--no-pager", *arguments], timeout=timeout, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """Return `systemctl show -p ...` for one unit as a dict."""
        output = self.systemctl("show", "--property=" + ",".join(properties), "--", unit).stdout
        values = {}
        for line in output.splitlines():
            key, _, value = line.partition("=")
            values[key] = value
        return values

    def inside_path(self, path: str) -> Path:
        """Return the host path through which a path inside the namespace can be read and written."""
        if not path.startswith("/"):
            raise ValueError(f"expected an absolute path inside the namespace, got {path!r}")
        return Path(f"/proc/{self.pid1}/root{path}")

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file inside the namespace, for example a unit into /run/systemd/system."""
        target = self.inside_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(mode)

    def remove_file(self, path: str) -> None:
        self.inside_path(path).unlink(missing_ok=True)

    def wait_for(self, predicate, timeout: float, description: str):
        """Poll `predicate()` until it returns a true value, and return that value.

        Raise TimeoutError naming `description` after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {description}")
            time.sleep(_POLL_SECONDS)

    def boot_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            return f"(boot log {self.log_path} unreadable: {error})"

    def shutdown(self) -> list[str]:
        """Power off, kill leftovers by PID, remove the cgroups and the work directory.

        Safe to call twice. Returns the problems met, one line each. An empty
        list means a clean shutdown.
        """
        if self._stopped:
            return []
        self._stopped = True
        problems: list[str] = []
        if self.launcher.poll() is None and self.pid1 is not None:
            try:
                self.systemctl("poweroff", "--no-block", timeout=10, check=False)
            except subprocess.TimeoutExpired:
                problems.append("systemctl poweroff timed out")
            if not _wait_exit(self.launcher, _POWEROFF_TIMEOUT_SECONDS):
                problems.append(f"systemd did not power off within {_POWEROFF_TIMEOUT_SECONDS} s, so it was killed")
        if self.launcher.poll() is None:
            # unshare runs with --kill-child, so its death takes PID 1, and the
            # whole PID namespace, with it.
            self.launcher.kill()
            if not _wait_exit(self.launcher, _KILL_TIMEOUT_SECONDS):
                problems.append(f"launcher pid {self.launcher.pid} survived SIGKILL")
        if self.pid1 is not None and psutil.pid_exists(self.pid1) and _is_child_systemd(self.pid1, self.launcher.pid):
            os.kill(self.pid1, signal.SIGKILL)
        problems += remove_cgroup(self.cgroup)
        problems += remove_workdir(self.workdir, self.newroot)
        return problems


def boot(workdir: Path, writable: list[Path] = ()) -> BootedSystemd:
    """Boot systemd with `workdir` for the mount point and log; `writable` dirs stay writable inside.

    Raises BootError (with the boot log) when PID 1 does not appear or the
    system does not reach `running` or `degraded`. Everything started is
    cleaned up before the error is raised.
    """
    check_visible_inside(workdir)
    for path in writable:
        check_visible_inside(path)
    workdir.mkdir(parents=True, exist_ok=True)
    newroot = workdir / "newroot"
    log_path = workdir / "boot.log"
    cgroup = f"bpm-ci-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(log_path, "wb") as log, open(os.devnull, "rb") as null:
        launcher = subprocess.Popen(
            ["bash", str(BOOT_SCRIPT), str(newroot), cgroup, *(str(path) for path in writable)],
            stdin=null, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=COMMAND_ENVIRONMENT, preexec_fn=_die_with_parent,
        )
    booted = BootedSystemd(launcher=launcher, workdir=workdir, newroot=newroot, cgroup=cgroup, log_path=log_path)
    try:
        booted.pid1 = _find_pid1(launcher)
        _wait_running(booted)
    except BootError as error:
        details = _failure_details(booted)
        problems = booted.shutdown()
        raise BootError("\n".join([str(error), *details, *problems])) from None
    except BaseException:
        booted.shutdown()
        raise
    return booted


def _die_with_parent() -> None:
    """Ask for SIGKILL when the test process dies, so a killed test run takes its systemd along.

    The request survives the exec into unshare, and unshare's --kill-child
    passes the SIGKILL on to PID 1 of the namespace.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def remove_stale(work_root: Path) -> list[str]:
    """Remove cgroups and work directories left by test runs that were killed before they cleaned up.

    Only names made by `boot()` and the session fixture count, and only when
    the test process whose pid they carry is gone. A cgroup that still has
    processes cannot be removed and is reported instead.
    """
    problems = []
    for hierarchy in CGROUP_HIERARCHIES:
        try:
            names = os.listdir(hierarchy)
        except OSError:
            continue
        for name in names:
            match = STALE_CGROUP.match(name)
            if match and not psutil.pid_exists(int(match["pid"])):
                problems += remove_cgroup(name, timeout=0)
    try:
        entries = list(work_root.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        match = STALE_WORKDIR.match(entry.name)
        if match and entry.is_dir() and not psutil.pid_exists(int(match["pid"])):
            problems += remove_workdir(entry)
    return problems


def _find_pid1(launcher: subprocess.Popen) -> int:
    deadline = time.monotonic() + _PID1_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            raise BootError(f"the boot script exited with status {launcher.returncode} before systemd started")
        try:
            for child in psutil.Process(launcher.pid).children():
                if child.name() == "systemd":
                    return child.pid
        except psutil.Error:
            pass
        time.sleep(_POLL_SECONDS)
    raise BootError(f"no systemd child of launcher pid {launcher.pid} after {_PID1_TIMEOUT_SECONDS} s")


def _wait_running(booted: BootedSystemd) -> None:
    """Poll `systemctl is-system-running`, because `--wait` fails at once while the bus is not up yet."""
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    state = ""
    while time.monotonic() < deadline:
        if booted.launcher.poll() is not None:
            raise BootError(f"systemd exited with status {booted.launcher.returncode} during boot")
        try:
            state = booted.run(["systemctl", "is-system-running"], timeout=5, check=False).stdout.strip()
        except subprocess.TimeoutExpired:
            state = "(systemctl is-system-running timed out)"
        if state in ("running", "degraded"):
            return
        time.sleep(_POLL_SECONDS * 2)
    raise BootError(f"systemd did not reach running or degraded within {_READY_TIMEOUT_SECONDS} s "
                    f"(last state: {state or 'no answer'})")


def _failure_details(booted: BootedSystemd) -> list[str]:
    lines = ["boot log:", booted.boot_log().rstrip() or "(empty)"]
    if booted.pid1 is None or booted.launcher.poll() is not None:
        return lines
    for argv in (["systemctl", "--no-pager", "--failed"], ["journalctl", "--no-pager", "-b", "-n", "40"]):
        try:
            completed = booted.run(argv, timeout=5, check=False)
            lines += [f"$ {' '.join(argv)}", (completed.stdout + completed.stderr).rstrip()]
        except (subprocess.TimeoutExpired, OSError) as error:
            lines.append(f"$ {' '.join(argv)}: {error}")
    return lines


def _wait_exit(process: subprocess.Popen, timeout: float) -> bool:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _is_child_systemd(pid: int, launcher_pid: int) -> bool:
    """Return True when `pid` is still the systemd this boot started, not a reused PID."""
    try:
        process = psutil.Process(pid)
        return process.name() == "systemd" and process.ppid() in (launcher_pid, 1)
    except psutil.Error:
        return False


def remove_cgroup(name: str, timeout: float = _CGROUP_REMOVE_TIMEOUT_SECONDS) -> list[str]:
    """Remove the dedicated cgroup on both hierarchies, deepest directories first.

    A cgroup can be removed only once its last process is reaped, which
    may take a moment after PID 1 of the namespace dies, so this retries.
    """
    problems = []
    for hierarchy in CGROUP_HIERARCHIES:
        top = Path(hierarchy) / name
        deadline = time.monotonic() + timeout
        while top.exists():
            directories = sorted((Path(root) for root, _dirs, _files in os.walk(top)),
                                 key=lambda path: len(path.parts), reverse=True)
            for directory in directories:
                try:
                    directory.rmdir()
                except OSError:
                    pass
            if not top.exists():
                break
            if time.monotonic() > deadline:
                problems.append(f"could not remove cgroup {top}: it still has processes or children")
                break
            time.sleep(_POLL_SECONDS * 2)
    return problems


def remove_workdir(workdir: Path, newroot: Path | None = None) -> list[str]:
    """Remove a boot's work directory; return the problems met, one line each."""
    # The mount namespace was private, so on the host newroot is an empty
    # directory. Keep the tree anyway if something is mounted there, because
    # removing it would then reach into the host root.
    newroot = newroot or workdir / "newroot"
    if os.path.ismount(newroot):
        return [f"{newroot} is a mount point on the host; left {workdir} in place"]
    shutil.rmtree(workdir, ignore_errors=True)
    if workdir.exists():
        return [f"could not remove {workdir}"]
    return []
