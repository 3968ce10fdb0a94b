"""A manager whose working directory cannot be read: relative paths are unknown, not missing.

Without CAP_SYS_PTRACE, /proc/PID/cwd of another user's process is
unreadable. The manager resolved `--settings-file ./settings.env` against
that directory, so the doctor cannot locate the file. Resolving it against
the doctor's own working directory reported a false settings-missing-key.
"""

from bpm_doctor import identify, report, snapshot
from bpm_doctor.config import Config
from bpm_doctor.diagnose import diagnose
from bpm_doctor.diagnose.view import build, manager_sites

ARGV = ["cargo-tangle", "blueprint", "run", "--settings-file", "./settings.env", "--data-dir", "/var/lib/bpm/data"]
MANAGER = ("#=== proc 12\nppid: 1\nargv: /usr/local/bin/cargo-tangle blueprint run --settings-file ./settings.env\n"
           "unreadable: cwd environ exe\n"
           "#=== read-errors\npermission-denied:cwd: 1\npermission-denied:environ: 1\npermission-denied:exe: 1\n")
UNIT = ("#=== unit bpm.service\nfragment: /etc/systemd/system/bpm.service\n"
        "#=== file /etc/systemd/system/bpm.service\n[Service]\n"
        "ExecStart=/usr/local/bin/cargo-tangle blueprint run --settings-file ./settings.env\n")


def test_relative_paths_unknown_without_cwd():
    paths = identify.manager_paths("cargo-tangle", ARGV, None, {})
    assert paths.settings_file is None
    assert paths.keystore is None
    assert paths.runtime_root is None
    assert paths.data_dir == "/var/lib/bpm/data"


def test_unreadable_cwd_gives_unknown_not_critical():
    parsed = snapshot.parse(MANAGER)
    findings, view = diagnose(parsed, Config())
    result = report.verdict(findings, parsed, view)
    assert "settings-missing-key" not in {finding.id for finding in findings}
    assert [finding.id for finding in findings if finding.id == "check-failed"] == []
    assert result.exit_code == report.UNKNOWN


def test_unit_without_working_directory_runs_in_root():
    sites = manager_sites(build(snapshot.parse(UNIT), Config()))
    assert [site.paths.settings_file for site in sites] == ["/settings.env"]


def test_collector_records_no_relative_path(tmp_path, monkeypatch):
    """The collector stats the manager's paths; a relative one would be resolved against the doctor's cwd."""
    from bpm_doctor import collect

    monkeypatch.chdir(tmp_path)
    parsed = snapshot.parse(MANAGER)
    collect._collect_manager_files(parsed, build(parsed, Config()))
    assert [path for path in parsed.paths if not path.startswith("/")] == []
    findings, _view = diagnose(parsed, Config())
    assert "settings-missing-key" not in {finding.id for finding in findings}
