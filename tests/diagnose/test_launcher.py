"""Launcher attribution follows the parent chain first, then the cgroup."""

import pytest

from bpm_doctor import snapshot
from bpm_doctor.diagnose.view import build, cgroup_unit
from bpm_doctor.config import Config

INSTANCE = "#=== proc 500\nppid: {ppid}\ncgroup: {cgroup}\nexe: /opt/q/quill\nargv: quill run\nenv: BLUEPRINT_ID=1\nenv: SERVICE_ID=2\n{extra}"


def _launcher(ppid=1, cgroup="/", extra="", parents=""):
    parsed = snapshot.parse(parents + INSTANCE.format(ppid=ppid, cgroup=cgroup, extra=extra))
    info = build(parsed, Config()).instances[500]
    return info.launcher, info.launcher_unit


@pytest.mark.parametrize("cgroup, expected", [
    ("/system.slice/quill.service", ("systemd-unit", "quill.service")),
    ("/system.slice/cron.service", ("cron", None)),
    ("/system.slice/docker-0123abcd.scope", ("container", None)),
    ("/user.slice/user-0.slice/session-3.scope", ("shell", None)),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service", ("shell", None)),
    ("/", ("unknown", None)),
])
def test_cgroup_decides_for_reparented_process(cgroup, expected):
    assert _launcher(cgroup=cgroup) == expected


def test_tmux_ancestor_beats_session_cgroup():
    parents = "#=== proc 400\nppid: 1\nexe: /usr/bin/tmux\nargv: tmux\n#=== proc 401\nppid: 400\nexe: /usr/bin/bash\nargv: -bash\n"
    assert _launcher(ppid=401, cgroup="/user.slice/user-0.slice/session-9.scope", parents=parents) == ("tmux", None)


def test_tmux_variable_without_ancestor():
    assert _launcher(extra="env: TMUX=/tmp/tmux-0/default,1,0\n") == ("tmux", None)


def test_shell_wrapper_inside_unit_is_the_unit():
    parents = "#=== proc 401\nppid: 1\nexe: /usr/bin/bash\nargv: sh -c x\n"
    assert _launcher(ppid=401, cgroup="/system.slice/quill.service", parents=parents) == ("systemd-unit", "quill.service")


def test_cgroup_unit_takes_innermost():
    assert cgroup_unit("/bpm-ci/payload/system.slice/foo.service") == "foo.service"
    assert cgroup_unit("/") is None
    assert cgroup_unit(None) is None
