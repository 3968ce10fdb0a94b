"""Exit codes follow the Nagios convention, and a partial scan is never a false OK."""

from bpm_doctor import report, snapshot
from bpm_doctor.diagnose import diagnose
from bpm_doctor.report import nagios, text

HEALTHY = """#=== proc 100
ppid: 1
cgroup: /system.slice/blueprint-manager.service
exe: /root/.cargo/bin/cargo-tangle
cwd: /srv/q
argv: cargo-tangle blueprint run --data-dir /srv/q/data
#=== unit blueprint-manager.service
unitfile: enabled
active: active
sub: running
mainpid: 100
"""


def _result(text_snapshot):
    parsed = snapshot.parse(text_snapshot)
    findings, view = diagnose(parsed)
    return report.verdict(findings, parsed, view)


def test_healthy_host_is_ok():
    assert _result(HEALTHY).exit_code == report.OK


def test_permission_errors_make_ok_unknown():
    result = _result(HEALTHY + "#=== read-errors\npermission-denied:environ: 4\n")
    assert result.exit_code == report.UNKNOWN
    assert result.blind_spots == ["permission-denied:environ: 4"]


def test_vanished_processes_do_not_block():
    assert _result(HEALTHY + "#=== read-errors\nvanished: 9\n").exit_code == report.OK


def test_critical_stands_despite_blind_spots():
    hand_run = HEALTHY + "#=== proc 200\nppid: 1\nexe: /opt/x/quill\nargv: quill run\nenv: BLUEPRINT_ID=1\nenv: SERVICE_ID=2\n"
    result = _result(hand_run + "#=== read-errors\npermission-denied:environ: 4\n")
    assert result.exit_code == report.CRITICAL


def test_nagios_first_line_has_status_and_perfdata():
    first = nagios.render(_result(HEALTHY)).splitlines()[0]
    status, _, perfdata = first.partition(" | ")
    assert status.startswith("BPM-DOCTOR OK: ")
    assert "critical=0;;1;0;" in perfdata.split()
    assert "managers=1;;;0;" in perfdata.split()


def test_text_report_explains_empty_host():
    rendered = text.render(_result("#=== host\narch: x86_64\n"))
    assert "No Blueprint Manager, instance or blueprint unit was found" in rendered
