"""bench/scan_bench.py runs end to end on a small load and prints its tables.

Only the output's shape is checked, never the figures: timings depend on
the machine and its load.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.mark.live
def test_bench_prints_tables():
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "bench/scan_bench.py", "--counts", "200", "--soak-count", "200",
         "--soak-seconds", "5", "--trials", "3", "--rounds", "3", "--max-seconds", "90"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=180,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout
    assert "| cold / floor | cold / warm |" in output
    assert "## Process scan cost" in output
    assert "\n| 200 | " in output
    assert "## Daemon over 5 s at a 15 s interval with 200 sleepers" in output
    assert "| exec events | CPU share of one core | peak RSS (VmHWM) |" in output
    assert "## Hand-run exec to metric change (3 trials each)" in output
    assert "| exec events | interval s | trials | p50 s | p95 s | max s | no change seen |" in output
    assert "Traceback" not in result.stderr
    assert elapsed < 150
