"""Launcher attribution follows the parent chain first, then the cgroup."""

import pytest

from bpm_doctor import snapshot
from bpm_doctor.diagnose.view import MAX_ANCESTORS, build, cgroup_unit
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


def test_ancestor_walk_stops_at_the_limit():
    # A chain of nested shells far deeper than any real launch chain.
    depth = 5 * MAX_ANCESTORS
    parents = "".join(f"#=== proc {1000 + level}\nppid: {999 + level}\nexe: /usr/bin/bash\nargv: bash\n"
                      for level in range(1, depth + 1))
    parsed = snapshot.parse(parents + INSTANCE.format(ppid=1000 + depth, cgroup="/", extra=""))
    view = build(parsed, Config())
    ancestors = view.ancestors(500)
    assert len(ancestors) == MAX_ANCESTORS
    assert ancestors[0].pid == 1000 + depth
    assert view.instances[500].launcher == "shell"
