"""A booted Debian 12 container for the package tests: debootstrap plus systemd-nspawn.

`cached_rootfs()` builds a minimal bookworm root file system with debootstrap
once and keeps it outside the checkout, in $BPM_DOCTOR_CI_CACHE (default
/var/cache/bpm-doctor-ci), because debootstrap takes about 45 s. `Container`
boots systemd in it with `--volatile=overlay`: every write inside goes to a
tmpfs, and the cached tree stays as debootstrap left it. It also passes
`--private-network`, so the container has its own loopback, and its
listeners cannot clash with the host's. Commands run inside through
`nsenter -t <PID1> -a`.

NOTE: systemd in the container does not enforce IPAddressDeny=, because
systemd-nspawn's system call filter keeps bpf(2) from it, so the tests here
cannot check the units' IP allow list.

Requirements: root, systemd-nspawn (Debian package systemd-container),
debootstrap, nsenter (util-linux), and the hybrid cgroup layout of this
machine type or a pure cgroup2 one. systemd-nspawn needs both
`--register=no` and `--keep-unit` when the host's PID 1 is not systemd.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil

SUITE = "bookworm"
ROOTFS_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-psutil", "python3-systemd",
    "python3-prometheus-client", "python3-structlog",
)
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_CACHE = "/var/cache/bpm-doctor-ci"
COMMAND_ENVIRONMENT = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
NSPAWN_STATE = Path("/run/systemd/nspawn")

_DEBOOTSTRAP_TIMEOUT_SECONDS = 600
_PID1_TIMEOUT_SECONDS = 15
_READY_TIMEOUT_SECONDS = 60
_STOP_TIMEOUT_SECONDS = 30
_POLL_SECONDS = 0.1
# prctl(2) option: the signal a process gets when the thread that forked it exits.
_PR_SET_PDEATHSIG = 1


class ContainerError(Exception):
    """Raised when the root file system cannot be built or the container does not boot."""


def missing_requirements() -> str | None:
    """Return why this machine cannot run the container, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn and cgroup writes)"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"),
                          ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (install the Debian package {package})"
    if not _cgroup_hierarchies():
        return "no cgroup2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup"
    return None


def archive_uri(sources: Path = APT_SOURCES) -> str:
    """Return the first URIs: value of apt's deb822 sources, the Debian archive this machine uses.

    Raises ContainerError when the file is missing or has no URIs: line.
    """
    try:
        text = sources.read_text(encoding="utf-8")
    except OSError as error:
        raise ContainerError(f"cannot read the apt sources {sources}: {error.strerror}") from error
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "URIs" and value.split():
            return value.split()[0]
    raise ContainerError(f"no URIs: line in {sources}; cannot tell which Debian archive to use")


def cached_rootfs(cache: Path | None = None) -> Path:
    """Return a bookworm root file system with ROOTFS_PACKAGES, building it on first use.

    The directory name carries a hash of the suite and package list, so a
    changed list builds a new tree instead of reusing a stale one. A lock
    file keeps two test runs from building the same tree at once. The tree
    is built under a temporary name and renamed when complete, so an
    interrupted debootstrap never leaves a tree that looks usable.
    """
    cache = cache or Path(os.environ.get("BPM_DOCTOR_CI_CACHE", DEFAULT_CACHE))
    key = hashlib.sha256(" ".join((SUITE, *ROOTFS_PACKAGES)).encode()).hexdigest()[:12]
    rootfs = cache / f"rootfs-{SUITE}-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"rootfs-{SUITE}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (rootfs / "usr/lib/systemd/systemd").exists():
            return rootfs
        partial = cache / f"rootfs-{SUITE}-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        command = ["debootstrap", "--variant=minbase", "--include=" + ",".join(ROOTFS_PACKAGES),
                   SUITE, str(partial), archive_uri()]
        try:
            completed = subprocess.run(command, capture_output=True, text=True,
                                       timeout=_DEBOOTSTRAP_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            shutil.rmtree(partial, ignore_errors=True)
            raise ContainerError(f"debootstrap timed out after {_DEBOOTSTRAP_TIMEOUT_SECONDS} s") from None
        if completed.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-20:])
            raise ContainerError(f"debootstrap failed with status {completed.returncode}:\n{tail}")
        for package_file in (partial / "var/cache/apt/archives").glob("*.deb"):
            package_file.unlink()
        partial.rename(rootfs)
    return rootfs


class Container:
    """systemd booted in a cached root file system by systemd-nspawn, driven from the host.

    `binds` maps host directories to paths inside, bound read-only. Call
    `start()`, then `run()`; `stop()` halts the container and removes what
    systemd-nspawn leaves behind.
    """

    def __init__(self, rootfs: Path, log_path: Path, binds: dict[Path, str] | None = None):
        self.rootfs = rootfs
        self.log_path = log_path
        self.binds = binds or {}
        self.name = f"bpm-deb-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.cgroups = [Path(hierarchy) / self.name for hierarchy in _cgroup_hierarchies()]
        self.launcher: subprocess.Popen | None = None
        self.pid1: int | None = None

    def start(self) -> None:
        """Boot the container and wait until systemd reports running or degraded.

        Raises ContainerError, with the console log and failed units, when it
        does not boot; everything started is cleaned up first.
        """
        for cgroup in self.cgroups:
            cgroup.mkdir()
        nspawn = ["systemd-nspawn", "--quiet", "--directory", str(self.rootfs), "--machine", self.name,
                  "--boot", "--register=no", "--keep-unit", "--volatile=overlay", "--private-network",
                  "--console=passive"]
        nspawn += [f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]
        # The shell moves itself into the dedicated cgroups, then becomes
        # systemd-nspawn; --keep-unit makes nspawn nest the container there.
        script = 'for procs in "$@"; do echo $$ > "$procs"; done; exec ' + " ".join(_quote(arg) for arg in nspawn)
        procs_files = [str(cgroup / "cgroup.procs") for cgroup in self.cgroups]
        with open(self.log_path, "wb") as log, open(os.devnull, "rb") as null:
            self.launcher = subprocess.Popen(
                ["sh", "-c", script, "sh", *procs_files], stdin=null, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=COMMAND_ENVIRONMENT, preexec_fn=_die_with_parent,
            )
        try:
            self.pid1 = self._find_pid1()
            self._wait_running()
        except BaseException as error:
            details = self._failure_details() if isinstance(error, ContainerError) else []
            problems = self.stop()
            if isinstance(error, ContainerError):
                raise ContainerError("\n".join([str(error), *details, *problems])) from None
            raise

    def run(self, argv: list[str], timeout: float = 60, check: bool = True,
            input_text: str | None = None) -> subprocess.CompletedProcess:
        """Run a command as root in all of the container's namespaces, with a clean environment."""
        if self.pid1 is None:
            raise ContainerError("the container is not running")
        command = ["nsenter", "-t", str(self.pid1), "-a", *argv]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                                   env=COMMAND_ENVIRONMENT, input=input_text)
        if check and completed.returncode != 0:
            raise subprocess.CalledProcessError(completed.returncode, command, completed.stdout, completed.stderr)
        return completed

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """Return `systemctl show -p ...` for one unit as a dict."""
        output = self.run(["systemctl", "show", "--property=" + ",".join(properties), "--", unit]).stdout
        return dict(line.partition("=")[::2] for line in output.splitlines())

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file inside the container through /proc/PID1/root (it lands in the overlay)."""
        target = Path(f"/proc/{self.pid1}/root{path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(mode)

    def read_file(self, path: str) -> str:
        """Read a file inside the container through /proc/PID1/root.

        An absolute symbolic link on the way resolves on the host, not in
        the container; read such paths with `run(["cat", path])`.
        """
        return Path(f"/proc/{self.pid1}/root{path}").read_text(encoding="utf-8", errors="replace")

    def wait_for(self, predicate, timeout: float, what: str):
        """Poll `predicate()` until it returns a true value, and return that value.

        Raise TimeoutError naming `what` after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(_POLL_SECONDS)

    def console_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            return f"(console log {self.log_path} unreadable: {error.strerror})"

    def stop(self) -> list[str]:
        """Halt the container, then remove its cgroups and systemd-nspawn's state for it.

        SIGTERM to systemd-nspawn halts the container cleanly; SIGKILL
        follows after _STOP_TIMEOUT_SECONDS. Safe to call twice. Returns the
        problems met, one line each.
        """
        problems: list[str] = []
        launcher, self.launcher, self.pid1 = self.launcher, None, None
        if launcher is not None and launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
            try:
                launcher.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                problems.append(f"systemd-nspawn pid {launcher.pid} did not stop within "
                                f"{_STOP_TIMEOUT_SECONDS} s, so it was killed")
                launcher.kill()
                launcher.wait(timeout=_STOP_TIMEOUT_SECONDS)
        problems += self._remove_cgroups()
        problems += self._remove_nspawn_state()
        return problems

    def _find_pid1(self) -> int:
        deadline = time.monotonic() + _PID1_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.launcher.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited with status {self.launcher.returncode} "
                                     "before systemd started")
            try:
                for child in psutil.Process(self.launcher.pid).children():
                    if child.name() == "systemd":
                        return child.pid
            except psutil.Error:
                pass
            time.sleep(_POLL_SECONDS)
        raise ContainerError(f"no systemd child of systemd-nspawn pid {self.launcher.pid} "
                             f"after {_PID1_TIMEOUT_SECONDS} s")

    def _wait_running(self) -> None:
        """Poll `systemctl is-system-running`, because `--wait` fails at once while the bus is not up yet."""
        deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
        state = ""
        while time.monotonic() < deadline:
            if self.launcher.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited with status {self.launcher.returncode} during boot")
            try:
                state = self.run(["systemctl", "is-system-running"], timeout=5, check=False).stdout.strip()
            except subprocess.TimeoutExpired:
                state = "(systemctl is-system-running timed out)"
            if state in ("running", "degraded"):
                return
            time.sleep(_POLL_SECONDS)
        raise ContainerError(f"the container did not reach running or degraded within {_READY_TIMEOUT_SECONDS} s "
                             f"(last state: {state or 'no answer'})")

    def _failure_details(self) -> list[str]:
        lines = ["console log:", self.console_log().rstrip() or "(empty)"]
        if self.pid1 is None or self.launcher is None or self.launcher.poll() is not None:
            return lines
        for argv in (["systemctl", "--no-pager", "--failed"], ["journalctl", "--no-pager", "-b", "-n", "40"]):
            try:
                completed = self.run(argv, timeout=10, check=False)
                lines += [f"$ {' '.join(argv)}", (completed.stdout + completed.stderr).rstrip()]
            except (subprocess.TimeoutExpired, OSError) as error:
                lines.append(f"$ {' '.join(argv)}: {error}")
        return lines

    def _remove_cgroups(self) -> list[str]:
        """Remove the dedicated cgroups deepest first; nspawn leaves payload/ and supervisor/ below them."""
        problems = []
        for top in self.cgroups:
            deadline = time.monotonic() + 5
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
                time.sleep(_POLL_SECONDS)
        return problems

    def _remove_nspawn_state(self) -> list[str]:
        """Remove this container's entries under /run/systemd/nspawn.

        /run is not a tmpfs on this machine type, so systemd-nspawn's lock
        file for the tree and its propagation directory would stay. Only this
        container's entries go, and the directories only when empty. The
        tree's lock file stays while another container holds it.
        """
        status = self.rootfs.stat()
        propagate = NSPAWN_STATE / "propagate" / self.name
        lock = NSPAWN_STATE / "locks" / f"inode-{status.st_dev}:{status.st_ino}"
        shutil.rmtree(propagate, ignore_errors=True)
        entries = [propagate]
        if _lock_is_free(lock):
            lock.unlink(missing_ok=True)
            entries.append(lock)
        for directory in (NSPAWN_STATE / "propagate", NSPAWN_STATE / "locks", NSPAWN_STATE):
            try:
                directory.rmdir()
            except OSError:
                pass
        return [f"could not remove {entry}" for entry in entries if entry.exists()]


def _cgroup_hierarchies() -> list[str]:
    """Return the cgroup hierarchies systemd-nspawn uses here: cgroup2, plus name=systemd when hybrid."""
    if os.path.isfile("/sys/fs/cgroup/unified/cgroup.procs"):
        hierarchies = ["/sys/fs/cgroup/unified"]
        if os.path.isfile("/sys/fs/cgroup/systemd/cgroup.procs"):
            hierarchies.append("/sys/fs/cgroup/systemd")
        return hierarchies
    if os.path.isfile("/sys/fs/cgroup/cgroup.controllers"):
        return ["/sys/fs/cgroup"]
    return []


def _lock_is_free(path: Path) -> bool:
    """Return True when no process holds a flock(2) on `path`, as systemd-nspawn takes on its tree."""
    try:
        with open(path, "rb") as stream:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _quote(argument: str) -> str:
    return "'" + argument.replace("'", "'\\''") + "'"


def _die_with_parent() -> None:
    """Ask for SIGKILL when the test process dies, so a killed test run does not leave the container running.

    The request survives the exec into systemd-nspawn, which takes the
    container down when it dies.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
