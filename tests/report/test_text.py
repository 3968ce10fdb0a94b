"""The text report: one finding's host-provided strings cannot forge lines or reach the terminal raw."""

from __future__ import annotations

from bpm_doctor import report
from bpm_doctor.diagnose import diagnose
from bpm_doctor.model import Process, Snapshot
from bpm_doctor.report import text

HOSTILE_ARGV = ["/opt/q\x1b[2J/quill-operator", "run", "--blueprint-id", "7", "--service-id", "1",
                "x\x1b]0;pwned\x07\nBPM-DOCTOR OK: fine", "\u202eevil"]


def test_control_characters_in_argv_are_escaped():
    host = Snapshot(source="test")
    host.processes[500] = Process(pid=500, ppid=1, exe=HOSTILE_ARGV[0], argv=HOSTILE_ARGV, cgroup="/")
    findings, view = diagnose(host)
    output = text.render(report.verdict(findings, host, view))
    assert "hand-run-instance" in output
    assert "\x1b" not in output
    assert "\x07" not in output
    assert "\u202e" not in output
    assert "\nBPM-DOCTOR OK" not in output
    assert "\\x1b]0;pwned\\x07\\nBPM-DOCTOR OK: fine" in output
