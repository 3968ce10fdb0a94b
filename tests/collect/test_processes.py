"""The process collector: full reads, the incremental cache, pid reuse, exec and the cgroup walk.

Unit tests run against a fake /proc tree (tests/collect/fakeproc.py). The
`live` tests compare the direct /proc reader with psutil on this host, and
check that a warm scan sees a new instance-like process and forgets one
that exited.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time

import psutil
import pytest
from hypothesis import given, strategies as st

from bpm_doctor import redact
from bpm_doctor.collect import cgroups, processes
from bpm_doctor.collect.processes import ProcessCache, collect_processes, parse_cmdline, parse_environ
from bpm_doctor.model import Snapshot
from tests.collect.fakeproc import BOOT_TIME, PF_KTHREAD, FakeProc, FakeProcess


def scan(fake: FakeProc, cache: ProcessCache | None = None) -> Snapshot:
    snapshot = Snapshot(source="test")
    collect_processes(snapshot, fake.path, cache)
    return snapshot


@pytest.fixture
def fake(tmp_path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


# Full reads


def test_full_read_fields(fake):
    fake.add(FakeProcess(pid=4242, ppid=77, start_ticks=12_345, environ={
        "BLUEPRINT_ID": "9321", "SERVICE_ID": "1", "PRIVATE_KEY": "0xsecret", "PATH": "/usr/bin"}))
    process = scan(fake).processes[4242]
    assert process.ppid == 77
    assert process.pgid == 4242
    assert process.sid == 4242
    assert process.argv == ["/opt/quill/quill-operator", "run"]
    assert process.exe == "/opt/quill/quill-operator"
    assert process.cwd == "/srv/quill"
    assert process.uid == (1000 if os.geteuid() == 0 else os.geteuid())
    assert process.cgroup == "/user.slice/user-1000.slice/session-3.scope"
    assert process.env == {"BLUEPRINT_ID": "9321", "SERVICE_ID": "1"}
    expected_start = time.gmtime(BOOT_TIME + 12_345 // os.sysconf("SC_CLK_TCK"))
    assert process.start == time.strftime("%Y-%m-%dT%H:%M:%SZ", expected_start)
    assert process.unreadable == set()


def test_full_read_redacts_argv(fake):
    fake.add(FakeProcess(pid=10, argv=["quill-operator", "run", "--private-key", "0xabc"]))
    assert scan(fake).processes[10].argv == ["quill-operator", "run", "--private-key", "<redacted>"]


def test_kernel_threads_and_zombies_skipped(fake):
    fake.add(FakeProcess(pid=2, ppid=0, comm="kthreadd", flags=PF_KTHREAD, argv=[], exe=None, cwd=None))
    fake.add(FakeProcess(pid=30, ppid=2, comm="kworker/0:1", flags=PF_KTHREAD, argv=[], exe=None, cwd=None))
    fake.add(FakeProcess(pid=31, state="Z", argv=[], exe=None, cwd=None, addresses=(0,) * 7))
    fake.add(FakeProcess(pid=32))
    snapshot = scan(fake)
    assert sorted(snapshot.processes) == [32]
    assert snapshot.read_errors == {}


def test_vanished_process_counted(fake, monkeypatch):
    fake.add(FakeProcess(pid=40))
    monkeypatch.setattr(processes, "_pids", lambda _root: [40, 41])
    snapshot = scan(fake)
    assert sorted(snapshot.processes) == [40]
    assert snapshot.read_errors == {"vanished": 1}


def deny(monkeypatch, denied_suffix: str) -> None:
    """Make reads of paths ending in `denied_suffix` fail with EACCES, as for another user's process."""
    real_read, real_readlink = processes._read_bytes, os.readlink

    def read_bytes(path):
        if path.endswith(denied_suffix):
            raise PermissionError(13, "Permission denied", path)
        return real_read(path)

    def readlink(path, *args, **kwargs):
        if str(path).endswith(denied_suffix):
            raise PermissionError(13, "Permission denied", path)
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(processes, "_read_bytes", read_bytes)
    monkeypatch.setattr(processes.os, "readlink", readlink)


@pytest.mark.parametrize("attribute", ["environ", "exe", "cwd"])
def test_permission_denied_attribute(fake, monkeypatch, attribute):
    fake.add(FakeProcess(pid=50, environ={"BLUEPRINT_ID": "1"}))
    fake.add(FakeProcess(pid=1, comm="init", environ={"BLUEPRINT_ID": "1"}))
    deny(monkeypatch, f"/{attribute}")
    cache = ProcessCache()
    snapshot = scan(fake, cache)
    assert attribute in snapshot.processes[50].unreadable
    assert attribute in snapshot.processes[1].unreadable
    # PID 1 is exempt: its unreadable attributes must not make a scan partial.
    assert snapshot.read_errors == {f"permission-denied:{attribute}": 1}
    warm = scan(fake, cache)
    assert cache.cached_reads == 2
    assert warm.read_errors == {f"permission-denied:{attribute}": 1}
    assert attribute in warm.processes[50].unreadable


def test_permission_denied_cmdline(fake, monkeypatch):
    fake.add(FakeProcess(pid=60, environ={"BLUEPRINT_ID": "1"}))
    deny(monkeypatch, "/cmdline")
    snapshot = scan(fake)
    process = snapshot.processes[60]
    assert process.unreadable == {"cmdline"}
    assert process.argv == []
    assert process.env == {}
    assert snapshot.read_errors == {"permission-denied:cmdline": 1}


def test_missing_attribute_not_an_error(fake):
    fake.add(FakeProcess(pid=70, exe=None))
    snapshot = scan(fake)
    assert snapshot.processes[70].exe is None
    assert snapshot.processes[70].unreadable == {"exe"}
    assert snapshot.read_errors == {}


# The incremental cache


def test_warm_scan_reuses_entry(fake):
    process = fake.add(FakeProcess(pid=100, environ={"BLUEPRINT_ID": "7"}))
    cache = ProcessCache()
    scan(fake, cache)
    assert cache.full_reads == 1
    # argv and environ change on disk, but without an exec the cache holds.
    (fake.root / "100" / "cmdline").write_bytes(b"changed\0")
    (fake.root / "100" / "environ").write_bytes(b"BLUEPRINT_ID=8\0")
    warm = scan(fake, cache)
    assert cache.cached_reads == 1
    assert cache.full_reads == 0
    assert warm.processes[100].argv == process.argv
    assert warm.processes[100].env == {"BLUEPRINT_ID": "7"}


def test_warm_scan_rereads_parentage_and_cgroup(fake):
    process = fake.add(FakeProcess(pid=110, ppid=109))
    cache = ProcessCache()
    scan(fake, cache)
    process.ppid = 1
    fake.write_stat(process)
    (fake.root / "110" / "cgroup").write_text("0::/system.slice/other.service\n")
    warm = scan(fake, cache)
    assert cache.cached_reads == 1
    assert warm.processes[110].ppid == 1
    assert warm.processes[110].cgroup == "/system.slice/other.service"


def test_warm_scan_returns_copies(fake):
    fake.add(FakeProcess(pid=120, environ={"BLUEPRINT_ID": "7"}))
    cache = ProcessCache()
    first = scan(fake, cache).processes[120]
    first.argv.append("mutated")
    first.env["SERVICE_ID"] = "3"
    first.unreadable.add("exe")
    second = scan(fake, cache).processes[120]
    assert second.argv == ["/opt/quill/quill-operator", "run"]
    assert second.env == {"BLUEPRINT_ID": "7"}
    assert second.unreadable == set()


def test_pid_reuse_full_reread(fake):
    fake.add(FakeProcess(pid=130, start_ticks=1000, argv=["old-binary"], environ={}))
    cache = ProcessCache()
    scan(fake, cache)
    # The same pid with a later start time is another process.
    fake.add(FakeProcess(pid=130, start_ticks=5000, argv=["quill-operator", "run"],
                         environ={"BLUEPRINT_ID": "9", "SERVICE_ID": "2"}))
    warm = scan(fake, cache)
    assert cache.full_reads == 1
    assert cache.cached_reads == 0
    assert warm.processes[130].argv == ["quill-operator", "run"]
    assert warm.processes[130].env == {"BLUEPRINT_ID": "9", "SERVICE_ID": "2"}


@pytest.mark.parametrize("change", ["comm", "addresses"])
def test_exec_full_reread(fake, change):
    process = fake.add(FakeProcess(pid=140, comm="bash", argv=["bash"], environ={}))
    cache = ProcessCache()
    scan(fake, cache)
    # exec keeps the pid and the start time; the name or the addresses change.
    if change == "comm":
        process.comm = "sleep"
    else:
        process.addresses = tuple(value + 0x1000 for value in process.addresses)
    process.argv = ["sleep", "30"]
    process.environ = {"BLUEPRINT_ID": "9321", "SERVICE_ID": "1"}
    fake.add(process)
    warm = scan(fake, cache)
    assert cache.full_reads == 1
    assert warm.processes[140].argv == ["sleep", "30"]
    assert warm.processes[140].env == {"BLUEPRINT_ID": "9321", "SERVICE_ID": "1"}


def test_known_process_turning_zombie_dropped(fake):
    process = fake.add(FakeProcess(pid=150, addresses=(0,) * 7))
    cache = ProcessCache()
    scan(fake, cache)
    # Without ptrace access the addresses read 0, so only the state shows the exit.
    process.state = "Z"
    fake.write_stat(process)
    assert 150 not in scan(fake, cache).processes


def test_exited_pids_evicted(fake):
    fake.add(FakeProcess(pid=160))
    fake.add(FakeProcess(pid=161))
    cache = ProcessCache()
    scan(fake, cache)
    assert len(cache) == 2
    fake.remove(161)
    warm = scan(fake, cache)
    assert sorted(warm.processes) == [160]
    assert 161 not in cache
    assert len(cache) == 1


def test_forget_forces_full_read(fake):
    fake.add(FakeProcess(pid=170))
    cache = ProcessCache()
    scan(fake, cache)
    cache.forget(170)
    scan(fake, cache)
    assert cache.full_reads == 1
    assert cache.cached_reads == 0


def test_kernel_thread_cached(fake):
    fake.add(FakeProcess(pid=2, ppid=0, comm="kthreadd", flags=PF_KTHREAD, argv=[], exe=None, cwd=None))
    cache = ProcessCache()
    scan(fake, cache)
    assert 2 in cache
    assert scan(fake, cache).processes == {}
    assert cache.cached_reads == 1


def test_pid_reused_during_read_discarded(fake, monkeypatch):
    fake.add(FakeProcess(pid=180, environ={"BLUEPRINT_ID": "1"}))
    real_read = processes._read_bytes

    def read_bytes(path):
        data = real_read(path)
        if path.endswith("/180/environ"):
            # The process exits and its pid is reused before the closing stat read.
            fake.write_stat(FakeProcess(pid=180, start_ticks=9999))
        return data

    monkeypatch.setattr(processes, "_read_bytes", read_bytes)
    cache = ProcessCache()
    snapshot = scan(fake, cache)
    assert 180 not in snapshot.processes
    assert snapshot.read_errors == {"vanished": 1}
    assert 180 not in cache


def test_exec_during_read_rereads(fake, monkeypatch):
    process = fake.add(FakeProcess(pid=190, comm="env", argv=["env", "BLUEPRINT_ID=1", "sleep", "30"]))
    real_read = processes._read_bytes
    execs = []

    def read_bytes(path):
        data = real_read(path)
        if path.endswith("/190/environ") and not execs:
            execs.append(path)
            process.comm = "sleep"
            process.argv = ["sleep", "30"]
            process.environ = {"BLUEPRINT_ID": "1", "SERVICE_ID": "4"}
            fake.add(process)
        return data

    monkeypatch.setattr(processes, "_read_bytes", read_bytes)
    cache = ProcessCache()
    snapshot = scan(fake, cache)
    assert snapshot.processes[190].argv == ["sleep", "30"]
    assert snapshot.processes[190].env == {"BLUEPRINT_ID": "1", "SERVICE_ID": "4"}
    assert 190 in cache


# Parsers


@pytest.mark.parametrize(("data", "expected"), [
    (b"", []),
    (b"sleep\x0030\x00", ["sleep", "30"]),
    (b"a\x00\x00b\x00", ["a", "", "b"]),
    (b"postgres: writer process   ", ["postgres:", "writer", "process", "", ""]),
    (b"chrome --type=renderer\x00", ["chrome", "--type=renderer"]),
    (b"caf\xc3\xa9\x00\xff\x00", ["caf\u00e9", "\udcff"]),
])
def test_parse_cmdline_matches_psutil_rules(data, expected):
    assert parse_cmdline(data) == expected


@pytest.mark.parametrize(("data", "expected"), [
    (b"BLUEPRINT_ID=1\x00SERVICE_ID=2\x00", {"BLUEPRINT_ID": "1", "SERVICE_ID": "2"}),
    (b"BLUEPRINT_ID=1\x00BLUEPRINT_ID=3\x00", {"BLUEPRINT_ID": "3"}),
    (b"BLUEPRINT_ID=1\x00\x00SERVICE_ID=2\x00", {"BLUEPRINT_ID": "1"}),
    (b"BLUEPRINT_ID=1\x00SERVICE_ID=2", {"BLUEPRINT_ID": "1"}),
    (b"=x\x00noequals\x00TEST_MODE=true\x00", {"TEST_MODE": "true"}),
    (b"PRIVATE_KEY=0xsecret\x00PATH=/bin\x00", {}),
    (b"SERVICE_ID=abc\x00", {"SERVICE_ID": "<redacted>"}),
    (b"", {}),
])
def test_parse_environ_filters(data, expected):
    assert parse_environ(data) == expected


def split_environ_block(data: bytes) -> dict[str, str]:
    """psutil.parse_environ_block's rules, entry by entry, as a slow reference."""
    kept = {}
    for entry in data.split(b"\0")[:-1]:
        if not entry:
            break
        name, equals, value = entry.partition(b"=")
        if equals and name in {kept_name.encode() for kept_name in redact.KEPT_ENVIRONMENT}:
            kept[name.decode()] = value.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
    return redact.filter_environment(kept)


# Blocks built from kept names, near misses and the bytes that delimit entries.
environ_pieces = st.sampled_from([
    b"BLUEPRINT_ID=1\0", b"SERVICE_ID=2\0", b"TEST_MODE=true\0", b"HOME=/root\0", b"PATH=/bin\0",
    b"BLUEPRINT_ID", b"SERVICE_ID", b"TEST_MODE", b"HOME", b"XHOME", b"SERVICE_ID_X", b"=", b"\0", b"\0\0",
    b"1", b"true", b"/root", b"\xff", b"a=b",
])


@given(st.lists(environ_pieces, max_size=24).map(b"".join))
def test_parse_environ_matches_split_reference(data):
    assert parse_environ(data) == split_environ_block(data)


# The cgroup hierarchy walk


def cgroup_tree(tmp_path, layout: dict[str, list[int]]) -> str:
    """Create a v2 hierarchy under tmp_path/cgroup with the given members; returns its mountinfo line."""
    mount = tmp_path / "cgroup"
    for path, pids in layout.items():
        directory = mount / path.strip("/") if path != "/" else mount
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in pids))
    # Every cgroup directory has a member list, if only an empty one.
    for directory in [mount, *mount.rglob("*")]:
        if directory.is_dir() and not (directory / "cgroup.procs").exists():
            (directory / "cgroup.procs").write_text("")
    return f"30 25 0:26 / {mount} rw,nosuid - cgroup2 cgroup2 rw\n"


def test_hierarchy_map_paths(tmp_path):
    own = os.getpid()
    mountinfo = cgroup_tree(tmp_path, {
        "/": [1, 5], "/system.slice/a.service": [200, own], "/user.slice/user-0.slice/session-1.scope": [300],
    })
    fake = FakeProc(tmp_path / "proc", self_cgroup="0::/system.slice/a.service\n", mountinfo=mountinfo)
    walked = cgroups.hierarchy_map(fake.path, "/system.slice/a.service")
    assert walked is not None
    assert walked.paths[200] == "/system.slice/a.service"
    assert walked.paths[300] == "/user.slice/user-0.slice/session-1.scope"
    assert walked.paths[1] == "/"
    assert walked.directories == 6


def test_hierarchy_map_drops_pid_seen_twice(tmp_path):
    own = os.getpid()
    mountinfo = cgroup_tree(tmp_path, {"/": [own, 400], "/x.service": [400]})
    fake = FakeProc(tmp_path / "proc", mountinfo=mountinfo)
    walked = cgroups.hierarchy_map(fake.path, "/")
    assert walked is not None
    assert 400 not in walked.paths


def test_hierarchy_map_drops_duplicate_member(tmp_path):
    own = os.getpid()
    mountinfo = cgroup_tree(tmp_path, {"/": [own, 400, 401, 400]})
    fake = FakeProc(tmp_path / "proc", mountinfo=mountinfo)
    walked = cgroups.hierarchy_map(fake.path, "/")
    assert walked is not None
    assert 400 not in walked.paths
    assert walked.paths[401] == "/"


def test_hierarchy_map_self_check(tmp_path):
    mountinfo = cgroup_tree(tmp_path, {"/": [os.getpid()]})
    fake = FakeProc(tmp_path / "proc", self_cgroup="0::/elsewhere\n", mountinfo=mountinfo)
    assert cgroups.hierarchy_map(fake.path, "/elsewhere") is None


def test_hierarchy_map_needs_mount(tmp_path):
    fake = FakeProc(tmp_path / "proc", self_cgroup="0::/\n", mountinfo="")
    assert cgroups.hierarchy_map(fake.path, "/") is None


def test_hierarchy_map_hybrid(tmp_path):
    own = os.getpid()
    # 502 started during the walk: the unified hierarchy lists it, name=systemd not yet.
    unified = cgroup_tree(tmp_path / "v2", {"/": [own, 500, 501, 502]})
    named_mount = tmp_path / "named"
    (named_mount / "user.slice").mkdir(parents=True)
    (named_mount / "cgroup.procs").write_text(f"{own}\n500\n")
    (named_mount / "user.slice" / "cgroup.procs").write_text("501\n")
    mountinfo = unified + f"31 25 0:27 / {named_mount} rw - cgroup cgroup rw,xattr,name=systemd\n"
    fake = FakeProc(tmp_path / "proc", self_cgroup="1:name=systemd:/\n0::/\n", mountinfo=mountinfo)
    walked = cgroups.hierarchy_map(fake.path, "/")
    assert walked is not None
    assert walked.paths[500] == "/"
    assert walked.paths[501] == "/user.slice"
    assert 502 not in walked.paths


def test_mountinfo_escapes():
    line = r"30 25 0:26 / /sys/fs/cgroup\040v2 rw - cgroup2 cgroup2 rw" + "\n"
    unified, named = cgroups.find_mounts(line)
    assert unified.mount_point == "/sys/fs/cgroup v2"
    assert named is None


def test_warm_scan_uses_hierarchy_map(tmp_path, monkeypatch):
    own = os.getpid()
    members = list(range(600, 610))
    mountinfo = cgroup_tree(tmp_path, {"/": [own], "/system.slice/b.service": members})
    fake = FakeProc(tmp_path / "proc", mountinfo=mountinfo)
    # Ten processes in three cgroups: the walk is the cheaper way to read them.
    for pid in members:
        fake.add(FakeProcess(pid=pid, cgroup="0::/system.slice/b.service\n"))
    cache = ProcessCache()
    scan(fake, cache)
    read_per_pid = []
    real_read_cgroup = processes.read_cgroup

    def read_cgroup(pid, proc_root="/proc"):
        read_per_pid.append(pid)
        return real_read_cgroup(pid, proc_root)

    monkeypatch.setattr(processes, "read_cgroup", read_cgroup)
    warm = scan(fake, cache)
    assert warm.processes[600].cgroup == "/system.slice/b.service"
    assert 600 not in read_per_pid


# With a change feed (the daemon's process events)


class ScriptedFeed:
    """A change feed that returns the next item of a list for each scan: a set of changed pids, or None."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.listings: list[list[int]] = []

    def changed_since_last_scan(self, pids):
        self.listings.append(list(pids))
        return self.answers.pop(0)


def walked_fake(tmp_path, members) -> FakeProc:
    """A fake /proc whose processes sit in one cgroup of a hierarchy the collector can walk.

    The walk reads three directories, so it is used from six processes on.
    """
    mountinfo = cgroup_tree(tmp_path, {"/": [os.getpid()], "/system.slice/b.service": members})
    fake = FakeProc(tmp_path / "proc", mountinfo=mountinfo)
    for pid in members:
        fake.add(FakeProcess(pid=pid, ppid=members[0] if pid != members[0] else 1,
                             cgroup="0::/system.slice/b.service\n"))
    return fake


def test_vouched_process_is_not_read(tmp_path):
    members = list(range(600, 608))
    fake = walked_fake(tmp_path, members)
    cache = ProcessCache()
    cache.change_feed = ScriptedFeed([None, set(), {601}])
    scan(fake, cache)
    # A change no event reported is not seen: proof that nothing was read.
    fake.write_stat(FakeProcess(pid=602, ppid=77))
    warm = scan(fake, cache)
    assert cache.unread == 8
    assert warm.processes[602].ppid == 600
    assert warm.processes[602].cgroup == "/system.slice/b.service"
    assert warm.processes[602].argv == ["/opt/quill/quill-operator", "run"]
    # An exec reported for 601: it alone is read again, in full.
    fake.add(FakeProcess(pid=601, ppid=600, argv=["sleep", "1"], addresses=(1,) * 7,
                         cgroup="0::/system.slice/b.service\n"))
    again = scan(fake, cache)
    assert cache.unread == 7
    assert cache.full_reads == 1
    assert again.processes[601].argv == ["sleep", "1"]
    assert again.processes[602].ppid == 600
    assert cache.change_feed.listings[1] == sorted(members)


def test_children_of_an_exited_parent_are_read_again(tmp_path):
    members = list(range(600, 608))
    fake = walked_fake(tmp_path, members)
    cache = ProcessCache()
    cache.change_feed = ScriptedFeed([None, {600}])
    scan(fake, cache)
    fake.remove(600)
    for pid in members[1:]:
        fake.write_stat(FakeProcess(pid=pid, ppid=1))
    warm = scan(fake, cache)
    assert 600 not in warm.processes
    assert {warm.processes[pid].ppid for pid in members[1:]} == {1}
    assert cache.unread == 0


def test_unread_scan_keeps_fresh_parentage(tmp_path):
    members = list(range(600, 608))
    fake = walked_fake(tmp_path, members)
    cache = ProcessCache()
    cache.change_feed = ScriptedFeed([None, None, set()])
    scan(fake, cache)
    fake.write_stat(FakeProcess(pid=601, ppid=1))
    assert scan(fake, cache).processes[601].ppid == 1
    unread = scan(fake, cache)
    assert cache.unread == 8
    assert unread.processes[601].ppid == 1


def test_skipped_walk_is_retried(tmp_path):
    members = list(range(600, 608))
    fake = walked_fake(tmp_path, members)
    extra = [tmp_path / "cgroup" / f"transient-{number}" for number in range(10)]
    for directory in extra:
        directory.mkdir()
        (directory / "cgroup.procs").write_text("")
    cache = ProcessCache()
    scan(fake, cache)
    assert cache.cgroup_directories == 13
    for directory in extra:
        (directory / "cgroup.procs").unlink()
        directory.rmdir()
    for _scan in range(processes._HIERARCHY_RETRY_SCANS - 1):
        scan(fake, cache)
    # Thirteen directories for eight processes: the walks were skipped, and the count is stale.
    assert cache.cgroup_directories == 13
    scan(fake, cache)
    assert cache.cgroup_directories == 3


def test_failed_scan_empties_the_cache(tmp_path, monkeypatch):
    members = list(range(600, 608))
    fake = walked_fake(tmp_path, members)
    cache = ProcessCache()
    cache.change_feed = ScriptedFeed([None, {600}, set()])
    scan(fake, cache)

    def broken(*_args, **_kwargs):
        raise MemoryError

    # The feed hands over pid 600's exit, then the scan fails before it is used.
    with monkeypatch.context() as patch:
        patch.setattr(processes, "_reuse_entry", broken)
        with pytest.raises(MemoryError):
            scan(fake, cache)
    assert len(cache) == 0
    fake.remove(600)
    fake.write_stat(FakeProcess(pid=601, ppid=1))
    assert scan(fake, cache).processes[601].ppid == 1


def test_process_missing_from_walk_is_read(tmp_path):
    members = list(range(600, 608))
    fake = walked_fake(tmp_path, members)
    cache = ProcessCache()
    cache.change_feed = ScriptedFeed([None, set()])
    scan(fake, cache)
    # Pid 607 moved to another cgroup while the walk ran: no member list had it.
    (tmp_path / "cgroup" / "system.slice" / "b.service" / "cgroup.procs").write_text(
        "".join(f"{pid}\n" for pid in members[:-1]))
    fake.add(FakeProcess(pid=607, ppid=600, cgroup="0::/system.slice/c.service\n"))
    warm = scan(fake, cache)
    assert cache.unread == 7
    assert warm.processes[607].cgroup == "/system.slice/c.service"


def test_feed_not_used_without_a_hierarchy_walk(fake):
    for pid in (600, 601):
        fake.add(FakeProcess(pid=pid, ppid=600 if pid == 601 else 1))
    cache = ProcessCache()
    cache.change_feed = ScriptedFeed([None, set()])
    scan(fake, cache)
    fake.write_stat(FakeProcess(pid=601, ppid=77))
    warm = scan(fake, cache)
    # Asked all the same, so that its record stays in step with the scans.
    assert len(cache.change_feed.listings) == 2
    assert cache.unread == 0
    assert warm.processes[601].ppid == 77


# Live host


def reference_process(pid: int) -> dict:
    """Read one process with psutil, as the collector did before it read /proc directly."""
    handle = psutil.Process(pid)
    with handle.oneshot():
        return {
            "ppid": handle.ppid(),
            "uid": handle.uids().effective,
            "exe": handle.exe() or None,
            "cwd": handle.cwd() or None,
            "environ": handle.environ(),
        }


@pytest.mark.live
def test_direct_reader_matches_psutil(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    child = subprocess.Popen(
        ["sleep", "30"], cwd=tmp_path,
        env={"BLUEPRINT_ID": "9321", "SERVICE_ID": "1", "TEST_MODE": "true", "PATH": "/usr/bin:/bin"},
    )
    try:
        time.sleep(0.2)
        snapshot = Snapshot(source="test")
        collect_processes(snapshot)
        compared = 0
        for pid, process in snapshot.processes.items():
            if pid == os.getpid():
                continue
            try:
                expected = reference_process(pid)
            except psutil.Error:
                continue  # exited since, or psutil cannot read it either
            assert process.ppid == expected["ppid"], pid
            assert process.exe == expected["exe"], pid
            assert process.cwd == expected["cwd"], pid
            # proc(5): the effective uid, or root when the process is not dumpable.
            assert process.uid in (expected["uid"], 0), pid
            if "environ" not in process.unreadable:
                assert process.env == redact.filter_environment(expected["environ"]), pid
            compared += 1
        assert compared >= 2
        mine = snapshot.processes[child.pid]
        assert mine.argv == ["sleep", "30"]
        assert mine.env == {"BLUEPRINT_ID": "9321", "SERVICE_ID": "1", "TEST_MODE": "true"}
        assert mine.cwd == str(tmp_path)
    finally:
        child.kill()
        child.wait()


@pytest.mark.live
def test_warm_scan_sees_new_and_forgets_exited():
    cache = ProcessCache()
    environment = {"BLUEPRINT_ID": "9321", "SERVICE_ID": "1", "TEST_MODE": "true", "PATH": "/usr/bin:/bin"}
    first = subprocess.Popen(["sleep", "30"], env=environment)
    second = None
    try:
        time.sleep(0.2)
        cold = Snapshot(source="test")
        collect_processes(cold, cache=cache)
        assert cold.processes[first.pid].env["BLUEPRINT_ID"] == "9321"

        # As from a shell line: fork, then two execs (env, then sleep).
        second = subprocess.Popen(["env", "BLUEPRINT_ID=9321", "SERVICE_ID=2", "sleep", "30"],
                                  env={"PATH": "/usr/bin:/bin"})
        first.kill()
        first.wait()
        time.sleep(0.2)
        warm = Snapshot(source="test")
        collect_processes(warm, cache=cache)
        assert cache.cached_reads > 0
        assert first.pid not in warm.processes
        assert first.pid not in cache
        seen = warm.processes[second.pid]
        assert seen.argv == ["sleep", "30"]
        assert seen.env == {"BLUEPRINT_ID": "9321", "SERVICE_ID": "2"}
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()


def test_scan_restores_the_garbage_collector(fake):
    fake.add(FakeProcess(pid=700))
    assert gc.isenabled()
    scan(fake)
    assert gc.isenabled()
    gc.disable()
    try:
        scan(fake)
        assert not gc.isenabled()
    finally:
        gc.enable()
