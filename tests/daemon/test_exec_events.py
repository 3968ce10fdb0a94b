"""Exec events: message parsing, debouncing, the fallback without the connector, and the daemon end to end.

The live tests need the kernel proc connector, which needs CAP_NET_ADMIN in
the initial user and pid namespaces. They skip when the connector is
unavailable, except under CI=true (tests/support/tools.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from bpm_doctor import serve
from bpm_doctor.config import Config
from bpm_doctor.collect.processes import ProcessCache, collect_processes, read_stat
from bpm_doctor.daemon import exec_events
from bpm_doctor.daemon.scanner import Scanner
from bpm_doctor.daemon.exec_events import (
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_NONE,
    ExecWatcher,
    ProcessEvent,
    parse_events,
)
from bpm_doctor.model import Snapshot
from bpm_doctor.sdnotify import Notifier
from tests.support import tools


def event_message(what: int, pid: int = 0, tgid: int = 0, ack: int = 0, index: int = 1,
                  child: int = 0) -> bytes:
    """Build one netlink message carrying a struct proc_event, as the kernel sends it.

    For a fork, `pid` and `tgid` are the parent's, and `child` is the new
    process (child_pid and child_tgid), or a new thread when negative
    (child_pid -child, child_tgid tgid).
    """
    if what == PROC_EVENT_NONE:
        data = struct.pack("=IIQI", what, 0, 123, pid)
    elif what == PROC_EVENT_FORK:
        child_pid, child_tgid = (child, child) if child > 0 else (-child, tgid)
        data = struct.pack("=IIQiiii", what, 0, 123, pid, tgid, child_pid, child_tgid) + b"\0" * 8
    else:
        data = struct.pack("=IIQii", what, 0, 123, pid, tgid) + b"\0" * 16
    connector = struct.pack("=IIIIHH", index, 1, 7, ack, len(data), 0) + data
    return struct.pack("=IHHII", 16 + len(connector), 3, 0, 7, 0) + connector


# Parsing


def test_parse_exec_and_exit():
    data = event_message(PROC_EVENT_EXEC, 41, 40)
    assert list(parse_events(data)) == [ProcessEvent(PROC_EVENT_EXEC, 41, 40, 0)]
    data = event_message(PROC_EVENT_EXIT, 40, 40)
    assert list(parse_events(data)) == [ProcessEvent(PROC_EVENT_EXIT, 40, 40, 0)]


def test_parse_fork_names_parent_and_child():
    data = event_message(PROC_EVENT_FORK, 41, 40, child=77)
    assert list(parse_events(data)) == [ProcessEvent(PROC_EVENT_FORK, 41, 40, 0, 77, 77)]
    thread = event_message(PROC_EVENT_FORK, 41, 40, child=-78)
    assert list(parse_events(thread)) == [ProcessEvent(PROC_EVENT_FORK, 41, 40, 0, 78, 40)]


def test_parse_ack_error():
    assert list(parse_events(event_message(PROC_EVENT_NONE, errno.EPERM, ack=1))) == [
        ProcessEvent(PROC_EVENT_NONE, errno.EPERM, 0, 1)]


def test_parse_several_messages():
    data = event_message(PROC_EVENT_EXEC, 5, 5) + event_message(PROC_EVENT_EXEC, 6, 6)
    assert [event[2] for event in parse_events(data)] == [5, 6]


def test_parse_skips_other_connector():
    assert list(parse_events(event_message(PROC_EVENT_EXEC, 5, 5, index=2))) == []


@pytest.mark.parametrize("cut", [0, 10, 20, 40, 55])
def test_parse_truncated(cut):
    assert list(parse_events(event_message(PROC_EVENT_EXEC, 5, 5)[:cut])) == []


def test_parse_truncated_fork_skipped():
    message = event_message(PROC_EVENT_FORK, 5, 5, child=6)
    # Keep the exec-sized event data (two pids) but not the child's pids.
    length = 16 + 20 + 16 + 8
    cut = struct.pack("=I", length) + message[4:length]
    assert list(parse_events(cut)) == []


# Debouncing, with a scripted socket and clock


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedSocket:
    """A non-blocking socket that hands out queued datagrams, then queued errors, then EAGAIN.

    `wait_readable` replaces select(): with nothing queued it lets the
    whole timeout pass on the fake clock.
    """

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.queue: list[bytes] = []
        self.errors: list[OSError] = []
        self.blocking = True

    def setblocking(self, flag):
        self.blocking = flag

    def recv(self, _size):
        assert not self.blocking
        if self.queue:
            return self.queue.pop(0)
        if self.errors:
            raise self.errors.pop(0)
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    def getsockopt(self, _level, _option):
        return 8 << 20

    def wait_readable(self, timeout: float) -> bool:
        if self.queue or self.errors:
            return True
        self.clock.now += timeout
        return False


def overflow() -> OSError:
    """Return the error recv raises after the receive buffer overflowed."""
    return OSError(errno.ENOBUFS, "No buffer space available")


def scripted_watcher(sock: ScriptedSocket, trigger, **kwargs) -> ExecWatcher:
    watcher = ExecWatcher(sock, trigger, monotonic=sock.clock, **kwargs)
    watcher._wait_readable = sock.wait_readable
    return watcher


def watcher_for(monkeypatch, clock, watched=frozenset()):
    sock = ScriptedSocket(clock)
    triggers: list[float] = []
    forgotten: list[int] = []
    watcher = scripted_watcher(sock, lambda: triggers.append(clock.now), watched_pids=lambda: set(watched),
                               on_exec=forgotten.append)
    # Every exec'd pid counts as a live process started by someone else.
    monkeypatch.setattr(exec_events, "_parent_pid", lambda pid: 1)
    monkeypatch.setattr(exec_events, "_is_live", lambda pid: True)
    return watcher, sock, triggers, forgotten


def test_exec_triggers_after_debounce(monkeypatch):
    clock = FakeClock()
    watcher, sock, triggers, forgotten = watcher_for(monkeypatch, clock)
    sock.queue = [event_message(PROC_EVENT_EXEC, 500, 500), event_message(PROC_EVENT_EXEC, 500, 500)]
    run_for(watcher, clock, 1)
    assert forgotten == [500, 500]
    assert len(triggers) == 1
    assert triggers[0] == pytest.approx(100.0 + exec_events.DEBOUNCE_SECONDS)


@pytest.mark.live
def test_scanner_counts_only_blueprint_execs(tmp_path):
    scanner = Scanner(Config(), 60.0)
    plain = subprocess.Popen(["sleep", "30"], env={"PATH": os.environ["PATH"], "HOME": "/root"})
    instance = subprocess.Popen(["sleep", "30"], env={"PATH": os.environ["PATH"], "BLUEPRINT_ID": "9321",
                                                      "SERVICE_ID": "1"})
    try:
        wait_for(lambda: _executed(plain.pid) and _executed(instance.pid), 5, "both sleeps to exec")
        assert scanner.exec_matters(instance.pid) is True
        assert scanner.exec_matters(plain.pid) is False
    finally:
        for child in (plain, instance):
            child.kill()
            child.wait()
    assert scanner.exec_matters(instance.pid) is False


def _executed(pid: int) -> bool:
    """Return True once `sleep` has finished exec: the exe link changes before argv and environ are set up."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline, open(f"/proc/{pid}/environ", "rb") as environ:
            return cmdline.read() == b"sleep\x0030\x00" and bool(environ.read())
    except OSError:
        return False


def run_for(watcher: ExecWatcher, clock: FakeClock, seconds: float) -> None:
    """Drive the watcher's loop body until the fake clock has advanced `seconds`."""
    end = clock.now + seconds
    while clock.now < end:
        watcher._receive()
        if watcher._due is not None and clock.now >= watcher._due:
            watcher._fire()


def test_exec_rate_limited(monkeypatch):
    clock = FakeClock()
    watcher, sock, triggers, _forgotten = watcher_for(monkeypatch, clock)
    sock.queue.append(event_message(PROC_EVENT_EXEC, 600, 600))
    run_for(watcher, clock, 0.3)
    assert len(triggers) == 1
    # Two more execs right after the first scan: one more scan, a full gap later.
    sock.queue += [event_message(PROC_EVENT_EXEC, 601, 601), event_message(PROC_EVENT_EXEC, 602, 602)]
    run_for(watcher, clock, 3)
    assert len(triggers) == 2
    assert triggers[1] - triggers[0] >= exec_events.MIN_GAP_SECONDS


def test_exited_burst_skipped(monkeypatch):
    clock = FakeClock()
    watcher, sock, triggers, _forgotten = watcher_for(monkeypatch, clock)
    monkeypatch.setattr(exec_events, "_is_live", lambda pid: False)
    sock.queue = [event_message(PROC_EVENT_EXEC, 650, 650)]
    run_for(watcher, clock, 1)
    assert triggers == []
    assert watcher.skipped_scans == 1


def test_own_children_ignored(monkeypatch):
    clock = FakeClock()
    watcher, sock, triggers, _forgotten = watcher_for(monkeypatch, clock)
    monkeypatch.setattr(exec_events, "_parent_pid", lambda pid: os.getpid())
    sock.queue = [event_message(PROC_EVENT_EXEC, 700, 700)]
    run_for(watcher, clock, 1)
    assert triggers == []


def test_exit_of_watched_pid_triggers(monkeypatch):
    clock = FakeClock()
    watcher, sock, triggers, _forgotten = watcher_for(monkeypatch, clock, watched={800})
    sock.queue = [event_message(PROC_EVENT_EXIT, 801, 801), event_message(PROC_EVENT_EXIT, 802, 800)]
    run_for(watcher, clock, 1)
    assert triggers == []
    sock.queue = [event_message(PROC_EVENT_EXIT, 800, 800)]
    run_for(watcher, clock, 1)
    assert len(triggers) == 1


def test_lost_events_trigger(monkeypatch):
    clock = FakeClock()
    watcher, sock, triggers, _forgotten = watcher_for(monkeypatch, clock)

    sock.errors.append(overflow())
    with structlog.testing.capture_logs() as logs:
        run_for(watcher, clock, 1)
        assert len(triggers) == 1
        assert watcher.lost_event_bursts == 1
        # Two more overflows within the minute are counted into the next warning.
        sock.errors += [overflow(), overflow()]
        run_for(watcher, clock, 1)
        clock.now += exec_events.LOST_LOG_SECONDS
        sock.errors.append(overflow())
        run_for(watcher, clock, 1)
    lost = [entry for entry in logs if entry["event"] == "exec_events_lost"]
    assert [entry["overflows"] for entry in lost] == [1, 3]
    assert lost[0]["log_level"] == "warning"


# The change feed for the process collector


def feed_for(monkeypatch):
    clock = FakeClock()
    watcher, sock, _triggers, _forgotten = watcher_for(monkeypatch, clock)
    assert watcher.changed_since_last_scan([1, 500]) is None  # the first scan reads everything
    return watcher, sock


def test_feed_names_forked_execd_and_exited_processes(monkeypatch):
    watcher, sock = feed_for(monkeypatch)
    sock.queue = [
        event_message(PROC_EVENT_FORK, 1, 1, child=501),
        event_message(PROC_EVENT_FORK, 500, 500, child=-502),  # a thread of 500
        event_message(PROC_EVENT_EXEC, 501, 501),
        event_message(PROC_EVENT_EXIT, 503, 503),
    ]
    # Nothing drained these yet: the question itself reads the socket.
    assert watcher.changed_since_last_scan([1, 500, 501]) == {501, 503}
    assert watcher.changed_since_last_scan([1, 500, 501]) == set()


def test_feed_reads_everything_after_lost_events(monkeypatch):
    watcher, sock = feed_for(monkeypatch)
    sock.errors.append(overflow())
    assert watcher.changed_since_last_scan([1, 500]) is None
    assert watcher.changed_since_last_scan([1, 500]) == set()


def test_feed_unverified_logged_once(monkeypatch):
    watcher, _sock = feed_for(monkeypatch)
    with structlog.testing.capture_logs() as logs:
        for _scan in range(4):
            assert watcher.changed_since_last_scan([1, 500, 600]) is None
    warnings = [entry for entry in logs if entry["event"] == "exec_events_unverified"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert "pid 600" in warnings[0]["reason"]


def test_feed_reads_everything_after_the_watcher_failed(monkeypatch):
    watcher, sock = feed_for(monkeypatch)
    sock.errors.append(OSError(errno.EBADF, "Bad file descriptor"))
    with structlog.testing.capture_logs() as logs:
        watcher.run()
    assert [entry["event"] for entry in logs] == ["exec_events_failed"]
    assert watcher.changed_since_last_scan([1, 500]) is None


def test_scan_draining_during_fire_keeps_the_burst(monkeypatch):
    clock = FakeClock()
    sock = ScriptedSocket(clock)
    triggers: list[float] = []
    queried: list[int] = []
    watcher = None

    def matters(pid):
        queried.append(pid)
        if pid == 910:
            # A drain while the burst is judged, as an interval scan in another thread may do.
            # Called from this thread, it checks that the burst was taken out first, not the lock.
            sock.queue.append(event_message(PROC_EVENT_EXEC, 911, 911))
            watcher.changed_since_last_scan([1, 910, 911])
        return False

    watcher = scripted_watcher(sock, lambda: triggers.append(clock.now), matters=matters)
    monkeypatch.setattr(exec_events, "_parent_pid", lambda pid: 1)
    sock.queue = [event_message(PROC_EVENT_EXEC, 910, 910)]
    run_for(watcher, clock, 1)
    # The exec drained during the first judgement makes a burst of its own.
    assert queried == [910, 911]
    assert watcher.skipped_scans == 2
    assert triggers == []


def test_feed_socket_error_during_scan_reads_everything(monkeypatch):
    watcher, sock = feed_for(monkeypatch)
    sock.errors.append(OSError(errno.EBADF, "Bad file descriptor"))
    with structlog.testing.capture_logs() as logs:
        assert watcher.changed_since_last_scan([1, 500]) is None
    assert [entry["event"] for entry in logs] == ["exec_events_failed"]
    assert watcher.failed
    assert watcher.changed_since_last_scan([1, 500]) is None


def test_feed_stopped_reads_everything(monkeypatch):
    watcher, sock = feed_for(monkeypatch)
    closed = []
    monkeypatch.setattr(exec_events, "close_listener", closed.append)
    watcher.stop()
    assert closed == [sock]
    assert watcher.changed_since_last_scan([1, 500]) is None


# Without the connector


@pytest.mark.parametrize(("error", "expected"), [
    (errno.EPROTONOSUPPORT, "EPROTONOSUPPORT: kernel without the proc connector"),
    (errno.EPERM, "EPERM: needs CAP_NET_ADMIN"),
])
def test_unavailable_reason(monkeypatch, error, expected):
    def refuse(*_args):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(exec_events.socket, "socket", refuse)
    with pytest.raises(exec_events.Unavailable, match=expected):
        exec_events.open_listener()


def test_daemon_logs_unavailable_once(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise exec_events.Unavailable("EPERM: needs CAP_NET_ADMIN")

    monkeypatch.setattr(exec_events, "open_listener", refuse)
    daemon = serve.Daemon(Config(), "127.0.0.1:0", 5.0, notifier=Notifier(backend=lambda _message: True),
                          collect=lambda _config: Snapshot(source="test"), exec_events=True)
    daemon.start()
    stop = threading.Event()
    stop.set()
    with structlog.testing.capture_logs() as logs:
        assert daemon.run(stop) == 0
    names = [entry["event"] for entry in logs]
    assert names.count("exec_events_unavailable") == 1
    assert names[0] == "serve_started"
    assert logs[0]["exec_events"] is False
    unavailable = next(entry for entry in logs if entry["event"] == "exec_events_unavailable")
    assert unavailable["reason"] == "EPERM: needs CAP_NET_ADMIN"
    assert unavailable["log_level"] == "info"
    assert daemon.scanner.state.exec_events == "off"


# The daemon end to end


def scraped_samples(address: str) -> list:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def hand_run_count(address: str) -> float:
    return sum(sample.value for sample in scraped_samples(address)
               if sample.name == "bpm_doctor_findings" and sample.labels.get("id") == "hand-run-instance")


def metric_value(address: str, name: str, **labels) -> float | None:
    for sample in scraped_samples(address):
        if sample.name == name and sample.labels == labels:
            return sample.value
    return None


def wait_for(condition, timeout: float, description: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {description}")


@pytest.mark.live
def test_exec_event_updates_metrics(tmp_path):
    tools.require_proc_connector()
    config = tmp_path / "config.toml"
    config.write_text("")
    log_path = tmp_path / "daemon.stderr"
    with open(log_path, "w") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "bpm_doctor", "--config", str(config), "serve",
             "--listen", "127.0.0.1:0", "--interval", "60"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=str(tmp_path),
            env={**os.environ, "NOTIFY_SOCKET": ""},
        )
    instance = None
    try:
        def started() -> dict | None:
            for line in log_path.read_text().splitlines():
                if line.startswith("{") and json.loads(line)["event"] == "serve_started":
                    return json.loads(line)
            return None

        event = wait_for(started, 30, "serve_started in the daemon log")
        assert event["exec_events"] is True
        address = event["listen"]
        before = wait_for(lambda: _scraped(address), 60, "the first scan")[0]

        began = time.monotonic()
        instance = subprocess.Popen(["env", "BLUEPRINT_ID=9321", "SERVICE_ID=1", "TEST_MODE=true", "sleep", "30"],
                                    start_new_session=True)
        # Other processes on the host may change the count too, so the
        # daemon's log names the pid whose finding changed the metric.
        wait_for(lambda: finding_event(log_path, "finding_appeared", instance.pid), 2.0,
                 f"a hand-run-instance finding for pid {instance.pid}")
        delay = time.monotonic() - began
        assert hand_run_count(address) >= 1
        # The interval is 60 s and the first scan is done, so only the exec event explains the change.
        assert delay < 2.0
        assert metric_value(address, "bpm_doctor_exec_events", state="on") == 1

        instance.kill()
        instance.wait()
        wait_for(lambda: finding_event(log_path, "finding_cleared", instance.pid), 3.0,
                 f"the finding for pid {instance.pid} to clear after its exit")
    finally:
        if instance is not None and instance.poll() is None:
            instance.kill()
            instance.wait()
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    assert "Traceback" not in log_path.read_text()


def finding_event(log_path, name: str, pid: int) -> bool:
    """Return True once the daemon logged `name` for a hand-run-instance finding of `pid`."""
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event["event"] == name and event.get("id") == "hand-run-instance" and event.get("pid") == pid:
                return True
    return False


def _scraped(address: str) -> tuple[float] | None:
    """Return (hand-run count,) once /metrics answers after a scan, else None."""
    try:
        return (hand_run_count(address),)
    except OSError:
        return None


def test_exec_that_cannot_matter_skipped(monkeypatch):
    clock = FakeClock()
    sock = ScriptedSocket(clock)
    triggers: list[float] = []
    queried: list[int] = []

    def matters(pid):
        queried.append(pid)
        return pid == 902

    watcher = scripted_watcher(sock, lambda: triggers.append(clock.now), matters=matters)
    monkeypatch.setattr(exec_events, "_parent_pid", lambda pid: 1)
    sock.queue = [event_message(PROC_EVENT_EXEC, 901, 901)]
    run_for(watcher, clock, 1)
    assert triggers == []
    assert watcher.skipped_scans == 1
    sock.queue = [event_message(PROC_EVENT_EXEC, 901, 901), event_message(PROC_EVENT_EXEC, 902, 902)]
    run_for(watcher, clock, 3)
    assert len(triggers) == 1
    assert 902 in queried


@pytest.mark.live
def test_event_fed_scans_see_exec_and_reparenting():
    tools.require_proc_connector()
    watcher = ExecWatcher(exec_events.open_listener(), trigger=lambda: None)
    cache = ProcessCache()
    cache.change_feed = watcher

    def scan() -> Snapshot:
        snapshot = Snapshot(source="test")
        collect_processes(snapshot, cache=cache)
        return snapshot

    # A shell with a child in the background, which execs into a hand-run instance on a line of input.
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & read line; exec env BLUEPRINT_ID=9321 SERVICE_ID=1 sleep 30"],
                             stdin=subprocess.PIPE, env={"PATH": os.environ["PATH"]})
    child = None
    try:
        child = wait_for(lambda: _child_of(shell.pid), 5, "the background sleep")
        scan()
        scan()
        if not cache.cgroup_directories:
            pytest.skip("this host's cgroups are not walked, so no scan skips a process")
        assert cache.unread > 0
        assert shell.pid in cache

        shell.stdin.write(b"go\n")
        shell.stdin.flush()
        wait_for(lambda: _executed(shell.pid), 5, "the shell's exec")
        after_exec = scan()
        assert after_exec.processes[shell.pid].argv == ["sleep", "30"]
        assert after_exec.processes[shell.pid].env == {"BLUEPRINT_ID": "9321", "SERVICE_ID": "1"}

        shell.kill()
        shell.wait()
        reparented = scan()
        assert shell.pid not in reparented.processes
        assert reparented.processes[child].ppid != shell.pid
        assert reparented.processes[child].ppid == read_stat(child).ppid
    finally:
        watcher.stop()
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def _child_of(parent: int) -> int | None:
    """Return the pid of a `sleep 60` whose parent is `parent`, once it has exec'd."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            try:
                with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                    argv = cmdline.read()
            except OSError:
                continue
            if stat is not None and stat.ppid == parent and argv == b"sleep\x0060\x00":
                return int(name)
    return None
