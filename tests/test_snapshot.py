"""The hostsnap/0 format: round trips, errors that name file and line, atomic writes."""

import os

import pytest

from bpm_doctor import snapshot
from bpm_doctor.errors import InputError
from bpm_doctor.model import PathEntry, Process, Snapshot
from tests.support import hostsnap

SECRET = "0xREDACTED_FIXTURE_VALUE"


@pytest.mark.parametrize("path", [p for p in hostsnap.case_files() if p.suffix == ".hostsnap"],
                         ids=lambda p: p.name)
def test_render_parse_round_trip(path):
    text = snapshot.render(snapshot.load(path))
    assert snapshot.render(snapshot.parse(text)) == text
    assert SECRET not in text


def test_parse_rejects_text_without_sections():
    with pytest.raises(InputError, match=r"^x.snap:1: not a hostsnap/0 snapshot"):
        snapshot.parse("hello\n", "x.snap")


@pytest.mark.parametrize("body, line, message", [
    ("#=== proc abc\nppid: 1\n", 1, "invalid pid"),
    ("#=== proc 5\nppid: one\n", 2, "invalid ppid"),
    ("#=== proc 5\nppid 1\n", 2, "expected 'key: value'"),
    ("#=== listen\nudp 1.2.3.4:5 pid=3\n", 2, "invalid listen line"),
    ("#=== paths\nweird /x\n", 2, "invalid paths line"),
    ("#=== file relative/path\nx\n", 1, "needs an absolute path"),
    ("#=== active-services\n42-11\n", 2, "invalid active service"),
])
def test_parse_errors_name_the_line(body, line, message):
    with pytest.raises(InputError) as caught:
        snapshot.parse(body, "bad.snap")
    assert str(caught.value).startswith(f"bad.snap:{line}: ")
    assert message in str(caught.value)


def test_load_reports_unreadable_file(tmp_path):
    with pytest.raises(InputError, match="cannot read snapshot"):
        snapshot.load(tmp_path / "absent.snap")


def test_file_content_cannot_start_a_section():
    parsed = snapshot.parse("#=== file /etc/x.env\nA=1\n")
    parsed.files["/etc/x.env"] = "A=1\n#=== proc 1\n"
    reparsed = snapshot.parse(snapshot.render(parsed))
    assert reparsed.processes == {}


def test_save_is_atomic_and_private(tmp_path):
    target = tmp_path / "out.snap"
    target.write_text("previous\n")
    parsed = snapshot.parse("#=== host\narch: x86_64\n")
    snapshot.save(parsed, str(target))
    assert target.read_text().startswith("# bpm-doctor snapshot")
    assert oct(os.stat(target).st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["out.snap"]


def test_path_state_distinguishes_unknown_from_missing():
    parsed = snapshot.parse("#=== paths\nmissing /opt/old\ndir /opt/new\n#=== file /etc/a.env\nA=1\n")
    assert parsed.path_state("/opt/old/bin/x") == "missing"
    assert parsed.path_state("/opt/new") == "exists"
    assert parsed.path_state("/etc/a.env") == "exists"
    assert parsed.path_state("/opt/other") == "unknown"


def test_environment_filtered_on_load():
    parsed = snapshot.parse(f"#=== proc 7\nppid: 1\nargv: x run\nenv: SERVICE_ID=3\nenv: OPERATOR_KEY={SECRET}\n")
    assert parsed.processes[7].env == {"SERVICE_ID": "3"}


def test_multiline_argv_stays_on_one_line():
    """A `bash -c` script with line breaks must not break the line-based format."""
    host = Snapshot()
    host.processes[7] = Process(pid=7, ppid=1, argv=["bash", "-c", "set -eu\nexec sleep 1"], cwd="/srv/odd\ndir")
    parsed = snapshot.parse(snapshot.render(host))
    assert parsed.processes[7].argv == ["bash", "-c", "set -eu\\nexec sleep 1"]
    assert parsed.processes[7].cwd == "/srv/odd\\ndir"


def test_terminal_escapes_are_written_escaped():
    host = Snapshot()
    host.processes[7] = Process(pid=7, ppid=1, argv=["x", "--name=evil\x1b[2J\u202eline"])
    text = snapshot.render(host)
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "--name=evil\\x1b[2J\\u202eline" in text
    parsed = snapshot.parse(text)
    assert parsed.processes[7].argv == ["x", "--name=evil\\x1b[2J\\u202eline"]


def test_host_text_cannot_start_a_section():
    host = Snapshot()
    forged = "#=== proc 4343\nppid: 1\nenv: BLUEPRINT_ID=4242\nenv: SERVICE_ID=85"
    host.journals["x.service"] = ["#=== proc 4343", "ppid: 1", forged]
    host.crontabs["root"] = "* * * * *\t/bin/true\n" + forged
    host.paths["/tmp/a\n#=== proc 4345"] = PathEntry(path="/tmp/a\n#=== proc 4345", kind="file")
    parsed = snapshot.parse(snapshot.render(host))
    assert parsed.processes == {}
    assert parsed.crontabs["root"].startswith("* * * * *\t/bin/true\n")


def test_duplicate_proc_section_is_rejected():
    with pytest.raises(InputError, match=r"^d.snap:3: duplicate section 'proc 5'"):
        snapshot.parse("#=== proc 5\nppid: 1\n#=== proc 5\nppid: 1\n", "d.snap")


def test_load_accepts_leading_byte_order_mark(tmp_path):
    path = tmp_path / "bom.hostsnap"
    path.write_bytes(b"\xef\xbb\xbf#=== proc 5\nppid: 1\nargv: x run\n#=== host\narch: x86_64\n")
    loaded = snapshot.load(path)
    assert sorted(loaded.processes) == [5]
    assert loaded.processes[5].ppid == 1
    assert loaded.arch == "x86_64"


def test_parse_accepts_bom_before_only_section():
    parsed = snapshot.parse("\ufeff#=== host\narch: aarch64\n", "bom.snap")
    assert parsed.arch == "aarch64"


def test_byte_order_mark_keeps_line_numbers():
    with pytest.raises(InputError, match=r"^bom.snap:2: invalid ppid 'one'"):
        snapshot.parse("\ufeff#=== proc 5\nppid: one\n", "bom.snap")


def test_load_rejects_device(tmp_path):
    with pytest.raises(InputError, match="/dev/zero: cannot read snapshot: not a regular file"):
        snapshot.load("/dev/zero")


def test_load_rejects_oversized_file(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "MAX_SNAPSHOT_BYTES", 64)
    path = tmp_path / "big.hostsnap"
    path.write_text("#=== proc 1\nppid: 0\n" + "argv: x\n" * 20)
    with pytest.raises(InputError, match="big.hostsnap: not a snapshot: larger than"):
        snapshot.load(path)

