"""Kernel process events: re-scan soon after a process execs, instead of at the next interval.

The proc connector (netlink family NETLINK_CONNECTOR) multicasts one message
per fork, exec and exit on the host. `open_listener` subscribes to it.
`ExecWatcher`, a thread of `bpm-doctor serve`, calls its `trigger` (a scan)
when a process execs. The scan comes at least `DEBOUNCE_SECONDS` after the
first exec of a burst, so the shell's fork, exec and the program's own exec
all land in one scan, and at most once per `MIN_GAP_SECONDS`. A burst is
skipped when none of its processes both still runs and could be a
blueprint process (the daemon passes `Scanner.exec_matters`). The exit of a
process the last scan counted as an instance or manager triggers a scan the
same way, so its findings clear as fast. The interval scans go on
regardless, so a lost event only delays a finding until the next one.

Privilege: subscribing needs CAP_NET_ADMIN, and the kernel only serves
subscribers in the initial user and pid namespaces (cn_proc_mcast_ctl in
drivers/connector/cn_proc.c). Without that, or on a kernel built without
CONFIG_PROC_EVENTS, `open_listener` raises `Unavailable` with the reason,
the daemon logs `exec_events_unavailable` once and only polls.

The watcher also keeps an `EventChangeLog` of every process that forked,
exec'd, exited or changed identity, and answers the process collector's
`changed_since_last_scan` from it (see bpm_doctor.daemon.change_feed). The
socket is non-blocking, and every read of it, by this thread or by a scan
in another thread, handles what it read under one lock, which also guards
the pending burst. So when a scan calls it, every event queued before the
call has been recorded.

Message layout, from the Linux UAPI headers:
- linux/netlink.h: NETLINK_CONNECTOR = 11, struct nlmsghdr (16 bytes:
  u32 len, u16 type, u16 flags, u32 seq, u32 pid), NLMSG_DONE = 3;
- linux/connector.h: CN_IDX_PROC = 1, CN_VAL_PROC = 1, struct cn_msg
  (20 bytes: struct cb_id {u32 idx, u32 val}, u32 seq, u32 ack, u16 len,
  u16 flags, then `len` bytes of data);
- linux/cn_proc.h: enum proc_cn_mcast_op (PROC_CN_MCAST_LISTEN = 1,
  PROC_CN_MCAST_IGNORE = 2), struct proc_event (u32 what, u32 cpu,
  u64 timestamp_ns, then the event_data union), PROC_EVENT_NONE = 0 (the
  acknowledgement, event_data.ack.err), PROC_EVENT_FORK = 0x1 (event data
  pid_t parent_pid, parent_tgid, child_pid, child_tgid), and the others,
  such as PROC_EVENT_EXEC = 0x2 and PROC_EVENT_EXIT = 0x80000000, whose
  event data start with (pid_t process_pid, pid_t process_tgid).
"""

from __future__ import annotations

import errno
import os
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from bpm_doctor import log
from bpm_doctor.collect.processes import read_stat
from bpm_doctor.daemon.change_feed import EventChangeLog

NETLINK_CONNECTOR = 11
NLMSG_DONE = 3
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_NONE = 0x00000000
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT_HEADER = struct.Struct("=IIQ")
_EVENT_PIDS = struct.Struct("=ii")
_FORK_PIDS = struct.Struct("=iiii")
_ACK_ERROR = struct.Struct("=I")
_OPERATION = struct.Struct("=I")

DEBOUNCE_SECONDS = 0.2
MIN_GAP_SECONDS = 1.0
ACK_TIMEOUT_SECONDS = 1.0
# Socket receive buffer; a burst of process events larger than this is
# lost (ENOBUFS), which triggers a scan anyway.
RECEIVE_BUFFER_BYTES = 4 << 20
_POLL_SECONDS = 0.5
# At most one exec_events_lost warning per this many seconds; a host that
# forks in bursts can overflow the socket often.
LOST_LOG_SECONDS = 60.0


class Unavailable(Exception):
    """The proc connector cannot be used here; the message gives the reason."""


def _operation_message(operation: int, sequence: int) -> bytes:
    """Build the netlink message that sends PROC_CN_MCAST_LISTEN or _IGNORE to the connector."""
    payload = _OPERATION.pack(operation)
    connector = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, sequence, 0, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(connector), NLMSG_DONE, 0, 0, 0) + connector


class ProcessEvent(NamedTuple):
    """One process event: for a fork, `pid` and `tgid` are the parent's and `child_*` the new task's."""

    what: int
    pid: int
    tgid: int
    ack: int
    child_pid: int = 0
    child_tgid: int = 0


def parse_events(data: bytes) -> Iterator[ProcessEvent]:
    """Yield a ProcessEvent for each process event in one datagram.

    For PROC_EVENT_NONE, `pid` is the acknowledgement's error number.
    Messages of other connectors, and truncated ones, are skipped.
    """
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length = _NLMSGHDR.unpack_from(data, offset)[0]
        if length < _NLMSGHDR.size or offset + length > len(data):
            return
        body = offset + _NLMSGHDR.size
        if length >= _NLMSGHDR.size + _CN_MSG.size + _EVENT_HEADER.size:
            index, value, _sequence, ack, _size, _flags = _CN_MSG.unpack_from(data, body)
            event = body + _CN_MSG.size
            if (index, value) == (CN_IDX_PROC, CN_VAL_PROC):
                what = _EVENT_HEADER.unpack_from(data, event)[0]
                event_data = event + _EVENT_HEADER.size
                end = offset + length
                if what == PROC_EVENT_NONE and end >= event_data + _ACK_ERROR.size:
                    yield ProcessEvent(what, _ACK_ERROR.unpack_from(data, event_data)[0], 0, ack)
                elif what == PROC_EVENT_FORK and end >= event_data + _FORK_PIDS.size:
                    parent_pid, parent_tgid, child_pid, child_tgid = _FORK_PIDS.unpack_from(data, event_data)
                    yield ProcessEvent(what, parent_pid, parent_tgid, ack, child_pid, child_tgid)
                elif what != PROC_EVENT_FORK and end >= event_data + _EVENT_PIDS.size:
                    yield ProcessEvent(what, *_EVENT_PIDS.unpack_from(data, event_data), ack)
        # Netlink messages are aligned to 4 bytes (NLMSG_ALIGN).
        offset += (length + 3) & ~3


def _reason(error: OSError) -> str:
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    hints = {
        errno.EPERM: "needs CAP_NET_ADMIN",
        errno.EACCES: "needs CAP_NET_ADMIN",
        errno.EPROTONOSUPPORT: "kernel without the proc connector (CONFIG_PROC_EVENTS)",
        errno.EAFNOSUPPORT: "kernel without netlink",
    }
    hint = hints.get(error.errno or 0)
    return f"{name}: {hint}" if hint else f"{name}: {error.strerror or error}"


def open_listener(ack_timeout: float = ACK_TIMEOUT_SECONDS) -> socket.socket:
    """Subscribe to process events and return the netlink socket.

    Raises Unavailable when the socket cannot be created or bound, or the
    kernel does not acknowledge the subscription within `ack_timeout`
    seconds. The kernel ignores, without an acknowledgement, a request from
    outside the initial user and pid namespaces.
    """
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    except OSError as error:
        raise Unavailable(_reason(error)) from error
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER_BYTES)  # SO_RCVBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        sock.bind((0, CN_IDX_PROC))
        sequence = random.randrange(1, 1 << 31)
        sock.send(_operation_message(PROC_CN_MCAST_LISTEN, sequence))
        _wait_for_ack(sock, ack_timeout)
    except OSError as error:
        sock.close()
        raise Unavailable(_reason(error)) from error
    except Unavailable:
        sock.close()
        raise
    return sock


def _wait_for_ack(sock: socket.socket, timeout: float) -> None:
    """Wait for the PROC_EVENT_NONE acknowledgement of our request; events for other subscribers may come first."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Unavailable(f"timed out after {timeout:g} s waiting for the kernel to acknowledge the "
                              "subscription; it ignores subscribers outside the initial user and pid namespaces")
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        for event in parse_events(data):
            # cn_proc_ack replies with ack = our cn_msg.ack (0) + 1. The
            # sequence number is not ours on Linux 6.18, so it is not compared.
            if event.what == PROC_EVENT_NONE and event.ack == 1:
                if event.pid:
                    raise Unavailable(_reason(OSError(event.pid, os.strerror(event.pid))))
                return


def close_listener(sock: socket.socket) -> None:
    """Unsubscribe (the kernel counts subscribers and sends events while any remain) and close."""
    try:
        sock.send(_operation_message(PROC_CN_MCAST_IGNORE, 0))
    except OSError:
        pass
    sock.close()


def _parent_pid(pid: int) -> int | None:
    stat = read_stat(pid)
    return stat.ppid if stat is not None else None


def _is_live(pid: int) -> bool:
    """Return True while /proc/PID exists and the process is not a zombie."""
    stat = read_stat(pid)
    return stat is not None and not stat.exited


class ExecWatcher(threading.Thread):
    """Read process events and call `trigger` after an exec, debounced and rate-limited.

    `trigger` runs in this thread and should scan. `watched_pids` returns the
    pids whose exit also triggers (the last scan's instances and managers).
    `on_exec(pid)`, such as ProcessCache.forget, is called for every exec
    that counts: not one by this daemon or by a child of it (systemctl
    started by a scan), which is ignored, nor one whose process is gone.
    When the scan is due, `matters(pid)` decides for each exec'd process
    whether it is worth the scan. The default takes any process that still
    runs, because one that exited cannot be seen. On a busy host most execs
    are short commands or unrelated programs, and this keeps them from
    costing a scan each second. The next interval scan reads them anyway.

    The watcher is also the process collector's change feed
    (`changed_since_last_scan`), which works without the thread running.
    """

    def __init__(self, sock: socket.socket, trigger: Callable[[], None],
                 watched_pids: Callable[[], set[int]] = set,
                 on_exec: Callable[[int], None] | None = None,
                 matters: Callable[[int], bool] | None = None,
                 debounce_seconds: float = DEBOUNCE_SECONDS, min_gap_seconds: float = MIN_GAP_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic):
        super().__init__(name="exec-events", daemon=True)
        self.sock = sock
        self.sock.setblocking(False)
        self.trigger = trigger
        self.watched_pids = watched_pids
        self.on_exec = on_exec
        self.matters = matters
        self.debounce_seconds = debounce_seconds
        self.min_gap_seconds = min_gap_seconds
        self._monotonic = monotonic
        self._stop_event = threading.Event()
        # Held while reading the socket and recording what was read, by
        # this thread or by a scan asking for changes.
        self._socket_lock = threading.RLock()
        self.changes = EventChangeLog()
        self._failed = False
        self._due: float | None = None
        self._last_trigger: float | None = None
        # Processes that exec'd since the last scan, and whether a watched pid exited.
        self._pending_execs: set[int] = set()
        self._watched_exit = False
        self.triggered_scans = 0
        self.skipped_scans = 0
        self.lost_event_bursts = 0
        self._lost_logged_at: float | None = None
        self._lost_unlogged = 0
        self._own_pid = os.getpid()
        self._logger = log.get_logger()

    @property
    def failed(self) -> bool:
        """Whether the thread ended on an error or was stopped. Scans then read every process."""
        return self._failed

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread, then unsubscribe and close the socket."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        with self._socket_lock:
            self._failed = True
            close_listener(self.sock)

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self._receive()
                if self._due is not None and self._monotonic() >= self._due:
                    self._fire()
        except Exception as error:  # noqa: BLE001 - polling goes on; the reason is logged once
            self._failed = True
            if not self._stop_event.is_set():
                self._log_failure(error)

    def changed_since_last_scan(self, pids: list[int]) -> set[int] | None:
        """Return the processes that changed since the last call, for the process collector; None to read all.

        Safe from any thread. Once the watcher has failed or stopped, every
        scan reads every process.
        """
        with self._socket_lock:
            if self._failed:
                return None
            try:
                self._drain()
            except OSError as error:
                self._failed = True
                self._log_failure(error)
                return None
            was_trusted = self.changes.distrusted is None
            changed = self.changes.take(pids)
        if was_trusted and self.changes.distrusted is not None:
            self._logger.warning("exec_events_unverified", reason=self.changes.distrusted,
                                 fallback="every process is read each scan")
        return changed

    def _log_failure(self, error: Exception) -> None:
        self._logger.error("exec_events_failed", error=f"{type(error).__name__}: {error}",
                           fallback="interval scans only")

    def _fire(self) -> None:
        """Scan when the burst left a process that matters or a watched pid exited; otherwise skip."""
        # A scan in another thread may drain the socket meanwhile and add
        # to the pending state, so the burst is taken out under the lock.
        with self._socket_lock:
            pending_execs, self._pending_execs = self._pending_execs, set()
            watched_exit, self._watched_exit = self._watched_exit, False
            self._due = None
        matters = self.matters or _is_live
        needed = watched_exit or any(matters(pid) for pid in pending_execs)
        if not needed:
            self.skipped_scans += 1
            return
        self._last_trigger = self._monotonic()
        self.triggered_scans += 1
        self.trigger()

    def _receive(self) -> None:
        """Wait until the socket is readable or a scan is due, then handle what is queued."""
        now = self._monotonic()
        timeout = _POLL_SECONDS if self._due is None else max(0.0, self._due - now)
        if self._wait_readable(timeout):
            with self._socket_lock:
                self._drain()

    def _wait_readable(self, timeout: float) -> bool:
        readable, _writable, _failed = select.select([self.sock], [], [], timeout)
        return bool(readable)

    def _drain(self) -> None:
        """Read and handle every datagram queued on the socket; the caller holds the socket lock."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
                # The receive buffer overflowed and events were lost, an exec among them perhaps.
                self.lost_event_bursts += 1
                self.changes.lost()
                self._watched_exit = True
                self._schedule()
                self._log_lost()
                continue
            self._handle(data)

    def _log_lost(self) -> None:
        """Log exec_events_lost, at most once per LOST_LOG_SECONDS, counting the overflows in between."""
        self._lost_unlogged += 1
        now = self._monotonic()
        if self._lost_logged_at is not None and now - self._lost_logged_at < LOST_LOG_SECONDS:
            return
        self._logger.warning("exec_events_lost", overflows=self._lost_unlogged,
                             receive_buffer_bytes=self._receive_buffer_bytes(),
                             fallback="the next scan reads every process")
        self._lost_logged_at = now
        self._lost_unlogged = 0

    def _receive_buffer_bytes(self) -> int | None:
        """Return the socket's receive buffer as the kernel sized it (socket(7): twice the size requested)."""
        try:
            return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except OSError:
            return None

    def _handle(self, data: bytes) -> None:
        for event in parse_events(data):
            if event.what == PROC_EVENT_FORK:
                # A new thread shares its process's entry; only a new process is recorded.
                if event.child_pid == event.child_tgid:
                    self.changes.forked(event.child_tgid)
                continue
            if event.what == PROC_EVENT_NONE:
                continue
            self.changes.changed(event.tgid)
            if event.what == PROC_EVENT_EXEC and self._counts(event.tgid):
                if self.on_exec is not None:
                    self.on_exec(event.tgid)
                self._pending_execs.add(event.tgid)
                self._schedule()
            elif event.what == PROC_EVENT_EXIT and event.pid == event.tgid and event.tgid in self.watched_pids():
                self._watched_exit = True
                self._schedule()

    def _counts(self, tgid: int) -> bool:
        if tgid == self._own_pid:
            return False
        parent = _parent_pid(tgid)
        return parent is not None and parent != self._own_pid

    def _schedule(self) -> None:
        """Plan a scan DEBOUNCE_SECONDS after the first event, and MIN_GAP_SECONDS after the last one."""
        if self._due is not None:
            return
        due = self._monotonic() + self.debounce_seconds
        if self._last_trigger is not None:
            due = max(due, self._last_trigger + self.min_gap_seconds)
        self._due = due
