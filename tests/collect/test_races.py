"""Scans stay correct while processes start, exit and turn zombie underneath them."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from bpm_doctor.collect import collect_host
from bpm_doctor.config import Config
from bpm_doctor.diagnose import diagnose

# Unique per test run, so churn from another test session cannot match.
CHURN_BLUEPRINT = 7_000_000_000 + os.getpid()


def _churn(stop: threading.Event, started: list[int]) -> None:
    """Start short-lived processes that look like hand-run instances, each for its own service."""
    service = 0
    children: list[subprocess.Popen] = []
    while not stop.is_set():
        service += 1
        child = subprocess.Popen(
            ["sleep", "0.0%d" % (service % 9 + 1)],
            env={"BLUEPRINT_ID": str(CHURN_BLUEPRINT), "SERVICE_ID": str(service), "PATH": "/usr/bin:/bin"},
        )
        children.append(child)
        started.append(child.pid)
        # Reap only every few rounds, so some children sit as zombies during scans.
        if len(children) > 20:
            for old in children[:10]:
                old.wait()
            del children[:10]
    for child in children:
        child.wait()


@pytest.mark.live
def test_scans_survive_process_churn():
    stop = threading.Event()
    started: list[int] = []
    churner = threading.Thread(target=_churn, args=(stop, started), daemon=True)
    churner.start()
    try:
        deadline = time.monotonic() + 8
        scans = 0
        while time.monotonic() < deadline:
            snapshot = collect_host(Config())
            findings, _view = diagnose(snapshot, Config())
            scans += 1
            ids = {finding.id for finding in findings}
            assert "check-failed" not in ids
            churn_findings = [f for f in findings if f.blueprint_id == CHURN_BLUEPRINT]
            # Every churned process serves its own service id, so a duplicate
            # could only come from two processes mixed under one pid.
            assert not [f for f in churn_findings if f.id == "duplicate-service"]
            assert not [f for f in churn_findings if f.id == "orphan-instance"]
    finally:
        stop.set()
        churner.join(timeout=10)
    assert scans >= 5
    assert len(started) > 100
