"""Turn kernel process events into the set of processes a scan must read again.

With the proc connector subscribed, every fork, exec, exit and change of
identity (uid, gid, session, command name, ptrace) on the host arrives as an
event. `EventChangeLog` collects their process ids between two scans, and
`take` hands them to the process collector, which then reads only those
processes, and the children of those that changed, instead of every process.

The log vouches for a scan only when it can check that events are arriving:

- not on the first scan, which has no earlier listing to compare with;
- not after the socket overflowed (ENOBUFS) or the log itself filled up,
  because events were lost. Netlink reports an overflow once, then drops
  events without a word until the queue is empty (netlink_overrun and
  netlink_rcv_wake in net/netlink/af_netlink.c). So fork events may also
  be missing for processes that the next listing shows, and those are not
  held against their fork events;
- not when a process appeared in /proc without a fork event, because then
  events may be missing. A listing may see a new process a moment before
  its fork event is queued. So the process counts as unexplained only when
  the event is still missing at the next scan. From then on the log never
  vouches again;
- not after a listing of /proc that came back empty, because the listing
  failed;
- not on every `full_pass_scans`-th scan. The connector drops an event
  without telling anyone when the kernel cannot allocate the message
  (cn_netlink_send_mult in drivers/connector/connector.c returns -ENOMEM).
  Some changes send no event at all: setpgid(2), and prctl(PR_SET_MM),
  with which a process holding CAP_SYS_RESOURCE can point its argv and
  environment elsewhere. A regular full pass bounds how long such a
  miss can last.
"""

from __future__ import annotations

# One scan in this many reads every known process, whatever the events reported.
FULL_PASS_SCANS = 10
# Past this many processes recorded between two scans, the log stops
# recording and the next scan reads everything, which costs less memory
# than a set without bound on a host that forks without pause.
MAX_RECORDED = 65536


class EventChangeLog:
    """The processes reported by process events since the last scan. Not thread-safe on its own."""

    def __init__(self, full_pass_scans: int = FULL_PASS_SCANS):
        self.full_pass_scans = full_pass_scans
        # Set once processes appeared without fork events; the log then never vouches again.
        self.distrusted: str | None = None
        self._changed: set[int] = set()
        self._forked: set[int] = set()
        self._forked_before: set[int] = set()
        self._lost = False
        self._previous_pids: set[int] | None = None
        self._awaiting_fork: set[int] = set()
        self._lost_last_scan = False
        self._scans = 0

    def forked(self, tgid: int) -> None:
        """Record a new process (not a new thread)."""
        if self._room_left():
            self._forked.add(tgid)
            self._changed.add(tgid)

    def changed(self, tgid: int) -> None:
        """Record an exec, exit or change of identity of a process."""
        if self._room_left():
            self._changed.add(tgid)

    def _room_left(self) -> bool:
        """Return True while the log may grow. Once it is full, count the events as lost."""
        if len(self._changed) < MAX_RECORDED and len(self._forked) < MAX_RECORDED:
            return True
        self._lost = True
        return False

    def lost(self) -> None:
        """Record that the socket overflowed and events were dropped."""
        self._lost = True

    def take(self, pids: list[int]) -> set[int] | None:
        """Return the pids recorded since the last call, or None when this scan must read every process.

        `pids` is the scan's listing of /proc, made before the events up to
        now were recorded.
        """
        current = set(pids)
        if not current:
            # A listing of /proc that failed (EMFILE, ENOMEM) shows no
            # process at all. Held against the next listing, every pid
            # would look new, so the last good listing stays the reference.
            self._lost = True
            return None
        changed, self._changed = self._changed, set()
        # A fork recorded just before the previous listing may belong to a
        # pid that the listing missed, so forks are kept for two scans.
        forked = self._forked | self._forked_before
        self._forked_before, self._forked = self._forked, set()
        previous, self._previous_pids = self._previous_pids, current
        lost, self._lost = self._lost, False
        self._scans += 1

        if previous is None or lost:
            self._awaiting_fork = set()
            self._lost_last_scan = lost
            return None
        still_missing = self._awaiting_fork - forked
        if still_missing and self.distrusted is None:
            self.distrusted = (f"{len(still_missing)} process(es) appeared in /proc without a fork event, "
                               f"such as pid {min(still_missing)}")
        self._awaiting_fork = set() if self._lost_last_scan else current - previous - forked
        self._lost_last_scan = False

        if self.distrusted or self._awaiting_fork or self._scans % self.full_pass_scans == 0:
            return None
        return changed
