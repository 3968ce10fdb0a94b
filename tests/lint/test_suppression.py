"""Inline suppression comments: placement, reasons, anchors and the reasonless warning."""

from __future__ import annotations

from bpm_doctor.lint import suppression
from bpm_doctor.model import Severity
from tests.lint.helpers import ids, lint, of_id, write


def test_comment_above_suppresses_with_reason(tmp_path):
    path = write(tmp_path, "remote.service", """
        [Service]
        Environment=BLUEPRINT_ID=9 SERVICE_ID=5
        # bpm-doctor: ignore[direct-run-unit] remote-target VM, installed by the manager's SSH deployer
        ExecStart=/opt/blueprint/bin/ferry-relay run
    """)
    result = lint(path)
    assert result.findings == []
    assert len(result.suppressed) == 1
    finding = result.suppressed[0]
    assert finding.suppressed
    assert finding.allowed_reason == "remote-target VM, installed by the manager's SSH deployer"
    assert finding.severity == Severity.CRITICAL


def test_trailing_comment_suppresses_on_same_line(tmp_path):
    path = write(tmp_path, "run.sh", "./bin/ferry-relay run --service-id 1 & # bpm-doctor: ignore[script-launches-instance] e2e only\n")
    result = lint(path)
    assert result.findings == []
    assert [f.id for f in result.suppressed] == ["script-launches-instance"]


def test_comment_two_lines_above_does_not_apply(tmp_path):
    path = write(tmp_path, "run.sh", """
        # bpm-doctor: ignore[script-launches-instance] too far away

        ./bin/ferry-relay run --service-id 1
    """)
    assert ids(lint(path)) == ["script-launches-instance"]


def test_other_id_does_not_apply(tmp_path):
    path = write(tmp_path, "run.sh", """
        # bpm-doctor: ignore[placeholder-value] wrong id
        ./bin/ferry-relay run --service-id 1
    """)
    assert ids(lint(path)) == ["script-launches-instance"]


def test_several_ids_in_one_comment(tmp_path):
    path = write(tmp_path, "m.service", """
        [Service]
        # bpm-doctor: ignore[manager-unknown-flag, killmode-not-control-group] migrating next week
        ExecStart=/root/.cargo/bin/cargo-tangle blueprint run --pretty
        KillMode=process
    """)
    result = lint(path)
    assert ids(result) == ["killmode-not-control-group"]
    assert [f.id for f in result.suppressed] == ["manager-unknown-flag"]


def test_suppression_without_reason_silences_nothing(tmp_path):
    path = write(tmp_path, "run.sh", """
        # bpm-doctor: ignore[script-launches-instance]
        ./bin/ferry-relay run --service-id 1
    """)
    result = lint(path)
    assert ids(result) == ["script-launches-instance", "suppression-without-reason"]
    reasonless = of_id(result, "suppression-without-reason")[0]
    assert reasonless.severity == Severity.WARNING
    assert reasonless.line == 1
    assert result.suppressed == []


def test_file_finding_suppressed_in_header(tmp_path):
    path = write(tmp_path, "app-settings.env", """
        # bpm-doctor: ignore[settings-missing-key] settings of the pricer, not of the manager
        PRICER_URL=http://127.0.0.1:9301
    """, mode=0o600)
    result = lint(path)
    assert result.findings == []
    assert [f.id for f in result.suppressed] == ["settings-missing-key"]


def test_heredoc_suppressed_above_command(tmp_path):
    path = write(tmp_path, "gen.sh", """
        # bpm-doctor: ignore[direct-run-unit] the remote-target image unit
        cat > x.service <<EOF
        [Service]
        Environment=PROTOCOL=tangle
        ExecStart=/opt/blueprint/bin/ferry-relay run
        EOF
    """)
    result = lint(path)
    assert result.findings == []
    assert [(f.id, f.line) for f in result.suppressed] == [("direct-run-unit", 5)]


def test_markdown_html_comment_above_fence(tmp_path):
    path = write(tmp_path, "runbook.md", """
        ## Operating

        <!-- bpm-doctor: ignore[runbook-direct-run] shows the old way, under a strike-through -->
        ```bash
        SERVICE_ID=1 ./bin/ferry-relay run
        ```
    """)
    result = lint(path)
    assert result.findings == []
    assert result.suppressed[0].allowed_reason == "shows the old way, under a strike-through"


def test_marker_parsing():
    found = suppression.find("x\n  <!-- bpm-doctor: ignore[a,b] why not -->\n# bpm-doctor:ignore[c]\n")
    assert [(sorted(s.ids), s.reason, s.line) for s in found] == [(["a", "b"], "why not", 2), (["c"], "", 3)]
