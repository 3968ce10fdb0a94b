"""The unit file cache: an unchanged file is not read again, a changed one is."""

from __future__ import annotations

import os

from bpm_doctor.collect import units
from bpm_doctor.collect.units import UnitFileCache, collect_units
from bpm_doctor.model import Snapshot

MANAGER_UNIT = "[Service]\nExecStart=/usr/local/bin/cargo-tangle blueprint run --data-dir /srv/bpm\n"
DISTRIBUTION_UNIT = "[Service]\nExecStart=/usr/sbin/cron -f\n"


def scan(root, cache) -> Snapshot:
    snapshot = Snapshot(source="test")
    collect_units(snapshot, set(), (str(root),), cache)
    return snapshot


def counting_reads(monkeypatch) -> list[str]:
    reads: list[str] = []
    real_read = units._read_text

    def read_text(path, snapshot):
        reads.append(os.path.basename(path))
        return real_read(path, snapshot)

    monkeypatch.setattr(units, "_read_text", read_text)
    monkeypatch.setattr(units, "systemd_is_running", lambda: False)
    return reads


def test_unchanged_files_are_not_read_again(tmp_path, monkeypatch):
    (tmp_path / "bpm.service").write_text(MANAGER_UNIT)
    (tmp_path / "cron.service").write_text(DISTRIBUTION_UNIT)
    reads = counting_reads(monkeypatch)
    cache = UnitFileCache()
    first = scan(tmp_path, cache)
    second = scan(tmp_path, cache)
    assert sorted(reads) == ["bpm.service", "cron.service"]
    assert set(first.units) == set(second.units) == {"bpm.service"}
    assert second.files == first.files


def test_changed_file_is_read_again(tmp_path, monkeypatch):
    unit = tmp_path / "cron.service"
    unit.write_text(DISTRIBUTION_UNIT)
    reads = counting_reads(monkeypatch)
    cache = UnitFileCache()
    assert scan(tmp_path, cache).units == {}
    unit.write_text(MANAGER_UNIT)
    os.utime(unit, ns=(1, 1))
    assert set(scan(tmp_path, cache).units) == {"cron.service"}
    assert reads == ["cron.service", "cron.service"]


def test_removed_file_leaves_cache(tmp_path, monkeypatch):
    (tmp_path / "bpm.service").write_text(MANAGER_UNIT)
    counting_reads(monkeypatch)
    cache = UnitFileCache()
    scan(tmp_path, cache)
    (tmp_path / "bpm.service").unlink()
    assert scan(tmp_path, cache).units == {}
    assert cache._entries == {}
