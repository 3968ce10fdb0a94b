"""Run a Python module as PID 1 of a private PID namespace with its own /proc.

Race and soak tests churn thousands of processes that look like managers and
instances. Inside `unshare --pid --fork --mount-proc` only their own
processes are visible, so they neither see other tests' processes nor show
up in another scan of this host, and the namespace's pid counter
(/proc/sys/kernel/ns_last_pid) can be set to force pid reuse. `--kill-child`
ends everything in the namespace when the test's unshare process dies.
The network namespace is the host's, so a server inside is reachable on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import tools

REPOSITORY = Path(__file__).resolve().parents[2]


def require_pid_namespace() -> str:
    """Return the unshare path, or skip (fail under CI=true) when a PID namespace cannot be made."""
    unshare = tools.require("unshare", "util-linux")
    if os.geteuid() != 0:
        pytest.skip("a PID namespace with its own /proc needs root")
    return unshare


def namespace_command(module: str, *arguments: str) -> list[str]:
    """Return the argv that runs `python -m module arguments` as PID 1 of a new PID namespace."""
    unshare = require_pid_namespace()
    return [unshare, "--pid", "--fork", "--mount-proc", "--kill-child", "--",
            sys.executable, "-m", module, *arguments]


def run_in_namespace(module: str, *arguments: str, timeout: float) -> subprocess.CompletedProcess:
    """Run a module in a new PID namespace and wait at most `timeout` seconds for it."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(REPOSITORY)
    return subprocess.run(namespace_command(module, *arguments), capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPOSITORY), env=environment)


def start_in_namespace(module: str, *arguments: str, stderr=None) -> subprocess.Popen:
    """Start a module in a new PID namespace; its stdout is a pipe."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(REPOSITORY)
    return subprocess.Popen(namespace_command(module, *arguments), stdout=subprocess.PIPE,
                            stderr=stderr if stderr is not None else subprocess.PIPE, text=True,
                            cwd=str(REPOSITORY), env=environment, stdin=subprocess.DEVNULL)


def descendants(pid: int) -> list[int]:
    """Return the host pids of every descendant of `pid`, read from /proc/PID/task/*/children."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as stream:
                    children = [int(word) for word in stream.read().split()]
            except OSError:
                continue
            found += children
            pending += children
    return found
