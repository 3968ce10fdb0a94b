"""`bpm-doctor lint` end to end: a deploy repository linted by the real command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lint import schema_check
from tests.lint.helpers import write

REPOSITORY = Path(__file__).resolve().parents[2]
SECRET = "0xREDACTED_FIXTURE_VALUE"


def _right(root: Path) -> None:
    write(root, "deploy/ferry-manager.service", """
        [Unit]
        Description=Tangle Blueprint Manager

        [Service]
        WorkingDirectory=/srv/ferry
        ExecStart=/root/.cargo/bin/cargo-tangle blueprint run --protocol tangle --keystore-path /srv/ferry/keystore --data-dir /srv/ferry/data --settings-file /srv/ferry/settings.env
        Restart=always

        [Install]
        WantedBy=multi-user.target
    """)
    write(root, "deploy/settings.env", """
        BLUEPRINT_ID=9
        TANGLE_CONTRACT=0x00000000000000000000000000000000000a11ce
        STAKING_CONTRACT=0x00000000000000000000000000000000000b0b00
        STATUS_REGISTRY_CONTRACT=0x0000000000000000000000000000000000c4a11
        FERRY_SIGNER_KEY=0xREDACTED_FIXTURE_VALUE
    """, mode=0o600)
    write(root, "docs/OPERATIONS.md", """
        # Operations

        ## Going live

        1. `cargo tangle blueprint register --blueprint-id 9`
        2. `sudo systemctl enable --now ferry-manager`

        ## Local smoke test only

        ```bash
        SERVICE_ID=0 TEST_MODE=true cargo run --bin ferry-relay -- run
        ```
    """)
    write(root, "docker-compose.yml", """
        services:
          db:
            image: postgres:16
            restart: always
    """)


def _wrong(root: Path) -> None:
    write(root, "deploy/ferry-runtime.service", """
        [Service]
        Environment=BLUEPRINT_ID=9 SERVICE_ID=5 TEST_MODE=true
        Environment=FERRY_SIGNER_PRIVATE_KEY=0xREDACTED_FIXTURE_VALUE
        ExecStart=/srv/ferry/bin/ferry-relay run --password 0xREDACTED_FIXTURE_VALUE
    """)
    write(root, "scripts/start-operator.sh", """
        #!/bin/bash
        export BLUEPRINT_ID=9 SERVICE_ID=5
        nohup /srv/ferry/bin/ferry-relay run --rpc https://user:0xREDACTED_FIXTURE_VALUE@rpc.example.invalid/ &
    """)
    write(root, "docker/entrypoint.sh", """
        #!/bin/sh
        # bpm-doctor: ignore[container-runs-instance] image for the remote-target VMs only
        exec /usr/local/bin/ferry-relay run --service-id "$SERVICE_ID" "$@"
    """)
    write(root, "docs/runbook.md", """
        ## Starting the operator

        ```bash
        export SERVICE_ID=5
        ./target/release/ferry-relay run
        ```
    """)


def _lint(cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Run `python -m bpm_doctor lint` with an empty configuration and no cargo-tangle on PATH."""
    config = cwd / ".bpm-doctor.toml"
    config.write_text("", encoding="utf-8")
    empty_bin = cwd / ".empty-bin"
    empty_bin.mkdir(exist_ok=True)
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PATH": str(empty_bin)}
    return subprocess.run(
        [sys.executable, "-m", "bpm_doctor", "--config", str(config), "lint", *arguments],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=60, check=False,
    )


def test_right_repository_passes(tmp_path):
    _right(tmp_path)
    completed = _lint(tmp_path, "deploy", "docs", "docker-compose.yml")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.splitlines()[-1].startswith("bpm-doctor lint: 0 finding(s)")


def test_wrong_repository_fails(tmp_path):
    _right(tmp_path)
    _wrong(tmp_path)
    completed = _lint(tmp_path, ".")
    assert completed.returncode == 1, completed.stderr
    lines = completed.stdout.splitlines()
    assert "./deploy/ferry-runtime.service:4: critical direct-run-unit: unit ferry-runtime.service starts " \
           "the instance binary ferry-relay itself, bypassing the Blueprint Manager" in lines
    assert any(line.startswith("./scripts/start-operator.sh:3: critical script-launches-instance: ")
               for line in lines)
    assert any(line.startswith("./docs/runbook.md:5: warning runbook-direct-run: ") for line in lines)
    assert lines[-1] == ("bpm-doctor lint: 3 finding(s) (2 critical, 1 warning, 0 info), 1 suppressed, "
                         "in 8 file(s)")
    assert SECRET not in completed.stdout + completed.stderr


def test_json_report(tmp_path):
    _wrong(tmp_path)
    completed = _lint(tmp_path, "--format", "json", ".")
    assert completed.returncode == 1
    report = json.loads(completed.stdout)
    assert report["schema"] == "bpm-doctor/lint/1"
    assert report["exit_code"] == 1
    assert report["counts"] == {"info": 0, "warning": 1, "critical": 2, "suppressed": 1}
    assert report["complete"] is True
    direct = next(f for f in report["findings"] if f["id"] == "direct-run-unit")
    assert direct["path"] == "./deploy/ferry-runtime.service"
    assert direct["line"] == 4
    assert direct["blueprint_id"] == 9 and direct["service_id"] == 5
    assert direct["remedy"]
    assert report["suppressed"][0]["suppression"] == {"reason": "image for the remote-target VMs only"}
    assert "allowed_reason" not in report["suppressed"][0]
    assert SECRET not in completed.stdout


def test_sarif_report_to_file(tmp_path):
    _wrong(tmp_path)
    completed = _lint(tmp_path, "--format", "sarif", "--output", "lint.sarif", ".")
    assert completed.returncode == 1
    assert completed.stdout == ""
    text = (tmp_path / "lint.sarif").read_text(encoding="utf-8")
    assert SECRET not in text
    log = json.loads(text)
    assert schema_check.validate(log, schema_check.load_schema()) == []
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]}
    assert "deploy/ferry-runtime.service" in uris


def test_fail_on_critical_ignores_warnings(tmp_path):
    _wrong(tmp_path)
    completed = _lint(tmp_path, "--fail-on", "critical", "docs/runbook.md")
    assert completed.returncode == 0
    assert "warning runbook-direct-run" in completed.stdout


def test_fail_on_info_counts_info(tmp_path):
    write(tmp_path, "settings.env", """
        BLUEPRINT_ID=9
        SERVICE_ID=1
        TANGLE_CONTRACT=0x00000000000000000000000000000000000a11ce
        STAKING_CONTRACT=0x00000000000000000000000000000000000b0b00
        STATUS_REGISTRY_CONTRACT=0x0000000000000000000000000000000000c4a11
    """, mode=0o600)
    assert _lint(tmp_path, "settings.env").returncode == 0
    assert _lint(tmp_path, "--fail-on", "info", "settings.env").returncode == 1


def test_missing_path_exits_3_naming_it(tmp_path):
    _right(tmp_path)
    completed = _lint(tmp_path, "deploy", "no/such.service")
    assert completed.returncode == 3
    assert completed.stderr.strip().splitlines() == ["bpm-doctor: no/such.service: not found"]
    assert "1 path(s) could not be checked" in completed.stdout


def test_findings_outrank_unchecked_paths(tmp_path):
    _wrong(tmp_path)
    assert _lint(tmp_path, "deploy", "no/such.service").returncode == 1


def test_unknown_file_kind_is_not_checked(tmp_path):
    write(tmp_path, "notes.txt", "./bin/ferry-relay run --service-id 1\n")
    completed = _lint(tmp_path, "notes.txt")
    assert completed.returncode == 3
    assert "notes.txt: not a file kind bpm-doctor lint reads" in completed.stderr


def test_unchecked_path_newline_stays_one_line(tmp_path):
    write(tmp_path, "notes\nmore.txt", "./bin/ferry-relay run --service-id 1\n")
    completed = _lint(tmp_path, "notes\nmore.txt")
    assert completed.returncode == 3
    [line] = completed.stderr.splitlines()
    assert line.startswith("bpm-doctor: notes\\nmore.txt: not a file kind bpm-doctor lint reads")


def test_invalid_format_is_usage_error(tmp_path):
    assert _lint(tmp_path, "--format", "xml", ".").returncode == 3


def test_unwritable_output_exits_3(tmp_path):
    _right(tmp_path)
    completed = _lint(tmp_path, "--output", "missing-dir/report.txt", "deploy")
    assert completed.returncode == 3
    assert "missing-dir/report.txt: cannot write the report" in completed.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_exits_3(tmp_path):
    path = write(tmp_path, "x.service", "[Service]\nExecStart=/opt/x\n", mode=0o000)
    completed = _lint(tmp_path, str(path))
    assert completed.returncode == 3
    assert "x.service: cannot read" in completed.stderr


def test_broken_symlink_exits_3(tmp_path):
    (tmp_path / "gone.service").symlink_to(tmp_path / "nowhere.service")
    completed = _lint(tmp_path, "gone.service")
    assert completed.returncode == 3
    assert completed.stderr.strip() == "bpm-doctor: gone.service: cannot read: No such file or directory"
