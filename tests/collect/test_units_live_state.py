"""Live unit state from `systemctl show`, checked against systemd 252 output.

The canned outputs below were printed by systemd 252.38 (Debian bookworm)
booted as PID 1 in a namespace, for a template `keeper@.service` with the
running instance `keeper@9.service`, and for `quill-runtime.service` in
/run/systemd/system, enabled with `systemctl enable --runtime` and given one
drop-in. tests/systemd runs the same collector against a live systemd.
"""

from __future__ import annotations

from bpm_doctor.collect import units
from bpm_doctor.model import Snapshot, Unit

LIST_UNITS = (
    "getty@tty1.service                   loaded    inactive dead    Getty on tty1\n"
    "keeper@9.service                     loaded    active   running keeper@9.service\n"
    "quill-runtime.service                loaded    active   running quill-runtime.service\n"
    "systemd-journald.service             loaded    active   running Journal Service\n"
)
SHOW = (
    "MainPID=95\nNRestarts=0\nExecMainStatus=0\n"
    "ExecStart={ path=/bin/sleep ; argv[]=/bin/sleep 300 ; ignore_errors=no ; "
    "start_time=[Fri 2026-12-04 21:22:15 UTC] ; stop_time=[n/a] ; pid=95 ; code=(null) ; status=0/0 }\n"
    "KillMode=control-group\nId=keeper@9.service\nLoadState=loaded\nActiveState=active\nSubState=running\n"
    "FragmentPath=/run/systemd/system/keeper@.service\nDropInPaths=\nUnitFileState=static\n"
    "\n"
    "MainPID=93\nNRestarts=0\nExecMainStatus=0\n"
    "ExecStart={ path=/bin/sleep ; argv[]=/bin/sleep 301 ; ignore_errors=no ; "
    "start_time=[Fri 2026-12-04 21:22:15 UTC] ; stop_time=[n/a] ; pid=93 ; code=(null) ; status=0/0 }\n"
    "KillMode=control-group\nId=quill-runtime.service\nLoadState=loaded\nActiveState=active\nSubState=running\n"
    "FragmentPath=/run/systemd/system/quill-runtime.service\n"
    "DropInPaths=/run/systemd/system/quill-runtime.service.d/10-ids.conf\nUnitFileState=enabled-runtime\n"
)
TEMPLATE_ERROR = "Failed to get properties: Unit name keeper@.service is neither a valid invocation ID nor unit name."


class FakeSystemctl:
    """Replace `_run` with the output of systemctl 252, including its rejection of template names."""

    def __init__(self):
        self.commands: list[list[str]] = []

    def __call__(self, command, snapshot):
        self.commands.append(command)
        if command[:2] == ["systemctl", "list-units"]:
            return LIST_UNITS
        if command[:2] == ["systemctl", "show"]:
            if any(name.endswith("@.service") for name in command):
                snapshot.add_read_error("systemctl-failed")  # what _run records for TEMPLATE_ERROR
                return None
            return SHOW
        if command[:2] == ["systemctl", "show-environment"]:
            return "LANG=C.UTF-8\nPATH=/usr/bin:/bin\n"
        return ""


def _snapshot() -> Snapshot:
    snapshot = Snapshot(source="host")
    snapshot.units["keeper@.service"] = Unit(name="keeper@.service", fragment="/run/systemd/system/keeper@.service")
    snapshot.units["quill-runtime.service"] = Unit(
        name="quill-runtime.service", fragment="/run/systemd/system/quill-runtime.service", unit_file_state="disabled",
    )
    snapshot.files["/run/systemd/system/quill-runtime.service.d/10-ids.conf"] = "[Service]\nEnvironment=SERVICE_ID=11\n"
    return snapshot


def test_show_leaves_out_template_names(monkeypatch):
    fake = FakeSystemctl()
    monkeypatch.setattr(units, "_run", fake)
    snapshot = _snapshot()

    units._add_live_state(snapshot)

    show = next(command for command in fake.commands if command[:2] == ["systemctl", "show"])
    assert "keeper@.service" not in show
    assert "keeper@9.service" in show
    assert "quill-runtime.service" in show
    assert snapshot.read_errors == {}


def test_show_output_fills_unit_state(monkeypatch):
    monkeypatch.setattr(units, "_run", FakeSystemctl())
    snapshot = _snapshot()

    units._add_live_state(snapshot)

    quill = snapshot.units["quill-runtime.service"]
    assert quill.unit_file_state == "enabled-runtime"
    assert quill.enabled
    assert quill.active_state == "active"
    assert quill.sub_state == "running"
    assert quill.main_pid == 93
    assert quill.kill_mode == "control-group"
    assert quill.exec_start == "/bin/sleep 301"
    assert quill.dropins == ["/run/systemd/system/quill-runtime.service.d/10-ids.conf"]

    instance = snapshot.units["keeper@9.service"]
    assert instance.fragment == "/run/systemd/system/keeper@.service"
    assert instance.main_pid == 95
    assert instance.unit_file_state == "static"


def test_show_keeps_first_of_several_exec_start_lines(monkeypatch):
    """A Type=oneshot unit with two ExecStart= lines, as systemctl 252 prints it."""
    show = (
        "ExecStart={ path=/bin/true ; argv[]=/bin/true a ; ignore_errors=no ; start_time=[n/a] ; "
        "stop_time=[n/a] ; pid=76 ; code=exited ; status=0 }\n"
        "ExecStart={ path=/bin/true ; argv[]=/bin/true b ; ignore_errors=no ; start_time=[n/a] ; "
        "stop_time=[n/a] ; pid=77 ; code=exited ; status=0 }\n"
        "Id=one.service\nLoadState=loaded\nActiveState=active\nSubState=exited\n"
    )
    snapshot = Snapshot(source="host")

    units._apply_show_block(snapshot, show)

    assert snapshot.units["one.service"].exec_start == "/bin/true a"
