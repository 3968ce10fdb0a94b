"""Compile the C stand-ins in tests/standins/ for tests that start real processes.

The stand-in manager is installed as `cargo-tangle` and the instance as
`quill-operator`, so /proc/PID/exe names them as a real host would. The gcc
command is the one tests/live/conftest.py uses.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

STANDIN_SOURCES = Path(__file__).resolve().parents[1] / "standins"
MANAGER_SOURCE = STANDIN_SOURCES / "cargo_tangle.c"
INSTANCE_SOURCE = STANDIN_SOURCES / "instance.c"
COMPILE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class StandinBinaries:
    """Paths of the compiled stand-in manager and instance."""

    manager: Path
    instance: Path

    def all(self) -> tuple[Path, Path]:
        return (self.manager, self.instance)


def missing_compiler() -> str | None:
    """Return why the stand-ins cannot be compiled here, or None when they can."""
    if shutil.which("gcc") is None:
        return "gcc is not installed (apt-get install gcc libc6-dev); it compiles the stand-in manager and instance"
    for source in (MANAGER_SOURCE, INSTANCE_SOURCE):
        if not source.is_file():
            return f"stand-in source {source} not found"
    return None


@contextlib.contextmanager
def short_workdir(prefix: str):
    """Yield a new directory under /tmp and remove it afterwards; skip the test without a C compiler.

    The path is kept short because a bridge socket path must fit in the 108
    bytes of sun_path (unix(7)).
    """
    import pytest

    reason = missing_compiler()
    if reason:
        pytest.skip(reason)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def compile_standin(source: Path, output: Path) -> None:
    """Compile one stand-in. Raise RuntimeError with gcc's output when it fails."""
    command = ["gcc", "-O2", "-Wall", "-Wextra", "-std=c11", "-o", str(output), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {source.name} failed with status {result.returncode}:\n{result.stderr}")


def compile_standins(directory: Path) -> StandinBinaries:
    """Compile both stand-ins into `directory` and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    binaries = StandinBinaries(manager=directory / "cargo-tangle", instance=directory / "quill-operator")
    compile_standin(MANAGER_SOURCE, binaries.manager)
    compile_standin(INSTANCE_SOURCE, binaries.instance)
    return binaries
