"""Build the Debian package from a copy of the checkout, and run lintian on it.

dpkg-buildpackage writes into the source tree (debian/bpm-doctor,
.pybuild, debian/files) and puts its results in the parent directory, so
the build runs on a copy in a temporary directory and the checkout stays
clean. The copy is taken from the working tree, not from git, so files that
are not committed yet are packaged too.

The build runs with PATH=/usr/sbin:/usr/bin:/sbin:/bin: with pyenv's shims
first on PATH, pybuild's `python3.11 -m build` finds pyenv's interpreter,
which has no `build` module, and fails.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLEAN_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
# Not part of the source: local environments, caches and build output at the
# top of the checkout, and bytecode caches anywhere.
IGNORED_AT_TOP = {".git", ".venv", ".venv-floor", ".pytest_cache", ".hypothesis", ".pytest-systemd", "build", "dist"}
IGNORED_ANYWHERE = {"__pycache__"}
_BUILD_TIMEOUT_SECONDS = 600
_LINTIAN_TIMEOUT_SECONDS = 300


class BuildError(Exception):
    """Raised when the build dependencies are missing or dpkg-buildpackage fails."""


@dataclass
class BuildResult:
    deb: Path
    changes: Path
    log: str


def copy_source(checkout: Path, destination: Path) -> Path:
    """Copy the working tree of `checkout` to `destination`/bpm-doctor, keeping symbolic links."""
    source = destination / "bpm-doctor"

    def ignored(directory: str, names: list[str]) -> set[str]:
        skipped = {name for name in names if name in IGNORED_ANYWHERE or name.endswith(".egg-info")}
        if Path(directory) == checkout:
            skipped |= IGNORED_AT_TOP.intersection(names)
        return skipped

    shutil.copytree(checkout, source, symlinks=True, ignore=ignored)
    return source


def missing_build_dependencies(source: Path) -> str | None:
    """Return dpkg-checkbuilddeps' complaint for a build without tests, or None when all are installed."""
    if shutil.which("dpkg-checkbuilddeps") is None:
        return "dpkg-checkbuilddeps not found (install the Debian package dpkg-dev)"
    completed = subprocess.run(["dpkg-checkbuilddeps", "-P", "nocheck"], cwd=source, capture_output=True,
                               text=True, env=CLEAN_ENVIRONMENT, timeout=60, check=False)
    if completed.returncode != 0:
        return completed.stderr.strip() or f"dpkg-checkbuilddeps exited with status {completed.returncode}"
    return None


def build(source: Path) -> BuildResult:
    """Build the binary package without running the test suite (DEB_BUILD_OPTIONS=nocheck).

    The suite that runs this already ran the tests. Raises BuildError with
    the end of the build log when the build fails.
    """
    completed = subprocess.run(
        ["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=source, capture_output=True, text=True,
        env={**CLEAN_ENVIRONMENT, "DEB_BUILD_OPTIONS": "nocheck"}, timeout=_BUILD_TIMEOUT_SECONDS, check=False,
    )
    log = completed.stdout + completed.stderr
    if completed.returncode != 0:
        tail = "\n".join(log.splitlines()[-40:])
        raise BuildError(f"dpkg-buildpackage exited with status {completed.returncode}:\n{tail}")
    debs = sorted(source.parent.glob("bpm-doctor_*_all.deb"))
    changes = sorted(source.parent.glob("bpm-doctor_*.changes"))
    if len(debs) != 1 or len(changes) != 1:
        raise BuildError(f"expected one .deb and one .changes in {source.parent}, found {debs + changes}")
    return BuildResult(deb=debs[0], changes=changes[0], log=log)


def lintian(changes: Path) -> subprocess.CompletedProcess:
    """Run lintian on the .changes file; it exits 2 on any error or warning tag."""
    return subprocess.run(
        ["lintian", "--fail-on", "error,warning", "--display-info", str(changes)],
        capture_output=True, text=True, env=CLEAN_ENVIRONMENT, timeout=_LINTIAN_TIMEOUT_SECONDS, check=False,
    )


def package_paths(deb: Path) -> list[str]:
    """Return the paths a .deb installs, as dpkg-deb lists them (./etc/..., directories end in /)."""
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True,
                             env=CLEAN_ENVIRONMENT, timeout=60, check=True).stdout
    # Each line: mode owner size date time path [-> target]
    return [line.split(None, 5)[5].split(" -> ")[0] for line in listing.splitlines()]


def control_field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True,
                          env=CLEAN_ENVIRONMENT, timeout=60, check=True).stdout.strip()


def control_file(deb: Path, name: str) -> str:
    """Return one control-archive member (conffiles, postinst, ...), or "" when the package has none."""
    completed = subprocess.run(["dpkg-deb", "--info", str(deb), name], capture_output=True, text=True,
                               env=CLEAN_ENVIRONMENT, timeout=60, check=False)
    return completed.stdout if completed.returncode == 0 else ""


def extract(deb: Path, destination: Path) -> Path:
    """Unpack the package's files (not its scripts) into `destination` and return it."""
    subprocess.run(["dpkg-deb", "--extract", str(deb), str(destination)], env=CLEAN_ENVIRONMENT,
                   timeout=60, check=True)
    return destination
