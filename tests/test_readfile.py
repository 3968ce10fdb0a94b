"""Reports and snapshots never replace what is not a regular file."""

import os
import stat

import pytest

from bpm_doctor.readfile import write_text_atomically


def test_symlink_target_replaced_link_kept(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_text_atomically(str(link), "new\n")
    assert link.is_symlink()
    assert target.read_text() == "new\n"


def test_fifo_is_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        write_text_atomically(str(fifo), "report\n")  # no reader: ENXIO at once, no hang
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_directory_is_rejected(tmp_path):
    with pytest.raises(IsADirectoryError):
        write_text_atomically(str(tmp_path), "report\n")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_new_file_gets_mode(tmp_path):
    path = tmp_path / "out.snap"
    write_text_atomically(str(path), "x\n", mode=0o600)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
