"""Unit files: direct-run units, manager flags, KillMode, drop-ins and placeholders."""

from __future__ import annotations

from bpm_doctor.model import Severity
from tests.lint.helpers import ids, lint, of_id, write

MANAGER_UNIT = """
    [Unit]
    Description=Tangle Blueprint Manager

    [Service]
    WorkingDirectory=/srv/ferry
    ExecStart=/root/.cargo/bin/cargo-tangle blueprint run --protocol tangle --keystore-path /srv/ferry/keystore --settings-file /srv/ferry/settings.env
    Restart=always

    [Install]
    WantedBy=multi-user.target
"""

DIRECT_RUN_UNIT = """
    [Unit]
    Description=ferry runtime

    [Service]
    Environment=BLUEPRINT_ID=9 SERVICE_ID=5
    Environment=TEST_MODE=true
    ExecStart=/srv/ferry/bin/ferry-relay run
    Restart=always
"""


def test_direct_run_unit_is_critical(tmp_path):
    path = write(tmp_path, "ferry-runtime.service", DIRECT_RUN_UNIT)
    findings = of_id(lint(path), "direct-run-unit")
    assert len(findings) == 1
    finding = findings[0]
    assert finding.severity == Severity.CRITICAL
    assert finding.line == 7
    assert finding.unit == "ferry-runtime.service"
    assert finding.blueprint_id == 9
    assert finding.service_id == 5
    assert finding.launcher == "systemd-unit"
    assert "the unit sets BLUEPRINT_ID, SERVICE_ID, TEST_MODE" in finding.evidence


def test_bare_binary_with_numeric_ids_is_instance(tmp_path):
    path = write(tmp_path, "old.service", """
        [Service]
        Environment=BLUEPRINT_ID=13 SERVICE_ID=0
        ExecStart=/usr/local/bin/trading-blueprint
    """)
    assert ids(lint(path)) == ["direct-run-unit"]


def test_binary_in_manager_cache_is_instance(tmp_path):
    path = write(tmp_path, "runtime.service", """
        [Service]
        ExecStart=/root/.cache/blueprint-manager/svc-13-0/trading-blueprint
    """)
    assert ids(lint(path)) == ["direct-run-unit"]


def test_configured_instance_binary_is_instance(tmp_path):
    path = write(tmp_path, "tb.service", "[Service]\nExecStart=/opt/tb/trading-blueprint --pretty\n")
    assert ids(lint(path)) == []
    assert ids(lint(path, config='instance_binaries = ["trading-blueprint"]')) == ["direct-run-unit"]


def test_helper_without_run_is_quiet(tmp_path):
    path = write(tmp_path, "validator.service", """
        [Service]
        Environment=SERVICE_ID=0
        ExecStart=/opt/ferry/ferry-validator --listen 127.0.0.1:9300
    """)
    assert ids(lint(path)) == []


def test_instance_behind_sh_c_is_found(tmp_path):
    path = write(tmp_path, "wrapped.service", """
        [Service]
        Environment=PROTOCOL=tangle
        ExecStart=/bin/sh -c 'exec /srv/ferry/bin/ferry-relay run --pretty'
    """)
    assert ids(lint(path)) == ["direct-run-unit"]


def test_correct_manager_unit_is_quiet(tmp_path):
    path = write(tmp_path, "ferry-manager.service", MANAGER_UNIT)
    assert lint(path).findings == []


def test_manager_through_cargo_is_quiet(tmp_path):
    path = write(tmp_path, "m.service", "[Service]\nExecStart=/usr/bin/cargo tangle blueprint run -k /srv/k\n")
    assert lint(path).findings == []


def test_unknown_manager_flags_are_warning(tmp_path):
    path = write(tmp_path, "m.service", """
        [Service]
        ExecStart=/root/.cargo/bin/cargo-tangle blueprint run -t --pretty \\
          --keystore-uri /srv/k \\
          --chain testnet
    """)
    findings = of_id(lint(path), "manager-unknown-flag")
    assert len(findings) == 1
    assert findings[0].severity == Severity.WARNING
    assert findings[0].line == 2
    assert "-t --pretty --keystore-uri --chain" in findings[0].summary
    assert "testnet" not in findings[0].summary


def test_unknown_flag_value_is_not_shown(tmp_path):
    path = write(tmp_path, "m.service",
                 "[Service]\nExecStart=/root/.cargo/bin/cargo-tangle blueprint run --password zqUnitSecret77\n")
    findings = of_id(lint(path), "manager-unknown-flag")
    assert len(findings) == 1
    assert "--password" in findings[0].summary
    assert "zqUnitSecret77" not in repr(findings[0])


def test_standalone_manager_own_flag_set(tmp_path):
    path = write(tmp_path, "bm.service",
                 "[Service]\nExecStart=/usr/local/bin/blueprint-manager -c /etc/bm.toml --keystore-uri /k --pretty\n")
    assert lint(path).findings == []


def test_dangling_continuation_ends_at_blank_line(tmp_path):
    path = write(tmp_path, "m.service", """
        [Service]
        ExecStart=/root/.cargo/bin/cargo-tangle blueprint run \\
          --no-vm \\

        Restart=always
    """)
    assert lint(path).findings == []


def test_kill_mode_on_manager_is_warning(tmp_path):
    for mode in ("process", "mixed", "none"):
        path = write(tmp_path, f"m-{mode}.service", MANAGER_UNIT.replace("Restart=always", f"KillMode={mode}"))
        findings = of_id(lint(path), "killmode-not-control-group")
        assert [f.severity for f in findings] == [Severity.WARNING], mode
        assert findings[0].line == 7


def test_kill_mode_control_group_is_quiet(tmp_path):
    path = write(tmp_path, "m.service", MANAGER_UNIT.replace("Restart=always", "KillMode=control-group"))
    assert lint(path).findings == []


def test_kill_mode_on_other_unit_is_quiet(tmp_path):
    path = write(tmp_path, "pricer.service", "[Service]\nExecStart=/opt/pricer\nKillMode=process\n")
    assert lint(path).findings == []


def test_dropin_without_reset_is_critical(tmp_path):
    write(tmp_path, "ferry-manager.service", MANAGER_UNIT)
    dropin = write(tmp_path, "ferry-manager.service.d/override.conf", """
        [Service]
        ExecStart=/root/.cargo/bin/cargo-tangle blueprint run --keystore-path /srv/other
    """)
    result = lint(tmp_path)
    findings = of_id(result, "dropin-overrides-execstart")
    assert len(findings) == 1
    assert findings[0].path == str(dropin)
    assert findings[0].line == 2
    assert findings[0].unit == "ferry-manager.service"


def test_dropin_with_reset_to_manager_is_quiet(tmp_path):
    write(tmp_path, "ferry-manager.service", MANAGER_UNIT)
    write(tmp_path, "ferry-manager.service.d/override.conf", """
        [Service]
        ExecStart=
        ExecStart=/root/.cargo/bin/cargo-tangle blueprint run --keystore-path /srv/other
    """)
    assert lint(tmp_path).findings == []


def test_dropin_replacing_manager_with_instance(tmp_path):
    write(tmp_path, "ferry-manager.service", MANAGER_UNIT)
    dropin = write(tmp_path, "ferry-manager.service.d/10-run.conf", """
        [Service]
        Environment=BLUEPRINT_ID=9
        ExecStart=
        ExecStart=/srv/ferry/bin/ferry-relay run
    """)
    result = lint(tmp_path)
    assert ids(result) == ["direct-run-unit", "dropin-overrides-execstart"]
    assert {f.path for f in result.findings} == {str(dropin)}


def test_dropin_alone_reads_fragment_beside_it(tmp_path):
    write(tmp_path, "ferry-manager.service", MANAGER_UNIT)
    dropin = write(tmp_path, "ferry-manager.service.d/override.conf",
                   "[Service]\nExecStart=/root/.cargo/bin/cargo-tangle blueprint run\n")
    findings = lint(dropin).findings
    assert [f.id for f in findings] == ["dropin-overrides-execstart"]


def test_dropin_alone_adding_manager_start(tmp_path):
    dropin = write(tmp_path, "x.service.d/override.conf",
                   "[Service]\nExecStart=/root/.cargo/bin/cargo-tangle blueprint run\n")
    assert ids(lint(dropin)) == ["dropin-overrides-execstart"]


def test_placeholders_in_unit_values(tmp_path):
    path = write(tmp_path, "m.service", """
        # Environment=SERVICE_ID=@SERVICE_ID@ in a comment is fine
        [Service]
        Environment=OPERATOR=@OPERATOR_ADDRESS@
        Environment=RPC=<rpc-url-here>
        Environment=PASS=changeme
        ExecStart=/root/.cargo/bin/cargo-tangle blueprint run
    """)
    findings = of_id(lint(path), "placeholder-value")
    assert [(f.line, f.severity) for f in findings] == [(3, Severity.WARNING), (4, Severity.WARNING),
                                                       (5, Severity.WARNING)]
    assert "@OPERATOR_ADDRESS@" in findings[0].summary


def test_redirection_is_not_placeholder(tmp_path):
    path = write(tmp_path, "x.service", "[Service]\nExecStart=/bin/sh -c 'a <b >c; d </dev/null'\n")
    assert lint(path).findings == []


def test_timer_placeholder_is_reported(tmp_path):
    path = write(tmp_path, "keeper@.timer", "[Timer]\nOnCalendar=<schedule>\n")
    assert ids(lint(path)) == ["placeholder-value"]


def test_header_comment_never_triggers(tmp_path):
    path = write(tmp_path, "doc.service", """
        # expect: critical direct-run-unit
        # ExecStart=/srv/ferry/bin/ferry-relay run
        # Environment=BLUEPRINT_ID=9 SERVICE_ID=5 <fill-me>
        ; KillMode=process
        [Service]
        ExecStart=/opt/pricer
    """)
    assert lint(path).findings == []


def test_allowed_unit_drops_to_info(tmp_path):
    path = write(tmp_path, "ferry-runtime.service", DIRECT_RUN_UNIT)
    config = """
        [[allow]]
        unit = "ferry-runtime.service"
        reason = "remote-target VM image"
    """
    finding = of_id(lint(path, config=config), "direct-run-unit")[0]
    assert finding.severity == Severity.INFO
    assert finding.allowed_reason == "remote-target VM image"


def test_severity_override_applies(tmp_path):
    path = write(tmp_path, "m.service", MANAGER_UNIT.replace("Restart=always", "KillMode=process"))
    finding = of_id(lint(path, config='[severity]\nkillmode-not-control-group = "critical"\n'),
                    "killmode-not-control-group")[0]
    assert finding.severity == Severity.CRITICAL
