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
