"""Environment and settings files: missing keys, SERVICE_ID, divergence, placeholders, modes."""

from __future__ import annotations

import os

from bpm_doctor.model import Severity
from tests.lint.helpers import ids, lint, of_id, write

COMPLETE_SETTINGS = """
    BLUEPRINT_ID=9
    TANGLE_CONTRACT=0x00000000000000000000000000000000000a11ce
    STAKING_CONTRACT=0x00000000000000000000000000000000000b0b00
    STATUS_REGISTRY_CONTRACT=0x0000000000000000000000000000000000c4a11
"""


def test_complete_settings_are_quiet(tmp_path):
    path = write(tmp_path, "settings.env", COMPLETE_SETTINGS, mode=0o600)
    assert lint(path).findings == []


def test_settings_missing_keys_is_warning(tmp_path):
    path = write(tmp_path, "settings.env", "BLUEPRINT_ID=9\nRUST_LOG=info\n", mode=0o600)
    findings = of_id(lint(path), "settings-missing-key")
    assert len(findings) == 1
    assert findings[0].severity == Severity.WARNING
    assert findings[0].line is None
    assert "TANGLE_CONTRACT, STAKING_CONTRACT, STATUS_REGISTRY_CONTRACT" in findings[0].summary


def test_settings_named_file_without_protocol_keys(tmp_path):
    path = write(tmp_path, "quill5-settings.env", "QUILL_RPC=https://rpc.example.invalid/\n", mode=0o600)
    assert ids(lint(path)) == ["settings-missing-key"]


def test_app_env_file_is_not_settings(tmp_path):
    path = write(tmp_path, ".env", "DATABASE_URL=postgres://localhost/app\nLOG_LEVEL=debug # noisy\n", mode=0o600)
    assert lint(path).findings == []


def test_contract_keys_make_a_file_settings(tmp_path):
    path = write(tmp_path, "deploy/ferry.env", "TANGLE_CONTRACT=0x00000000000000000000000000000000000a11ce\n",
                 mode=0o600)
    assert ids(lint(path)) == ["settings-missing-key"]


def test_instance_env_file_is_not_settings(tmp_path):
    path = write(tmp_path, "operator.env", "BLUEPRINT_ID=21\nSERVICE_ID=1\n", mode=0o600)
    assert lint(path).findings == []


def test_settings_named_by_manager_unit(tmp_path):
    write(tmp_path, "ferry-manager.service",
          "[Service]\nExecStart=/root/.cargo/bin/cargo-tangle blueprint run --settings-file /srv/ferry/ferry.env\n")
    write(tmp_path, "ferry.env", "RUST_LOG=info\n", mode=0o600)
    assert ids(lint(tmp_path)) == ["settings-missing-key"]


def test_settings_service_id_is_info(tmp_path):
    path = write(tmp_path, "settings.env", COMPLETE_SETTINGS + "SERVICE_ID=3\n", mode=0o600)
    findings = of_id(lint(path), "settings-service-id")
    assert [(f.severity, f.line) for f in findings] == [(Severity.INFO, 5)]


def test_divergent_lines_hide_values(tmp_path):
    path = write(tmp_path, "settings.env", """
        BLUEPRINT_ID=9   # sandbox
        TANGLE_CONTRACT=0x00000000000000000000000000000000000a11ce
        STAKING_CONTRACT=0x00000000000000000000000000000000000b0b00
        export STATUS_REGISTRY_CONTRACT=0x0000000000000000000000000000000000c4a11
        SIGNER_KEY=zqEnvSecret42 # rotated monthly
    """, mode=0o600)
    findings = of_id(lint(path), "settings-divergence")
    assert [(f.line, f.severity) for f in findings] == [(1, Severity.WARNING), (4, Severity.WARNING),
                                                       (5, Severity.WARNING)]
    assert "inline comment" in findings[0].summary
    assert "export" in findings[1].summary
    assert all("zqEnvSecret42" not in repr(f) for f in findings)


def test_divergence_only_in_settings(tmp_path):
    path = write(tmp_path, "app.env", "NAME=value # comment\n", mode=0o600)
    assert lint(path).findings == []


def test_placeholders_in_env_values(tmp_path):
    path = write(tmp_path, "settings.env", COMPLETE_SETTINGS + "SERVICE_ID=@SERVICE_ID@\nKEY=<paste-key>\n",
                 mode=0o600)
    findings = of_id(lint(path), "placeholder-value")
    assert [f.line for f in findings] == [5, 6]


def test_template_files_may_hold_placeholders(tmp_path):
    path = write(tmp_path, ".env.example", "PRIVATE_KEY=<paste-key>\nRPC=changeme\n", mode=0o600)
    assert of_id(lint(path), "placeholder-value") == []


def test_readable_secret_file_outside_git(tmp_path):
    path = write(tmp_path, "operator.env", "OPERATOR_PRIVATE_KEY=zqModeSecret1\n", mode=0o644)
    findings = of_id(lint(path), "secret-file-permissions")
    assert len(findings) == 1
    assert "OPERATOR_PRIVATE_KEY" in findings[0].summary
    assert "0644" in findings[0].summary
    assert "zqModeSecret1" not in repr(findings[0])


def test_private_secret_file_is_quiet(tmp_path):
    path = write(tmp_path, "operator.env", "OPERATOR_PRIVATE_KEY=zqModeSecret1\n", mode=0o600)
    assert of_id(lint(path), "secret-file-permissions") == []


def test_file_without_secret_keys_is_quiet(tmp_path):
    path = write(tmp_path, "operator.env", "RUST_LOG=info\n", mode=0o644)
    assert of_id(lint(path), "secret-file-permissions") == []


def test_mode_in_git_work_tree_is_ignored(tmp_path):
    os.mkdir(tmp_path / ".git")
    path = write(tmp_path, "deploy/operator.env", "OPERATOR_PRIVATE_KEY=zqModeSecret1\n", mode=0o644)
    assert of_id(lint(path), "secret-file-permissions") == []


def test_etc_default_file_is_env(tmp_path):
    path = write(tmp_path, "etc/default/blueprint-manager", "SERVICE_ID=<approved>\n", mode=0o600)
    assert ids(lint(path)) == ["placeholder-value"]
