"""The shipped example snapshots give the verdicts the README shows."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name, exit_code, ids", [
    ("healthy.hostsnap", 0, set()),
    ("handrun-duplicate.hostsnap", 2, {"duplicate-service", "hand-run-instance", "test-mode"}),
    ("orphan-after-restart.hostsnap", 2, {"orphan-instance", "killmode-not-control-group"}),
])
def test_example_verdict(name, exit_code, ids):
    completed = subprocess.run(
        [sys.executable, "-m", "bpm_doctor", "check", "--snapshot", str(EXAMPLES / name), "--format", "nagios"],
        capture_output=True, text=True, check=False,
    )
    assert completed.returncode == exit_code, completed.stderr
    reported = {line.split()[1].rstrip(":") for line in completed.stdout.splitlines()[1:]}
    assert reported == ids
