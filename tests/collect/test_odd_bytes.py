"""Processes whose argv and environment hold arbitrary bytes, scanned by the real command line.

/proc gives argv and environ as bytes; the collector decodes them with
surrogateescape, so every report must still encode as strict UTF-8. The
command line runs with PYTHONIOENCODING=utf-8:strict, as under an
operator's en_US.UTF-8 locale, where Python's stdout rejects lone
surrogates (in the C locale it does not).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.live.conftest import BLUEPRINT_BASE
from tests.support import standins

pytestmark = pytest.mark.live

ODD_BLUEPRINT = BLUEPRINT_BASE + 71
PROCESSES = 12


def odd_word(rng: random.Random) -> bytes:
    """Return 1-40 random bytes without NUL, which argv and environ cannot carry."""
    return bytes(rng.choice(range(1, 256)) for _ in range(rng.randint(1, 40)))


@pytest.fixture(scope="module")
def odd_processes(tmp_path_factory):
    reason = standins.missing_compiler()
    if reason:
        pytest.skip(reason)
    binaries = standins.compile_standins(tmp_path_factory.mktemp("odd-bytes"))
    rng = random.Random(20_240_601)
    started = []
    try:
        for index in range(PROCESSES):
            argv = [os.fsencode(binaries.instance), b"run"] + [b"--x=" + odd_word(rng) for _ in range(3)] + [odd_word(rng)]
            env = {b"PATH": b"/usr/bin:/bin", b"TEST_MODE": b"true", b"BLUEPRINT_ID": str(ODD_BLUEPRINT).encode(),
                   b"SERVICE_ID": str(index).encode(), b"ODD_VALUE": odd_word(rng),
                   b"ODD_" + odd_word(rng).replace(b"=", b"_"): odd_word(rng),
                   b"DATA_DIR": b"/srv/" + odd_word(rng).replace(b"\n", b"_")}
            started.append(subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True))
        time.sleep(0.3)
        assert all(process.poll() is None for process in started), "a stand-in instance exited early"
        yield [process.pid for process in started]
    finally:
        for process in started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def doctor(*arguments: str, config: str = os.devnull) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "bpm_doctor", "--config", config, *arguments],
                          capture_output=True, timeout=120, env=environment)


@pytest.mark.parametrize("output_format", ["text", "json", "nagios"])
def test_report_is_strict_utf8(odd_processes, output_format):
    completed = doctor("check", "--format", output_format)
    assert completed.returncode == 2, completed.stderr.decode(errors="replace")
    report = completed.stdout.decode("utf-8")
    assert b"internal error" not in completed.stderr
    if output_format == "json":
        data = json.loads(report)
        hand_run = {finding["pid"] for finding in data["findings"] if finding["id"] == "hand-run-instance"
                    and finding.get("blueprint_id") == ODD_BLUEPRINT}
        assert hand_run == set(odd_processes)


def test_report_file_is_strict_utf8(odd_processes, tmp_path):
    path = tmp_path / "report.txt"
    completed = doctor("check", "--format", "text", "--output", str(path))
    assert completed.returncode == 2, completed.stderr.decode(errors="replace")
    text = path.read_bytes().decode("utf-8")
    assert text.count(f"blueprint {ODD_BLUEPRINT} service") >= PROCESSES


def test_snapshot_round_trip_keeps_findings(odd_processes, tmp_path):
    path = tmp_path / "odd.hostsnap"
    assert doctor("snapshot", "-o", str(path)).returncode == 0
    completed = doctor("check", "--format", "json", "--snapshot", str(path))
    assert completed.returncode == 2, completed.stderr.decode(errors="replace")
    data = json.loads(completed.stdout.decode("utf-8"))
    hand_run = {finding["pid"] for finding in data["findings"] if finding["id"] == "hand-run-instance"
                and finding.get("blueprint_id") == ODD_BLUEPRINT}
    assert hand_run == set(odd_processes)


def test_textfile_is_strict_utf8(odd_processes, tmp_path):
    path = tmp_path / "metrics.prom"
    completed = doctor("check", "--format", "nagios", "--textfile", str(path))
    assert completed.returncode == 2, completed.stderr.decode(errors="replace")
    assert "bpm_doctor_scan_success" in path.read_bytes().decode("utf-8")
