"""Secrets in systemd's global environment, unit environments and the journal never reach an output.

Runs inside the real systemd of tests/systemd (its session fixture,
imported here). `systemctl set-environment` plants secrets in the manager's
global environment, which every unit started afterwards inherits; a running
direct-run unit and a failed unit carry more in Environment=, a drop-in,
argv and their journal. The real bpm-doctor runs inside with -vv.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.systemd.conftest import systemd_host  # noqa: F401 - the session fixture that boots systemd
from tests.systemd.host import InstalledUnits, SystemdHost

pytestmark = pytest.mark.systemd

BLUEPRINT = 9077
SECRETS = {
    "global environment": "S3CRglobalEnvMarble",
    "global environment URL": "S3CRglobalUrlBasalt",
    "unit Environment": "S3CRunitEnvCedar",
    "drop-in": "S3CRdropinAlder",
    "unit argv": "S3CRunitArgvRowan",
    "journal": "S3CRjournalHazel",
    "journal URL": "S3CRjournalUrlAspen",
}
GLOBAL_ASSIGNMENTS = (
    f"OPERATOR_PRIVATE_KEY={SECRETS['global environment']}",
    f"RPC_URL=https://op:{SECRETS['global environment URL']}@rpc.example.invalid/v3/x",
    "SERVICE_ID=3",
)


def direct_unit(host: SystemdHost) -> str:
    return (
        "[Service]\n"
        f"Environment=BLUEPRINT_ID={BLUEPRINT} SERVICE_ID=5 TEST_MODE=true "
        f"SIGNER_PRIVATE_KEY={SECRETS['unit Environment']}\n"
        f"ExecStart={host.binaries.instance} run --password {SECRETS['unit argv']}\n"
    )


FAILING_UNIT = (
    "[Service]\n"
    f"Environment=BLUEPRINT_ID={BLUEPRINT} SERVICE_ID=6\n"
    "ExecStart=/bin/sh -c 'echo \"Error: token=" + SECRETS["journal"] + " rpc https://u:"
    + SECRETS["journal URL"] + "@rpc.example.invalid/ failed\"; exit 1'\n"
)


@pytest.fixture(scope="module")
def outputs(systemd_host: SystemdHost) -> dict[str, str]:
    host = systemd_host
    directory = host.scenario_directory("secrets")
    host.systemctl("set-environment", *GLOBAL_ASSIGNMENTS)
    try:
        with InstalledUnits(host) as units:
            units.install("quill-secret.service", direct_unit(host),
                          dropins={"10-token.conf": f"[Service]\nEnvironment=\"API_TOKEN={SECRETS['drop-in']}\"\n"})
            units.install("quill-failing.service", FAILING_UNIT)
            host.systemctl("start", "quill-secret.service")
            host.systemctl("start", "quill-failing.service", check=False)
            host.wait_for(lambda: host.ready_instances("quill-secret.service"), "quill-secret.service to run")
            host.wait_for(lambda: host.show("quill-failing.service", "ActiveState")["ActiveState"] == "failed",
                          "quill-failing.service to fail")
            time.sleep(0.5)  # let journald store the failing unit's output
            found: dict[str, str] = {}
            for output_format in ("text", "json", "nagios"):
                completed = host.doctor("-vv", "check", "--format", output_format)
                found[f"check {output_format}"] = completed.stdout
                found[f"check {output_format} log"] = completed.stderr
            textfile = directory / "metrics.prom"
            completed = host.doctor("check", "--format", "json", "--textfile", str(textfile))
            found["check --textfile"] = textfile.read_text()
            snapshot_path = directory / "host.hostsnap"
            completed = host.doctor("-vv", "snapshot", "--output", str(snapshot_path))
            assert completed.returncode == 0, completed.stderr
            found["snapshot file"] = snapshot_path.read_text(errors="replace")
            found["snapshot log"] = completed.stderr
            found["journal as planted"] = "\n".join(host.journal("quill-failing.service"))
            found["global environment as planted"] = host.systemctl("show-environment").stdout
    finally:
        host.systemctl("unset-environment", *(assignment.split("=", 1)[0] for assignment in GLOBAL_ASSIGNMENTS),
                       check=False)
    return found


def test_secrets_were_planted(outputs):
    assert SECRETS["global environment"] in outputs["global environment as planted"]
    assert SECRETS["journal"] in outputs["journal as planted"]


def test_global_environment_finding_names_variables_only(outputs):
    report = json.loads(outputs["check json"])
    found = [finding for finding in report["findings"] if finding["id"] == "global-environment"]
    assert found, report["findings"]
    assert "OPERATOR_PRIVATE_KEY" in " ".join(found[0]["evidence"])


def test_snapshot_holds_redacted_sources(outputs):
    snapshot = outputs["snapshot file"]
    assert "#=== show-environment" in snapshot
    assert "OPERATOR_PRIVATE_KEY=<redacted>" in snapshot
    assert "#=== journal quill-failing.service" in snapshot
    assert "#=== file /run/systemd/system/quill-secret.service.d/10-token.conf" in snapshot


@pytest.mark.parametrize("place", sorted(SECRETS))
def test_secret_absent_from_doctor_outputs(outputs, place):
    doctor_outputs = {name: text for name, text in outputs.items() if not name.endswith("as planted")}
    leaked = [name for name, text in doctor_outputs.items() if SECRETS[place] in text]
    assert leaked == [], f"{place} secret found in: {', '.join(leaked)}"
