"""A child caught between fork() and exec() is part of its parent, not a second manager or instance.

Such a child shows its parent's argv and /proc/PID/exe. tests/collect/test_churn.py
caught scans that reported multiple-managers for a manager spawning an instance.
"""

from bpm_doctor import snapshot
from bpm_doctor.config import Config
from bpm_doctor.diagnose import diagnose

MANAGER = ("#=== proc 100\nppid: 1\nexe: /usr/local/bin/cargo-tangle\ncwd: /srv/m\n"
           "argv: /usr/local/bin/cargo-tangle blueprint run --data-dir /srv/m/data\n")
MANAGER_FORK = ("#=== proc 101\nppid: 100\nexe: /usr/local/bin/cargo-tangle\ncwd: /srv/m\n"
                "argv: /usr/local/bin/cargo-tangle blueprint run --data-dir /srv/m/data\n")
INSTANCE = ("#=== proc 300\nppid: 1\nexe: /opt/q/quill\ncwd: /srv/q\nargv: /opt/q/quill run\n"
            "env: BLUEPRINT_ID=7\nenv: SERVICE_ID=3\n")
INSTANCE_FORK = ("#=== proc 301\nppid: 300\nexe: /opt/q/quill\ncwd: /srv/q\nargv: /opt/q/quill run\n"
                 "env: BLUEPRINT_ID=7\nenv: SERVICE_ID=3\n")


def _ids(text: str) -> tuple[set[str], object]:
    findings, view = diagnose(snapshot.parse(text), Config())
    return {finding.id for finding in findings}, view


def test_manager_fork_is_not_second_manager():
    ids, view = _ids(MANAGER + MANAGER_FORK)
    assert view.managers == [100]
    assert "multiple-managers" not in ids


def test_instance_fork_is_not_duplicate():
    ids, view = _ids(INSTANCE + INSTANCE_FORK)
    assert sorted(view.instances) == [300]
    assert "duplicate-service" not in ids
    assert "hand-run-instance" in ids


def test_two_managers_still_reported():
    second = MANAGER_FORK.replace("ppid: 100", "ppid: 1")
    ids, view = _ids(MANAGER + second)
    assert view.managers == [100, 101]
    assert "multiple-managers" in ids


def test_child_that_exec_ed_is_judged_alone():
    child = INSTANCE_FORK.replace("exe: /opt/q/quill", "exe: /opt/q/quill-next")
    ids, view = _ids(INSTANCE + child)
    assert sorted(view.instances) == [300, 301]
    assert "duplicate-service" in ids
