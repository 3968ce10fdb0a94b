"""Stale-unit and stale-cached-binary rules on snapshots shaped like real systemd 252 and /proc output."""

from __future__ import annotations

from bpm_doctor import snapshot
from bpm_doctor.config import Config
from bpm_doctor.diagnose.stale import check_stale_cached_binaries, check_stale_units
from bpm_doctor.diagnose.view import build

# A keeper service template without [Install], started by a timer template
# that has one. systemd 252.39 shows the failed instance keeper@9.service as
# UnitFileState=static, and drops keeper@9.timer from `list-units --all`
# once it is disabled and stopped (tests/systemd/test_stale_units.py).
_KEEPER = """#=== unit keeper@9.service
fragment: /etc/systemd/system/keeper@.service
unitfile: static
load: loaded
active: failed
sub: failed
#=== file /etc/systemd/system/keeper@.service
[Service]
Type=oneshot
ExecStart=/srv/keeper/tick.sh %i
#=== file /etc/systemd/system/keeper@.timer
[Timer]
OnUnitActiveSec=4min
[Install]
WantedBy=timers.target
"""
_ACTIVE_TIMER = """#=== unit keeper@9.timer
fragment: /etc/systemd/system/keeper@.timer
unitfile: {state}
load: loaded
active: {active}
sub: {sub}
"""


def _stale_units(text: str) -> list[str]:
    view = build(snapshot.parse(text), Config())
    return [finding.unit for finding in check_stale_units(view)]


def test_static_instance_without_timer_is_stale():
    assert _stale_units(_KEEPER) == ["keeper@9.service"]


def test_static_instance_with_enabled_timer_not_stale():
    timer = _ACTIVE_TIMER.format(state="enabled", active="active", sub="waiting")
    assert _stale_units(_KEEPER + timer) == []


def test_static_instance_with_running_timer_not_stale():
    timer = _ACTIVE_TIMER.format(state="disabled", active="active", sub="waiting")
    assert _stale_units(_KEEPER + timer) == []


def test_static_instance_of_active_service_not_stale():
    active = "#=== active-services\nsource: running-instances+manager\n42/9\n"
    assert _stale_units(_KEEPER + active) == []


def test_static_plain_unit_not_stale():
    """Outside templates, `static` still means a unit that other units start, so it is left alone."""
    text = """#=== unit quill-runtime.service
fragment: /etc/systemd/system/quill-runtime.service
unitfile: static
load: loaded
active: inactive
sub: dead
#=== file /etc/systemd/system/quill-runtime.service
[Service]
Environment=BLUEPRINT_ID=42
Environment=SERVICE_ID=9
ExecStart=/opt/quill/quill-operator run
"""
    assert _stale_units(text) == []


# A cache root reached through a symlink: /proc/PID/exe names the resolved
# path, the collector records the root under the manager's path with a
# `realpath` attribute.
_LINKED_CACHE = """#=== host
arch: x86_64
#=== proc 3001
ppid: 1
exe: /usr/local/bin/cargo-tangle
cwd: /srv/bp
argv: cargo-tangle blueprint run
env: HOME=/root
#=== proc 3002
ppid: 3001
exe: /data/bpm-cache/svc-21-5/quill
cwd: /srv/bp
argv: /root/.cache/blueprint-manager/svc-21-5/quill run --pretty -vv
env: BLUEPRINT_ID=21
env: SERVICE_ID=5
#=== paths
dir /root/.cache/blueprint-manager mode=0777 realpath=/data/bpm-cache
dir /root/.cache/blueprint-manager/svc-21-5 mode=0755
file /root/.cache/blueprint-manager/svc-21-5/quill mode=0755 elf-machine=x86_64
file /root/.cache/blueprint-manager/svc-21-5/binary-v1-x86_64-0123abcd mode=0755 elf-machine=x86_64
file /root/.cache/blueprint-manager/svc-21-5/quill.old mode=0755 elf-machine=aarch64
"""


def test_linked_cache_maps_running_binary():
    findings = check_stale_cached_binaries(build(snapshot.parse(_LINKED_CACHE), Config()))
    by_severity = {finding.severity.label: finding.path for finding in findings}
    assert by_severity == {
        "info": "/root/.cache/blueprint-manager/svc-21-5/binary-v1-x86_64-0123abcd",
        "warning": "/root/.cache/blueprint-manager/svc-21-5/quill.old",
    }
