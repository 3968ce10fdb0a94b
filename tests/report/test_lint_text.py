"""The lint text report: control characters in file names are escaped, one finding stays one line."""

import json

import pytest

from bpm_doctor.report import lint_json, lint_text, sarif
from tests.lint.helpers import lint, write

HAND_RUN_UNIT = """
    [Service]
    Environment=BLUEPRINT_ID=9 SERVICE_ID=5 TEST_MODE=true
    ExecStart=/srv/ferry/bin/ferry-relay run
"""


@pytest.mark.parametrize("name, shown", [
    ("ferry\nruntime.service", "ferry\\nruntime.service"),
    ("ferry\rruntime.service", "ferry\\rruntime.service"),
    ("ferry\truntime.service", "ferry\\truntime.service"),
    ("ferry\x1b[31mruntime.service", "ferry\\x1b[31mruntime.service"),
    ("ferry\x85runtime.service", "ferry\\x85runtime.service"),
    ("ferry\u2028runtime.service", "ferry\\u2028runtime.service"),
])
def test_control_character_in_name_escaped(tmp_path, name, shown):
    write(tmp_path, f"deploy/{name}", HAND_RUN_UNIT)
    result = lint(tmp_path)
    output = lint_text.render(result)
    lines = output.splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith(f"{tmp_path}/deploy/{shown}:3: critical direct-run-unit: unit {shown} ")
    assert lines[1] == "    ExecStart: /srv/ferry/bin/ferry-relay run"
    assert lines[3].startswith("bpm-doctor lint: 1 finding(s)")
    assert name not in output


def test_plain_file_name_is_unchanged(tmp_path):
    write(tmp_path, "deploy/ferry-runtime.service", HAND_RUN_UNIT)
    output = lint_text.render(lint(tmp_path))
    assert output.startswith(f"{tmp_path}/deploy/ferry-runtime.service:3: critical direct-run-unit: "
                             "unit ferry-runtime.service starts")


def test_escape_controls_keeps_other_text():
    assert lint_text.escape_controls("a\\nb ü ✓") == "a\\nb ü ✓"
    assert lint_text.escape_controls("\x00\x7f\u2029") == "\\x00\\x7f\\u2029"


def test_json_and_sarif_keep_raw_name(tmp_path):
    path = write(tmp_path, "deploy/ferry\nruntime.service", HAND_RUN_UNIT)
    result = lint(tmp_path)
    report = json.loads(lint_json.render(result))
    assert report["findings"][0]["path"] == str(path)
    log = json.loads(sarif.render(result, cwd=str(tmp_path)))
    location = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "deploy/ferry%0Aruntime.service"
