"""Find external tools for tests: skip locally when one is missing, fail in CI.

CI sets CI=true and installs every tool the suite needs, so a missing tool
there is a broken setup, not a reason to skip.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require(name: str, package: str) -> str:
    """Return the path of executable `name`, or skip (fail under CI=true) when it is not installed."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (Debian package {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; CI must install it", pytrace=False)
    pytest.skip(message)


def require_proc_connector() -> None:
    """Skip (fail under CI=true) when the kernel's process events cannot be subscribed to here.

    CI runs as root in the initial namespaces of a machine type where the
    connector was checked to work, so there a refusal is a broken setup.
    """
    from bpm_doctor.daemon import exec_events

    try:
        sock = exec_events.open_listener()
    except exec_events.Unavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the proc connector works on this machine type as root, but not here: {error}",
                        pytrace=False)
        pytest.skip(f"proc connector unavailable: {error}")
    exec_events.close_listener(sock)
