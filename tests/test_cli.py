"""The command line: `check --help` lists the exit codes the code returns, and the man page agrees."""

import re
from pathlib import Path

import pytest

from bpm_doctor import cli
from bpm_doctor.report import STATUS_NAMES, UNKNOWN

MAN_PAGE = Path(__file__).resolve().parents[1] / "packaging" / "man" / "bpm-doctor.1"


def check_help(capsys) -> str:
    with pytest.raises(SystemExit) as caught:
        cli.main(["check", "--help"])
    assert caught.value.code == 0
    return capsys.readouterr().out


def test_check_help_lists_exit_codes(capsys):
    help_text = check_help(capsys)
    assert "exit status (Nagios plugin convention):" in help_text
    for code, name in STATUS_NAMES.items():
        assert re.search(rf"^  {code}  {name}: \S", help_text, re.MULTILINE), (code, name)


def test_check_help_keeps_epilog_lines(capsys):
    help_text = check_help(capsys)
    assert cli.CHECK_EPILOG in help_text


def test_check_help_names_usage_error_as_unknown(capsys):
    help_text = check_help(capsys)
    unknown_entry = help_text.split(f"  {UNKNOWN}  UNKNOWN: ", 1)[1]
    assert unknown_entry.startswith("an invalid command line, configuration or snapshot")
    with pytest.raises(SystemExit) as caught:
        cli.main(["check", "--no-such-option"])
    assert caught.value.code == UNKNOWN


def test_man_page_exit_status_matches_code():
    text = MAN_PAGE.read_text(encoding="utf-8")
    section = text.split(".SH EXIT STATUS\n", 1)[1].split("\n.SH ", 1)[0]
    for code, name in STATUS_NAMES.items():
        assert f".B {code}\n{name}: " in section, (code, name)
    assert f"an invalid command line exits {UNKNOWN}," in section
    assert "exits 2, as Python's argparse" not in section
