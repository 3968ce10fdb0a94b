"""Bridge listeners come from /proc/net/unix, and relative bind paths resolve against the owner's cwd."""

import os

from bpm_doctor.collect.sockets import collect_listeners
from bpm_doctor.model import Listener, Process, Snapshot

_HEADER = "Num       RefCount Protocol Flags    Type St Inode Path\n"
_MANAGER = 3001
_RELATIVE = "./blueprint-manager/run/svc-21-5/svc-21-5.sock"
_ABSOLUTE = "/srv/bp/blueprint-manager/run/svc-21-5/svc-21-5.sock"


def _listening(inode: int, path: str) -> str:
    """Return a /proc/net/unix line for a listening stream socket (flag __SO_ACCEPTCON)."""
    return f"0000000000000000: 00000002 00000000 00010000 0001 01 {inode} {path}\n"


def _scan(tmp_path, lines: list[str], owned_inodes: list[int]) -> list[Listener]:
    """Build a fake /proc with the manager owning `owned_inodes`, and collect its listeners."""
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "unix").write_text(_HEADER + "".join(lines))
    descriptors = tmp_path / str(_MANAGER) / "fd"
    descriptors.mkdir(parents=True)
    for number, inode in enumerate(owned_inodes, start=3):
        os.symlink(f"socket:[{inode}]", descriptors / str(number))
    snapshot = Snapshot()
    snapshot.processes[_MANAGER] = Process(pid=_MANAGER, ppid=1, cwd="/srv/bp")
    collect_listeners(snapshot, [_MANAGER], {"/srv/bp/blueprint-manager/run"}, str(tmp_path))
    return snapshot.listeners


def test_relative_listener_resolves_against_owner_cwd(tmp_path):
    assert _scan(tmp_path, [_listening(100, _RELATIVE)], [100]) == [Listener("unix", _ABSOLUTE, _MANAGER)]


def test_relative_listener_without_owner_skipped(tmp_path):
    assert _scan(tmp_path, [_listening(100, _RELATIVE)], []) == []


def test_absolute_listener_kept(tmp_path):
    assert _scan(tmp_path, [_listening(100, _ABSOLUTE)], [100]) == [Listener("unix", _ABSOLUTE, _MANAGER)]


def test_abstract_listener_skipped(tmp_path):
    assert _scan(tmp_path, [_listening(100, "@svc-21-5/svc-21-5.sock")], [100]) == []
