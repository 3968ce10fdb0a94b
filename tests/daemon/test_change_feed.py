"""The event change log: which processes a scan must read, and when it must read them all."""

from __future__ import annotations

import pytest

from bpm_doctor.daemon import change_feed
from bpm_doctor.daemon.change_feed import EventChangeLog


def started_log(pids=(1, 10, 11), full_pass_scans: int = 1000) -> EventChangeLog:
    """Return a log past its first scan, which never vouches."""
    changes = EventChangeLog(full_pass_scans=full_pass_scans)
    assert changes.take(list(pids)) is None
    return changes


def test_first_scan_reads_everything():
    assert EventChangeLog().take([1, 2, 3]) is None


def test_quiet_host_needs_no_reads():
    changes = started_log()
    assert changes.take([1, 10, 11]) == set()


def test_exec_and_exit_name_their_process():
    changes = started_log()
    changes.changed(10)
    changes.changed(11)
    assert changes.take([1, 10]) == {10, 11}
    assert changes.take([1, 10]) == set()


def test_forked_process_is_changed():
    changes = started_log()
    changes.forked(12)
    assert changes.take([1, 10, 11, 12]) == {12}


def test_unexplained_process_reads_everything():
    changes = started_log()
    assert changes.take([1, 10, 11, 12]) is None
    # Its fork event was queued just after the listing: still trusted.
    changes.forked(12)
    assert changes.take([1, 10, 11, 12]) == {12}
    assert changes.distrusted is None


def test_missing_fork_event_distrusts_for_good():
    changes = started_log()
    assert changes.take([1, 10, 11, 12]) is None
    assert changes.take([1, 10, 11, 12]) is None
    assert changes.distrusted is not None
    assert "pid 12" in changes.distrusted
    for _scan in range(3):
        assert changes.take([1, 10, 11, 12]) is None


def test_fork_before_listing_explains_pid():
    changes = started_log()
    changes.forked(12)
    # The listing ran while pid 12 was being created and missed it.
    assert changes.take([1, 10, 11]) == {12}
    assert changes.take([1, 10, 11, 12]) == set()
    assert changes.distrusted is None


def test_old_fork_explains_nothing():
    changes = started_log()
    changes.forked(12)
    assert changes.take([1, 10, 11]) == {12}
    assert changes.take([1, 10, 11]) == set()
    assert changes.take([1, 10, 11, 12]) is None


def test_lost_events_read_everything_once():
    changes = started_log()
    changes.lost()
    assert changes.take([1, 10, 11]) is None
    assert changes.take([1, 10, 11]) == set()


def test_lost_fork_events_never_distrust():
    changes = started_log()
    changes.lost()
    # Pid 12's fork event was among those lost.
    assert changes.take([1, 10, 11, 12]) is None
    assert changes.take([1, 10, 11, 12]) == set()
    assert changes.distrusted is None


def test_unexplained_then_lost_does_not_distrust():
    changes = started_log()
    assert changes.take([1, 10, 11, 12]) is None
    changes.lost()
    assert changes.take([1, 10, 11, 12]) is None
    assert changes.take([1, 10, 11, 12]) == set()
    assert changes.distrusted is None


def test_process_after_lost_events_never_distrusts():
    changes = started_log()
    changes.lost()
    assert changes.take([1, 10, 11]) is None
    # Pid 12 started while events were still being dropped, after that listing.
    assert changes.take([1, 10, 11, 12]) == set()
    assert changes.take([1, 10, 11, 12]) == set()
    assert changes.distrusted is None


def test_unexplained_process_counts_again_after_grace():
    changes = started_log()
    changes.lost()
    assert changes.take([1, 10, 11]) is None
    assert changes.take([1, 10, 11]) == set()
    assert changes.take([1, 10, 11, 12]) is None
    assert changes.take([1, 10, 11, 12]) is None
    assert changes.distrusted is not None


def test_failed_listing_reads_everything_without_distrust():
    changes = started_log()
    assert changes.take([]) is None
    # The next listing is compared with the last good one, not with the empty one.
    assert changes.take([1, 10, 11]) is None
    assert changes.take([1, 10, 11]) == set()
    assert changes.distrusted is None


def test_full_log_reads_everything(monkeypatch):
    monkeypatch.setattr(change_feed, "MAX_RECORDED", 3)
    changes = started_log()
    for pid in range(100, 110):
        changes.changed(pid)
    assert changes.take([1, 10, 11]) is None
    changes.changed(100)
    assert changes.take([1, 10, 11]) == {100}


@pytest.mark.parametrize("full_pass_scans", [2, 5])
def test_periodic_full_pass(full_pass_scans):
    changes = EventChangeLog(full_pass_scans=full_pass_scans)
    vouched = [changes.take([1, 10]) is not None for _scan in range(3 * full_pass_scans)]
    # Scan numbers 1, full_pass_scans, 2 * full_pass_scans, ... read everything.
    unvouched = [number for number, value in enumerate(vouched, start=1) if not value]
    assert unvouched == [1, *range(full_pass_scans, 3 * full_pass_scans + 1, full_pass_scans)]
