"""cgroup paths are read from both the unified and the hybrid layout."""

import pytest

from bpm_doctor.collect.processes import read_cgroup


@pytest.mark.parametrize("content, expected", [
    ("0::/system.slice/foo.service\n", "/system.slice/foo.service"),
    ("12:pids:/\n1:name=systemd:/system.slice/foo.service\n0::/\n", "/system.slice/foo.service"),
    ("12:pids:/\n1:name=systemd:/\n0::/system.slice/foo.service\n", "/system.slice/foo.service"),
    ("0::/\n", "/"),
])
def test_read_cgroup_layouts(tmp_path, content, expected):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text(content)
    assert read_cgroup(7, str(tmp_path)) == expected


def test_read_cgroup_missing_process(tmp_path):
    assert read_cgroup(7, str(tmp_path)) is None
