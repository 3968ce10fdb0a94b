"""A fake /proc tree under a temporary directory, for the process collector's unit tests.

Only the files the collector reads are written: PID/{stat,cmdline,environ,
cgroup}, the exe and cwd links, /stat with btime, and self/{cgroup,
mountinfo}. Without mountinfo entries the cgroup hierarchy walk finds no
mount and the collector reads PID/cgroup per process. The collector takes
the uid from the owner of PID/stat, as procfs sets it. Only root can give
a file another owner, so under another user every fake process has that
user's uid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

BOOT_TIME = 1_700_000_000
PF_KTHREAD = 0x00200000


@dataclass
class FakeProcess:
    """One process of the fake tree; `write` turns it into files."""

    pid: int
    ppid: int = 1
    comm: str = "quill-operator"
    state: str = "S"
    start_ticks: int = 1000
    flags: int = 0x400000
    argv: list[str] = field(default_factory=lambda: ["/opt/quill/quill-operator", "run"])
    environ: dict[str, str] = field(default_factory=dict)
    exe: str | None = "/opt/quill/quill-operator"
    cwd: str | None = "/srv/quill"
    uid: int = 1000
    cgroup: str = "0::/user.slice/user-1000.slice/session-3.scope\n"
    # Address fields 26-28 and 48-51 of stat; an exec changes them.
    addresses: tuple[int, ...] = (0x5600_0000_0000, 0x5600_0001_0000, 0x7FFC_0000_0000,
                                  0x7FFC_0000_1000, 0x7FFC_0000_1100, 0x7FFC_0000_1100, 0x7FFC_0000_1F00)


def stat_line(process: FakeProcess) -> str:
    """Format /proc/PID/stat with the fields proc(5) lists, enough of them for fields 1-52."""
    fields = ["0"] * 52
    fields[0] = str(process.pid)
    fields[1] = f"({process.comm})"
    fields[2] = process.state
    fields[3] = str(process.ppid)
    fields[4] = str(process.pid)  # pgrp
    fields[5] = str(process.pid)  # session
    fields[8] = str(process.flags)
    fields[21] = str(process.start_ticks)
    for index, value in zip((25, 26, 27, 47, 48, 49, 50), process.addresses):
        fields[index] = str(value)
    return " ".join(fields) + "\n"


class FakeProc:
    """The fake tree: `add` or change processes, then pass `root` as proc_root."""

    def __init__(self, root: Path, self_cgroup: str = "0::/\n", mountinfo: str = ""):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "stat").write_text(f"cpu  1 2 3 4\nbtime {BOOT_TIME}\nprocesses 10\n")
        (root / "self").mkdir(exist_ok=True)
        (root / "self" / "cgroup").write_text(self_cgroup)
        (root / "self" / "mountinfo").write_text(mountinfo)

    @property
    def path(self) -> str:
        return str(self.root)

    def add(self, process: FakeProcess) -> FakeProcess:
        """Write every file of `process`, replacing what its pid had."""
        directory = self.root / str(process.pid)
        directory.mkdir(exist_ok=True)
        (directory / "stat").write_text(stat_line(process))
        (directory / "cmdline").write_bytes(b"".join(word.encode() + b"\0" for word in process.argv))
        (directory / "environ").write_bytes(
            b"".join(f"{name}={value}".encode() + b"\0" for name, value in process.environ.items()))
        if os.geteuid() == 0:
            os.chown(directory / "stat", process.uid, -1)
        (directory / "cgroup").write_text(process.cgroup)
        for name in ("exe", "cwd"):
            link = directory / name
            if link.is_symlink():
                link.unlink()
            target = getattr(process, name)
            if target is not None:
                os.symlink(target, link)
        return process

    def write_stat(self, process: FakeProcess) -> None:
        """Rewrite only the stat file, leaving argv and the rest as they were."""
        (self.root / str(process.pid) / "stat").write_text(stat_line(process))

    def remove(self, pid: int) -> None:
        directory = self.root / str(pid)
        for entry in directory.iterdir():
            entry.unlink()
        directory.rmdir()
