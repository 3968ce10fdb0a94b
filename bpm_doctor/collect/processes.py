"""Read every process: exe, argv, parentage, cgroup and the environment of interest.

Environment values other than blueprint coordinates and switches are
dropped right after the read (bpm_doctor.redact.filter_environment), so they
never reach a snapshot. What cannot be read is counted by reason. Kernel
threads are skipped, because their environ and exe reads fail by design
(ESRCH and ENOENT on Linux 6.x) and they are never instances. Zombies are
skipped too, because they have exited.

The files under /proc/PID are read with os.open and os.read, not psutil:
per attribute that is about 2.5 times faster than psutil 7.2 on the same
processes (docs/performance.md). The parsing of cmdline, environ and the exe
link follows psutil's Linux code, and tests/collect/test_processes.py
compares the two on the live host.

Incremental scans: a `ProcessCache` passed to `collect_processes` keeps what
only an exec can change (exe, argv, the filtered environment, cwd, uid and
the start time), keyed by pid and start time. A later scan then reads stat
of a known process, for the parentage, the state and the exec check, and
takes its cgroup, which can change at any time, from the walk of the cgroup
hierarchy or else from /proc/PID/cgroup. See `ProcessCache` for what is
taken as unchanged.

With a change feed (`ProcessCache.change_feed`, the daemon's kernel process
events), a known process that the feed reports unchanged, and whose parent
it reports unchanged, is not read at all: its cgroup comes from the
hierarchy walk and the rest from the cache. See `ChangeFeed`.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import re
import sys
import time
from typing import NamedTuple, Protocol

from bpm_doctor import redact
from bpm_doctor.collect import cgroups
from bpm_doctor.model import Process, Snapshot

# PF_KTHREAD in the flags field of /proc/PID/stat (include/linux/sched.h).
_PF_KTHREAD = 0x00200000
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_READ_SIZE = 16384
_ENCODING = sys.getfilesystemencoding()
_ENCODING_ERRORS = sys.getfilesystemencodeerrors()

# A process that execs again while it is being read is read again this many times.
_MAX_READ_ATTEMPTS = 3
# Zombie and dead: the process has exited and is not reported.
_EXITED_STATES = (b"Z", b"X")
# After a failed cgroup hierarchy walk, this many scans read /proc/PID/cgroup
# instead; a walk skipped for a host with many cgroups is retried as often.
_HIERARCHY_RETRY_SCANS = 20


def _kept_entry_pattern(names) -> re.Pattern[bytes]:
    """Return a pattern for a NUL, then one `NAME=value` environ entry whose NAME is in `names`.

    Starting with the NUL lets the engine skip ahead to NUL bytes. The names
    are grouped by their first letter, so that at each NUL the engine tests
    one letter per group rather than every name in turn. On a 1.3 kB block
    that took 1.7 µs instead of 2.7 µs here.
    """
    groups: dict[bytes, list[bytes]] = {}
    for name in sorted(names):
        encoded = name.encode()
        groups.setdefault(encoded[:1], []).append(re.escape(encoded[1:]))
    alternatives = b"|".join(re.escape(first) + b"(?:" + b"|".join(rests) + b")" for first, rests in groups.items())
    return re.compile(rb"\0(" + alternatives + rb")=([^\0]*)")


_KEPT_ENTRY = _kept_entry_pattern(redact.KEPT_ENVIRONMENT)


class ProcStat(NamedTuple):
    """The fields of /proc/PID/stat that a scan uses.

    `start_ticks` is field 22, the start time in clock ticks since boot.
    Together with the pid it names one process, because a reused pid gets a
    later start. `exec_mark` changes when the process execs (see `_parse_stat`).
    """

    state: bytes
    ppid: int
    pgid: int
    sid: int
    flags: int
    start_ticks: int
    exec_mark: tuple

    @property
    def kernel_thread(self) -> bool:
        # The flag, not pid 2: inside a pid namespace pid 2 is an ordinary process.
        return bool(self.flags & _PF_KTHREAD)

    @property
    def exited(self) -> bool:
        return self.state in _EXITED_STATES


class _Entry(NamedTuple):
    """The result of a full read of one process, reused while its stat shows no exec."""

    start_ticks: int
    exec_mark: tuple
    skipped: bool = False
    uid: int | None = None
    exe: str | None = None
    cwd: str | None = None
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    start: str | None = None
    unreadable: frozenset[str] = frozenset()
    read_errors: tuple[str, ...] = ()
    # From the latest stat read; a known process the change feed vouches
    # for is rebuilt with these.
    ppid: int = 0
    pgid: int | None = None
    sid: int | None = None


class ChangeFeed(Protocol):
    """A source of the processes that may have changed since the previous scan, such as process events."""

    def changed_since_last_scan(self, pids: list[int]) -> set[int] | None:
        """Return the pids that forked, exec'd, exited or changed identity since the last call.

        `pids` is this scan's listing of /proc; the feed must take in every
        event that happened before the call. None means the feed cannot
        vouch for this scan (its first, lost events, a periodic check), and
        every known process is read again.
        """


class ProcessCache:
    """Per-process results kept between scans, for `collect_processes`.

    An entry is keyed by pid and stores the start time (stat field 22) and an
    exec mark, so a reused pid or an exec always leads to a full read. The
    closing stat read of a full read detects a pid reused or an exec during
    the read. Entries of pids not seen in a scan are dropped.

    Taken as unchanged until the next exec, with the reason:
    - argv: NOTE: a process that rewrites its argv in place (setproctitle)
      keeps its old argv here until it execs or restarts;
    - the filtered environment: /proc/PID/environ is the block the process
      got at exec, and setenv() later does not change that block either;
    - cwd: it is used only to resolve relative paths from argv and the
      environment, which the process resolved when it started, so the cwd
      seen first, closest to the exec, is the better base for them;
    - uid: a setuid() without exec is not seen. No check uses the uid, and
      a one-shot check or snapshot reads every process afresh.

    `forget(pid)` may be called from another thread, such as the exec event
    listener; the entry is dropped at the start of the next scan. Everything
    else must run in the scanning thread.

    `change_feed`, when set, lets a scan skip reading known processes that
    the feed reports unchanged. `unread` counts those in the last scan;
    they are also counted in `cached_reads`.
    """

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self._forgotten: collections.deque[int] = collections.deque()
        self.boot_time: float | None = None
        self.change_feed: ChangeFeed | None = None
        self.full_reads = 0
        self.cached_reads = 0
        self.unread = 0
        # cgroup directories read by the last hierarchy walk; 0 before the first.
        self.cgroup_directories = 0
        self._hierarchy_pause = 0
        # Scans since the last walk that skipped it because the host had too many cgroups.
        self._walks_skipped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, pid: int) -> bool:
        return pid in self._entries

    def forget(self, pid: int) -> None:
        """Drop the entry of `pid` at the start of the next scan; safe from any thread."""
        self._forgotten.append(pid)

    def _drain_forgotten(self) -> None:
        while self._forgotten:
            self._entries.pop(self._forgotten.popleft(), None)


def collect_processes(snapshot: Snapshot, proc_root: str = "/proc", cache: ProcessCache | None = None) -> None:
    """Add every user-space process to the snapshot.

    Without `cache` every process is read in full. With one, a process seen
    in an earlier scan with the same start time and no exec since is rebuilt
    from the cache plus fresh stat and cgroup reads, and the cache is
    updated for the next scan.
    """
    keep_entries = cache is not None
    if cache is None:
        cache = ProcessCache()
    with _garbage_collector_paused():
        try:
            _collect_processes(snapshot, proc_root, cache, keep_entries)
        except BaseException:
            # The change feed has handed over its changes, and the entries
            # they concern were not brought up to date, so the next scan
            # reads every process afresh.
            cache._entries = {}
            raise


@contextlib.contextmanager
def _garbage_collector_paused():
    """Pause Python's cyclic garbage collector, unless someone else already paused it.

    A scan allocates several containers per process, and the collector's
    passes over them find nothing to free: at 5,000 processes they made a
    cold scan about 5 % slower here. Reference counting frees memory as
    usual, and a cycle made meanwhile waits for the first pass after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _collect_processes(snapshot: Snapshot, proc_root: str, cache: ProcessCache, keep_entries: bool) -> None:
    cache._drain_forgotten()
    if cache.boot_time is None:
        cache.boot_time = _boot_time(proc_root)
    previous = cache._entries
    current: dict[int, _Entry] = {}
    cache.full_reads = cache.cached_reads = cache.unread = 0
    pids = _pids(proc_root)
    known_cgroups = _known_cgroups(cache, proc_root, len(pids))
    changed = _changed_pids(cache, pids, known_cgroups)
    for pid in pids:
        entry = previous.get(pid)
        if entry is not None:
            if changed is not None and _vouched_for(pid, entry, changed, known_cgroups):
                current[pid] = entry
                cache.cached_reads += 1
                cache.unread += 1
                if not entry.skipped:
                    snapshot.processes[pid] = _rebuild(pid, entry, known_cgroups.paths[pid], snapshot)
                continue
            stat, process = _reuse_entry(pid, proc_root, entry, snapshot, known_cgroups)
            if stat is None:
                continue
            if process is not None or (entry.skipped and _same_process(stat, entry)):
                current[pid] = _with_parentage(entry, stat)
                cache.cached_reads += 1
                if process is not None:
                    snapshot.processes[pid] = process
                continue
        cache.full_reads += 1
        process, new_entry = _read_process(pid, proc_root, snapshot, cache.boot_time, known_cgroups, keep_entries)
        if new_entry is not None:
            current[pid] = new_entry
        if process is not None:
            snapshot.processes[pid] = process
    cache._entries = current


class _KnownCgroups(NamedTuple):
    """A pid → cgroup map from one hierarchy walk, and when the walk started.

    `started_ticks` is CLOCK_BOOTTIME in clock ticks, the clock of stat field
    22. A process whose start time is earlier existed when the walk began,
    so its map entry cannot belong to an earlier process with the same pid.
    """

    paths: dict[int, str]
    started_ticks: int

    def cgroup(self, pid: int, stat: ProcStat) -> str | None:
        """Return the mapped cgroup of a process that existed when the walk began, else None."""
        # Field 22 is rounded down to a tick, so a process started in the
        # walk's own tick, or the one before it, is read directly.
        if stat.start_ticks + 2 <= self.started_ticks:
            return self.paths.get(pid)
        return None


_NO_CGROUPS = _KnownCgroups({}, 0)


def _known_cgroups(cache: ProcessCache, proc_root: str, process_count: int) -> _KnownCgroups:
    """Walk the cgroup hierarchies when that is cheaper than one /proc/PID/cgroup read per process.

    It is when the host has at most half as many cgroups as processes. The
    cgroup count comes from the previous walk, so the first scan walks, and
    every _HIERARCHY_RETRY_SCANS-th scan walks again to count anew. A failed
    walk pauses the walks for _HIERARCHY_RETRY_SCANS scans.
    """
    if cache.cgroup_directories * 2 > process_count:
        cache._walks_skipped += 1
        if cache._walks_skipped < _HIERARCHY_RETRY_SCANS:
            return _NO_CGROUPS
    cache._walks_skipped = 0
    if cache._hierarchy_pause:
        cache._hierarchy_pause -= 1
        return _NO_CGROUPS
    started_ticks = int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLOCK_TICKS)
    walked = cgroups.hierarchy_map(proc_root, read_cgroup("self", proc_root))
    if walked is None:
        cache._hierarchy_pause = _HIERARCHY_RETRY_SCANS
        cache.cgroup_directories = 0
        return _NO_CGROUPS
    cache.cgroup_directories = walked.directories
    return _KnownCgroups(walked.paths, started_ticks)


def _changed_pids(cache: ProcessCache, pids: list[int], known_cgroups: _KnownCgroups) -> set[int] | None:
    """Ask the change feed, if any, which processes changed; None when every known one must be read.

    The feed is called after the listing and the hierarchy walk, so it
    has taken in every event from before them. A pid freed and reused
    before the walk is then reported as changed, and the walk's cgroup is
    that of the process the cache holds. Without a walk the cgroup would be
    read after the feed's reply, possibly from a later process with the
    same pid, so then the feed is not used.
    """
    if cache.change_feed is None:
        return None
    changed = cache.change_feed.changed_since_last_scan(pids)
    if known_cgroups is _NO_CGROUPS:
        return None
    return changed


def _vouched_for(pid: int, entry: _Entry, changed: set[int], known_cgroups: _KnownCgroups) -> bool:
    """Return True when neither the process nor its parent changed, and the walk saw the process.

    A process is reparented when its parent exits (exit_notify, before the
    exit event is sent), so a changed parent means a fresh stat read.
    """
    return pid not in changed and entry.ppid not in changed and (entry.skipped or pid in known_cgroups.paths)


def _same_process(stat: ProcStat, entry: _Entry) -> bool:
    return stat.start_ticks == entry.start_ticks and stat.exec_mark == entry.exec_mark


def _with_parentage(entry: _Entry, stat: ProcStat) -> _Entry:
    """Return the entry with the parent, process group and session of `stat`; the same object when unchanged."""
    if entry.ppid == stat.ppid and entry.pgid == stat.pgid and entry.sid == stat.sid:
        return entry
    return entry._replace(ppid=stat.ppid, pgid=stat.pgid, sid=stat.sid)


def _rebuild(pid: int, entry: _Entry, cgroup: str | None, snapshot: Snapshot,
             stat: ProcStat | None = None) -> Process:
    """Return a new Process from a cache entry, with the parentage of `stat` or, without it, of the entry."""
    for reason in entry.read_errors:
        snapshot.add_read_error(reason)
    source = stat or entry
    return Process(
        pid=pid, ppid=source.ppid, uid=entry.uid, cgroup=cgroup, exe=entry.exe, cwd=entry.cwd,
        argv=list(entry.argv), env=dict(entry.env), start=entry.start, pgid=source.pgid, sid=source.sid,
        unreadable=set(entry.unreadable),
    )


def _reuse_entry(pid: int, proc_root: str, entry: _Entry, snapshot: Snapshot,
                 known_cgroups: _KnownCgroups) -> tuple[ProcStat | None, Process | None]:
    """Rebuild a known process from its entry, a fresh stat read and its current cgroup.

    The cgroup comes from `known_cgroups` or, for a pid not in it, from
    /proc/PID/cgroup. A known process was seen by an earlier scan, so it
    existed before this scan's hierarchy walk.

    Returns (stat, process): stat None when the process is gone, process None
    when the entry no longer applies or is of a skipped process (a kernel
    thread or a zombie).
    """
    cgroup = None
    if not entry.skipped:
        # cgroup is read before stat on purpose. When stat then shows the
        # cached start time, the process existed before this read began, so
        # the cgroup cannot belong to a later process that reused the pid.
        cgroup = known_cgroups.paths.get(pid) or read_cgroup(pid, proc_root)
    stat = read_stat(pid, proc_root)
    if stat is None:
        snapshot.add_read_error("vanished")
        return None, None
    if entry.skipped or stat.exited or not _same_process(stat, entry):
        return stat, None
    return stat, _rebuild(pid, entry, cgroup, snapshot, stat)


def read_process(pid: int, proc_root: str = "/proc") -> Process | None:
    """Read one process in full, as a scan without cache does; None when gone, a kernel thread or a zombie."""
    process, _entry = _read_process(pid, proc_root, Snapshot(), None, _NO_CGROUPS, keep_entry=False)
    return process


def _pids(proc_root: str) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(proc_root) if name.isdigit())
    except OSError:
        return []


def _read_bytes(path: str) -> bytes:
    """Return the whole file, raising OSError as os.open and os.read do.

    Procfs returns a whole stat, status, cgroup, cmdline or environ file in
    one read when the buffer is large enough, because seq_file and the
    cmdline and environ readers loop inside the kernel. A short read is
    therefore the end of the file, and a full buffer is read on.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        data = os.read(fd, _READ_SIZE)
        if len(data) < _READ_SIZE:
            return data
        chunks = [data]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _parse_stat(data: bytes) -> ProcStat | None:
    """Parse /proc/PID/stat (proc(5)); None when the fields are missing or not numbers.

    The exec mark is the command name plus the addresses of the code, the
    stack, argv and the environment (fields 26-28 and 48-51). An exec
    replaces the address space, so with address space layout randomization
    the addresses change even when the same binary runs again.
    NOTE: where the reader may not ptrace the process (another user's,
    without CAP_SYS_PTRACE) the kernel shows the addresses as 0, and only
    a change of the command name shows an exec.
    """
    # The command name is in parentheses and may itself contain ") ", so
    # the fields start after the last closing parenthesis.
    close = data.rfind(b")")
    comm = data[data.find(b"(") + 1:close]
    fields = data[close + 2:].split()
    # Every scan parses the stat of every process. Keywords and unpacking
    # made that about 30 % slower than positional arguments here.
    try:
        return ProcStat(
            fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[6]), int(fields[19]),
            (comm, fields[23], fields[24], fields[25], fields[45], fields[46], fields[47], fields[48]),
        )
    except (IndexError, ValueError):
        return None


def read_stat(pid: int, proc_root: str = "/proc") -> ProcStat | None:
    """Read /proc/PID/stat, or return None when the process is gone or the file is malformed."""
    try:
        data = _read_bytes(f"{proc_root}/{pid}/stat")
    except OSError:
        return None
    return _parse_stat(data)


def read_cgroup(pid: int | str, proc_root: str = "/proc") -> str | None:
    """Return the process's systemd cgroup path from /proc/PID/cgroup.

    On a unified (v2) host the `0::` line names the unit. On a hybrid host
    the `name=systemd` v1 line carries the unit while `0::` may be only "/";
    the v1 controller lines are ignored either way.
    """
    try:
        data = _read_bytes(f"{proc_root}/{pid}/cgroup")
    except OSError:
        return None
    return parse_cgroup(data)


def parse_cgroup(data: bytes) -> str | None:
    """Pick the unit-bearing path from the lines of /proc/PID/cgroup, as `read_cgroup` describes."""
    # `0::` must start a line; `:name=systemd:` follows the hierarchy id.
    unified = _cgroup_line(data, b"0::")
    if unified and unified != "/":
        return unified
    return _cgroup_line(data, b":name=systemd:") or unified


def _cgroup_line(data: bytes, marker: bytes) -> str | None:
    """Return the rest of the line after `marker`, or None when no line has it."""
    if data.startswith(marker):
        start = 0
    else:
        start = data.find(b"\n" + marker if marker == b"0::" else marker)
        if start < 0:
            return None
        if marker == b"0::":
            start += 1
    start += len(marker)
    end = data.find(b"\n", start)
    return data[start:end if end >= 0 else len(data)].decode("utf-8", "replace")


def _decode(data: bytes) -> str:
    return data.decode(_ENCODING, _ENCODING_ERRORS)


def parse_cmdline(data: bytes) -> list[str]:
    """Split /proc/PID/cmdline into argv the way psutil does.

    Arguments are NUL-separated. A process that rewrote its command line
    (setproctitle) may use spaces instead, so without a trailing NUL, or
    with a single NUL-terminated word that contains spaces, the text is
    split on spaces.
    """
    if not data:
        return []
    text = _decode(data)
    separator = "\0" if text.endswith("\0") else " "
    if text.endswith(separator):
        text = text[:-1]
    argv = text.split(separator)
    if separator == "\0" and len(argv) == 1 and " " in text:
        argv = text.split(" ")
    return argv


def parse_environ(data: bytes) -> dict[str, str]:
    """Return the kept variables of an environ block, already filtered by bpm_doctor.redact.

    The block is split as psutil.parse_environ_block splits it: at NUL
    bytes, stopping at an empty entry, dropping an unterminated last entry
    and entries without a name, the last of two equal names winning. Only
    names in redact.KEPT_ENVIRONMENT are decoded at all.
    """
    # An empty entry ends the block, and an unterminated last entry is
    # dropped: cut after the last NUL that ends an entry. An entry whose
    # name is not kept is never decoded.
    end = data.find(b"\0\0")
    if end >= 0:
        data = data[:end + 1]
    if data.startswith(b"\0"):
        return {}
    if not data.endswith(b"\0"):
        data = data[:data.rfind(b"\0") + 1]
    kept = {_decode(name): _decode(value) for name, value in _KEPT_ENTRY.findall(b"\0" + data)}
    return redact.filter_environment(kept)


def _readlink(path: str) -> str:
    """Read a /proc link as psutil does: cut at a NUL and drop a " (deleted)" suffix the file system lacks."""
    target = os.readlink(path).split("\0")[0]
    if target.endswith(" (deleted)") and not _exists(target):
        target = target[:-len(" (deleted)")]
    return target


def _exists(path: str) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _boot_time(proc_root: str) -> float | None:
    """Return the boot time in Unix seconds from the `btime` line of /proc/stat."""
    try:
        data = _read_bytes(f"{proc_root}/stat")
    except OSError:
        return None
    start = data.find(b"\nbtime ")
    if start < 0:
        return None
    try:
        return float(data[start + 7:data.find(b"\n", start + 7)])
    except ValueError:
        return None


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


class _Reader:
    """One full read of one process: attribute reads with psutil-compatible error handling."""

    __slots__ = ("pid", "proc_root", "base", "stat_fd", "unreadable", "read_errors")

    def __init__(self, pid: int, proc_root: str, stat_fd: int):
        self.pid = pid
        self.proc_root = proc_root
        self.base = f"{proc_root}/{pid}"
        self.stat_fd = stat_fd
        self.unreadable: set[str] = set()
        self.read_errors: list[str] = []

    def attribute(self, name: str, reader):
        """Return reader(path of `name`), or None after recording why it could not be read.

        PermissionError is a blind spot and counts as `permission-denied:NAME`,
        except for PID 1: init is never an instance, and this machine type's
        init refuses even root. ENOENT and ESRCH mean the process is exiting;
        the closing stat read decides whether it is gone.
        """
        try:
            return reader(f"{self.base}/{name}")
        except PermissionError:
            self.unreadable.add(name)
            if self.pid != 1:
                self.read_errors.append(f"permission-denied:{name}")
        except OSError:
            self.unreadable.add(name)
        return None


def _read_process(pid: int, proc_root: str, snapshot: Snapshot, boot_time: float | None,
                  known_cgroups: _KnownCgroups, keep_entry: bool = True) -> tuple[Process | None, _Entry | None]:
    """Read a process in full; returns the process (None when gone or skipped) and its cache entry.

    Stat is read first and last through one open file. The file stays bound
    to the process it was opened for: once that process is gone, a read
    fails with ESRCH, even when its pid already names a new process. So the
    closing read both rejects a pid reused during the read and, through the
    exec mark, shows an exec during it. The read is repeated after an exec;
    a process still changing after `_MAX_READ_ATTEMPTS` reads is reported
    but not cached. Without `keep_entry`, for a scan whose cache is thrown
    away, no entry is made for a process that was read.
    """
    try:
        stat_fd = os.open(f"{proc_root}/{pid}/stat", _OPEN_FLAGS)
    except OSError:
        snapshot.add_read_error("vanished")
        return None, None
    try:
        return _read_process_through(pid, proc_root, stat_fd, snapshot, boot_time, known_cgroups, keep_entry)
    finally:
        os.close(stat_fd)


def _read_process_through(pid: int, proc_root: str, stat_fd: int, snapshot: Snapshot, boot_time: float | None,
                          known_cgroups: _KnownCgroups, keep_entry: bool) -> tuple[Process | None, _Entry | None]:
    stat = _reread_stat(stat_fd)
    for _attempt in range(_MAX_READ_ATTEMPTS):
        if stat is None:
            snapshot.add_read_error("vanished")
            return None, None
        if stat.kernel_thread or stat.exited:
            return None, _Entry(stat.start_ticks, stat.exec_mark, skipped=True, ppid=stat.ppid)
        reader = _Reader(pid, proc_root, stat_fd)
        process, cmdline_denied = _read_attributes(reader, stat, boot_time, known_cgroups)
        if cmdline_denied:
            # Without argv nothing else about the process is worth reading;
            # this keeps the behaviour of the psutil-based reader.
            snapshot.add_read_error("permission-denied:cmdline")
            return process, None
        closing = _reread_stat(stat_fd)
        if closing is None or closing.start_ticks != stat.start_ticks:
            # Gone, or the pid was freed and reused during the read: the
            # attributes may mix two processes, so none is kept.
            snapshot.add_read_error("vanished")
            return None, None
        if closing.exec_mark == stat.exec_mark:
            for reason in reader.read_errors:
                snapshot.add_read_error(reason)
            if not keep_entry:
                return process, None
            entry = _Entry(
                start_ticks=stat.start_ticks, exec_mark=stat.exec_mark, uid=process.uid, exe=process.exe,
                cwd=process.cwd, argv=tuple(process.argv), env=tuple(process.env.items()), start=process.start,
                unreadable=frozenset(process.unreadable), read_errors=tuple(reader.read_errors),
                ppid=stat.ppid, pgid=stat.pgid, sid=stat.sid,
            )
            return process, entry
        stat = closing
    for reason in reader.read_errors:
        snapshot.add_read_error(reason)
    return process, None


def _reread_stat(stat_fd: int) -> ProcStat | None:
    """Read stat again from offset 0, where procfs formats it afresh; None when gone or malformed."""
    try:
        data = os.pread(stat_fd, _READ_SIZE, 0)
    except OSError:
        return None
    return _parse_stat(data)


def _owner(stat_fd: int) -> int | None:
    """Return the owner of /proc/PID/stat: the effective uid, or root for a process that is not dumpable.

    proc(5) gives both rules. An fstat of the file already open costs far
    less than reading /proc/PID/status, the largest file of a full read.
    """
    try:
        return os.fstat(stat_fd).st_uid
    except OSError:
        return None


def _read_attributes(reader: _Reader, stat: ProcStat, boot_time: float | None,
                     known_cgroups: _KnownCgroups) -> tuple[Process, bool]:
    """Read argv, uid, exe, cwd, environ and cgroup; returns (process, cmdline denied)."""
    pid = reader.pid
    process = Process(pid=pid, ppid=stat.ppid, pgid=stat.pgid, sid=stat.sid, unreadable=reader.unreadable)
    try:
        process.argv = redact.redact_argv(parse_cmdline(_read_bytes(f"{reader.base}/cmdline")))
    except PermissionError:
        reader.unreadable.add("cmdline")
        return process, True
    except OSError:
        process.argv = []
    process.uid = _owner(reader.stat_fd)
    if boot_time is not None:
        process.start = _iso(boot_time + stat.start_ticks / _CLOCK_TICKS)
    process.exe = reader.attribute("exe", _readlink) or None
    process.cwd = reader.attribute("cwd", _readlink) or None
    environ = reader.attribute("environ", _read_bytes)
    process.env = parse_environ(environ) if environ else {}
    process.cgroup = known_cgroups.cgroup(pid, stat) or read_cgroup(pid, reader.proc_root)
    return process, False
