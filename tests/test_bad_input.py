"""Arbitrary input never crashes a parser: it parses, or it fails with one line naming file and line."""

from __future__ import annotations

import re

from hypothesis import given, settings, strategies as st

from bpm_doctor import config, envfile, redact, snapshot, unitfile
from bpm_doctor.diagnose import diagnose
from bpm_doctor.errors import ConfigError, InputError

SECTION_WORDS = ["host", "unit x.service", "file /etc/x.service", "file /srv/s.env", "proc 12", "listen",
                 "journal x.service", "paths", "crontab root", "show-environment", "active-services", "read-errors"]
LINE_WORDS = ["ppid: 1", "argv: x run", "env: BLUEPRINT_ID=1", "env: SERVICE_ID=2", "mainpid: 12",
              "ExecStart=/x run", "tcp 1.2.3.4:5 pid=12", "dir /srv/x", "socket /a/svc-1-2/svc-1-2.sock",
              "42/11", "arch: x86_64", "exe: /root/.cache/blueprint-manager/svc-1-2/x", "cgroup: /system.slice/a.service"]

snapshot_text = st.lists(
    st.one_of(
        st.sampled_from(SECTION_WORDS).map(lambda word: "#=== " + word),
        st.sampled_from(LINE_WORDS),
        st.text(max_size=40),
    ),
    max_size=40,
).map("\n".join)

ERROR_LINE = re.compile(r"^[^\n]+:\d+: [^\n]+$")


@settings(max_examples=300, deadline=None)
@given(text=snapshot_text)
def test_snapshot_parser_and_diagnosis_never_crash(text):
    try:
        parsed = snapshot.parse(text, "fuzz.snap")
    except InputError as error:
        assert ERROR_LINE.match(str(error)), str(error)
        return
    findings, _view = diagnose(parsed)
    assert not [finding for finding in findings if finding.id == "check-failed"], findings
    snapshot.render(parsed)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400))
def test_config_parser_reports_one_line_errors(text):
    try:
        config.parse(text, "fuzz.toml")
    except ConfigError as error:
        for line in error.errors:
            assert ERROR_LINE.match(line), line


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400))
def test_unit_and_env_parsers_never_crash(text):
    parsed = unitfile.parse(text, "/x.service")
    effective = unitfile.effective("x.service", [parsed])
    effective.exec_start
    effective.environment
    effective.environment_files
    envfile.parse_systemd(text)
    envfile.parse_dotenv(text)
    envfile.divergences(text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), path=st.sampled_from(["/x.service", "/s.env", "/c.toml", "/d.d/x.conf"]))
def test_redaction_never_crashes_and_keeps_line_count(text, path):
    redacted = redact.redact_file_text(path, text)
    assert redacted.count("\n") == text.count("\n")
    assert redact.redact_file_text(path, redacted).count("\n") == text.count("\n")
