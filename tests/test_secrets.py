"""Planted secret values never reach a report, a snapshot or a log line."""

from __future__ import annotations

import string
import subprocess
import sys

from hypothesis import given, settings, strategies as st

from bpm_doctor import report, snapshot
from bpm_doctor.diagnose import diagnose
from bpm_doctor.report import json_report, nagios, text

secrets = st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=8, max_size=40).map(
    lambda tail: "S3CR" + tail
)

PLANTED = """# a box with secrets everywhere the doctor reads
#=== host
arch: x86_64
#=== unit quill-runtime.service
fragment: /etc/systemd/system/quill-runtime.service
dropins: /etc/systemd/system/quill-runtime.service.d/key.conf
unitfile: enabled
active: active
sub: running
mainpid: 300
#=== file /etc/systemd/system/quill-runtime.service
[Service]
EnvironmentFile=/srv/q/settings.env
Environment=SIGNER_PRIVATE_KEY={s} BLUEPRINT_ID=1 SERVICE_ID=2 TEST_MODE=true
ExecStart=/srv/q/quill run --password {s} --http-rpc-url https://operator:{s}@rpc.example.invalid/v3/{s}
#=== file /etc/systemd/system/quill-runtime.service.d/key.conf
[Service]
Environment="API_TOKEN={s}"
#=== file /srv/q/settings.env
BLUEPRINT_ID=1
PRIVATE_KEY={s}
export GAS_KEY="{s}" # do not share
RPC=https://user:{s}@rpc.example.invalid/
#=== proc 100
ppid: 1
cgroup: /system.slice/blueprint-manager.service
exe: /root/.cargo/bin/cargo-tangle
cwd: /srv/q
argv: /root/.cargo/bin/cargo-tangle blueprint run --settings-file /srv/q/settings.env --http-rpc-url https://u:{s}@rpc.example.invalid/
env: OPERATOR_PRIVATE_KEY={s}
env: SERVICE_ID={s}
env: DATA_DIR=https://u:{s}@h.example.invalid/x
env: TEST_MODE=true
#=== proc 300
ppid: 1
cgroup: /system.slice/quill-runtime.service
exe: /srv/q/quill
cwd: /srv/q
argv: /srv/q/quill run --private-key={s} --api-token {s} FOO_SECRET={s}
env: BLUEPRINT_ID=1
env: SERVICE_ID=2
env: SIGNER_PRIVATE_KEY={s}
env: KEYSTORE_URI=file://user:{s}@/tmp/ks
#=== show-environment
OPERATOR_PRIVATE_KEY={s}
SERVICE_ID=3
#=== crontab root
@reboot API_KEY={s} /srv/q/quill run --password {s}
#=== journal quill-runtime.service
Main process exited, code=exited, status=1/FAILURE token={s} https://u:{s}@h/
"""


def _outputs(snapshot_text: str) -> dict[str, str]:
    parsed = snapshot.parse(snapshot_text, "planted.snap")
    findings, view = diagnose(parsed)
    result = report.verdict(findings, parsed, view)
    return {
        "text": text.render(result),
        "json": json_report.render(result),
        "nagios": nagios.render(result),
        "snapshot": snapshot.render(parsed),
    }


@settings(max_examples=60, deadline=None)
@given(secret=secrets)
def test_planted_secret_absent_from_every_output(secret):
    outputs = _outputs(PLANTED.replace("{s}", secret))
    for name, output in outputs.items():
        assert secret not in output, f"secret leaked into {name} output"


def test_planted_box_still_reports_findings():
    outputs = _outputs(PLANTED.replace("{s}", "S3CRexample"))
    assert '"id": "hand-run-instance"' in outputs["json"]
    assert '"id": "global-environment"' in outputs["json"]


def test_cli_logs_and_reports_hide_secret(tmp_path):
    secret = "S3CRcliPlantedValue42"
    path = tmp_path / "planted.snap"
    path.write_text(PLANTED.replace("{s}", secret))
    copy = tmp_path / "copy.snap"
    for arguments in (["check", "--snapshot", str(path)],
                      ["check", "--snapshot", str(path), "--format", "json"],
                      ["check", "--snapshot", str(path), "--format", "nagios"],
                      ["check", "--snapshot", str(path), "--output", str(copy)]):
        completed = subprocess.run([sys.executable, "-m", "bpm_doctor", "-vv", *arguments],
                                   capture_output=True, text=True, check=False)
        assert completed.returncode == 2, completed.stderr
        assert secret not in completed.stdout
        assert secret not in completed.stderr
    assert secret not in copy.read_text()
