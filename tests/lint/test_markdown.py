"""Markdown runbooks: direct-run recipes, exempt local sections, and the missing manager step."""

from __future__ import annotations

from bpm_doctor.model import Severity
from tests.lint.helpers import lint, of_id, write

STALE_RUNBOOK = """
    <!--
    A header comment: ./target/release/ferry-relay run --service-id 5
    Going live, cargo tangle blueprint run
    -->
    # Ferry operations

    ## Going live

    1. `cargo tangle blueprint register --blueprint-id 9`
    2. approve it with `cargo tangle blueprint service approve --request-id 3`

    ## Starting the operator

    ```bash
    export BLUEPRINT_ID=9
    export SERVICE_ID=5
    ./target/release/ferry-relay run
    ```

    ## Local smoke test only

    ```bash
    SERVICE_ID=0 TEST_MODE=true cargo run --bin ferry-relay -- run
    ```
"""


def test_stale_runbook_findings_and_lines(tmp_path):
    path = write(tmp_path, "docs/runbook.md", STALE_RUNBOOK)
    findings = of_id(lint(path), "runbook-direct-run")
    assert [(f.line, f.severity) for f in findings] == [(7, Severity.WARNING), (17, Severity.WARNING)]
    assert 'section "Going live"' in findings[0].summary
    assert 'section "Starting the operator"' in findings[1].summary
    assert (findings[1].blueprint_id, findings[1].service_id) == (9, 5)


def test_manager_step_anywhere_counts(tmp_path):
    text = STALE_RUNBOOK.replace("## Starting the operator", "## Starting the manager\n\n"
                                 "    Run `systemctl enable --now ferry-manager` on the box.\n\n"
                                 "    ## Starting the operator")
    path = write(tmp_path, "runbook.md", text)
    summaries = [f.summary for f in of_id(lint(path), "runbook-direct-run")]
    assert not any("Going live" in summary for summary in summaries)


def test_manager_unit_known_from_repository(tmp_path):
    write(tmp_path, "deploy/ferry-node.service",
          "[Service]\nExecStart=/root/.cargo/bin/cargo-tangle blueprint run --keystore-path /k\n")
    write(tmp_path, "docs/deploy.md", """
        ## Deployment

        1. `cargo tangle blueprint register`
        2. `sudo systemctl enable --now ferry-node`
    """)
    assert lint(tmp_path).findings == []


def test_prose_manager_step_counts(tmp_path):
    path = write(tmp_path, "DEPLOY.md", """
        # Production

        Start the Blueprint Manager with its unit, then `cargo tangle blueprint register`.
    """)
    assert lint(path).findings == []


def test_exempt_by_first_line_and_nested(tmp_path):
    path = write(tmp_path, "notes.md", """
        ## Running a node

        Never on an operator box: this is for a laptop.

        ### Steps

        ```sh
        $ SERVICE_ID=1 ./bin/ferry-relay run
        ```
    """)
    assert lint(path).findings == []


def test_list_item_is_not_an_exemption(tmp_path):
    path = write(tmp_path, "notes.md", """
        ## Operating

        - for local testing only, see below

        ```sh
        SERVICE_ID=1 ./bin/ferry-relay run
        ```
    """)
    assert [f.line for f in of_id(lint(path), "runbook-direct-run")] == [6]


def test_service_id_alone_is_flagged_once(tmp_path):
    path = write(tmp_path, "ops.md", """
        ## Configure

        ```bash
        systemctl set-environment SERVICE_ID=4
        export SERVICE_ID=4
        ```
    """)
    findings = of_id(lint(path), "runbook-direct-run")
    assert [f.line for f in findings] == [4]
    assert "SERVICE_ID" in findings[0].summary


def test_unit_block_that_direct_runs(tmp_path):
    path = write(tmp_path, "units.md", """
        ## The runtime unit

        ```ini
        [Service]
        Environment=BLUEPRINT_ID=9 SERVICE_ID=5
        ExecStart=/srv/ferry/bin/ferry-relay run
        ```
    """)
    findings = of_id(lint(path), "runbook-direct-run")
    assert [(f.line, f.launcher) for f in findings] == [(6, "systemd-unit")]


def test_console_prompt_lines(tmp_path):
    path = write(tmp_path, "console.md", """
        ## Operator box

        ```console
        $ export BLUEPRINT_ID=9
        # /srv/ferry/bin/ferry-relay run
        /srv/ferry/bin/ferry-relay run (this is output)
        ```
    """)
    assert [f.line for f in of_id(lint(path), "runbook-direct-run")] == [5]


def test_inline_code_launch(tmp_path):
    path = write(tmp_path, "hint.md", "Or the runner: `./bin/ferry-relay run --service-id 2`.\n")
    findings = of_id(lint(path), "runbook-direct-run")
    assert [(f.line, f.service_id) for f in findings] == [(1, 2)]


def test_other_languages_are_not_commands(tmp_path):
    path = write(tmp_path, "code.md", """
        ## Production

        ```rust
        let args = ["run", "--service-id", "1"];
        ./bin/ferry-relay run --service-id 1
        ```
    """)
    assert lint(path).findings == []


def test_manager_flags_in_docs(tmp_path):
    path = write(tmp_path, "onboarding.md", """
        ## Start

        ```bash
        cargo tangle blueprint run --keystore-uri ./keystore --chain testnet
        ```
    """)
    findings = lint(path).findings
    assert [(f.id, f.line, f.severity) for f in findings] == [("manager-unknown-flag", 4, Severity.WARNING)]
