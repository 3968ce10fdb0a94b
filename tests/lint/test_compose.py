"""Compose files, Dockerfiles and the small YAML reader behind compose linting."""

from __future__ import annotations

from bpm_doctor.lint import yamlish
from tests.lint.helpers import ids, lint, of_id, write

OPERATOR_COMPOSE = """
    # header: the entrypoint below is an instance
    services:
      operator:
        image: registry.example.invalid/tradebp:latest
        entrypoint: ["/usr/local/bin/trading-blueprint"]
        restart: unless-stopped
        env_file: ./operator.env
      db:
        image: postgres:16
        environment:
          POSTGRES_PASSWORD: zqComposeSecret9
"""


def test_configured_binary_as_entrypoint(tmp_path):
    path = write(tmp_path, "docker-compose.yml", OPERATOR_COMPOSE)
    assert lint(path).findings == []
    findings = lint(path, config='instance_binaries = ["trading-blueprint"]').findings
    assert [(f.id, f.line, f.launcher) for f in findings] == [("container-runs-instance", 5, "container")]
    assert any("restart: unless-stopped" in item for item in findings[0].evidence)


def test_env_file_supplies_ids(tmp_path):
    path = write(tmp_path, "docker-compose.yml", OPERATOR_COMPOSE)
    write(tmp_path, "operator.env", "SERVICE_ID=1\nBLUEPRINT_ID=21\n", mode=0o600)
    findings = of_id(lint(path), "container-runs-instance")
    assert [(f.blueprint_id, f.service_id) for f in findings] == [(21, 1)]


def test_command_with_run_and_service_id(tmp_path):
    path = write(tmp_path, "compose.yaml", """
        services:
          kite:
            image: ghcr.example.invalid/kite:1.2
            command:
              - run
              - --service-id
              - "3"
    """)
    findings = of_id(lint(path), "container-runs-instance")
    assert [(f.line, f.service_id) for f in findings] == [(4, 3)]


def test_environment_mapping_with_numeric_ids(tmp_path):
    path = write(tmp_path, "stack.yml", """
        x-ids: &ids
          BLUEPRINT_ID: "4"
          SERVICE_ID: "2"
        services:
          op:
            image: op
            entrypoint: /usr/local/bin/op
            environment:
              <<: *ids
              RUST_LOG: info
    """)
    assert ids(lint(path)) == ["container-runs-instance"]


def test_manager_in_compose_is_quiet(tmp_path):
    path = write(tmp_path, "compose.yml", """
        services:
          manager:
            image: bpm
            command: cargo-tangle blueprint run --keystore-path /k --settings-file /s/settings.env
    """)
    assert lint(path).findings == []


def test_non_compose_yaml_is_checked_quietly(tmp_path):
    path = write(tmp_path, ".github/workflows/ci.yml", """
        on: push
        jobs:
          test:
            steps:
              - run: ./target/release/ferry-relay run --service-id 5
    """)
    result = lint(path)
    assert result.findings == []
    assert result.files == [str(path)]


def test_dockerfile_exec_form_entrypoint(tmp_path):
    path = write(tmp_path, "Dockerfile", """
        FROM debian:bookworm
        ENV BLUEPRINT_ID=7 SERVICE_ID=2
        ENTRYPOINT ["/usr/local/bin/kite", "run"]
    """)
    findings = lint(path).findings
    assert [(f.id, f.line, f.blueprint_id, f.service_id) for f in findings] == [
        ("container-runs-instance", 3, 7, 2)]


def test_dockerfile_shell_form_and_continuation(tmp_path):
    path = write(tmp_path, "docker/kite.Dockerfile", """
        FROM debian
        # ENTRYPOINT ["/never/this", "run", "--service-id", "1"]
        ENTRYPOINT exec /usr/local/bin/kite run \\
            --service-id "$SERVICE_ID"
    """)
    assert [(f.id, f.line) for f in lint(path).findings] == [("container-runs-instance", 3)]


def test_dockerfile_entrypoint_wrapper_with_cmd(tmp_path):
    path = write(tmp_path, "Dockerfile", """
        FROM debian
        ENTRYPOINT ["tini", "--"]
        CMD ["/usr/local/bin/kite", "run", "--blueprint-id", "1"]
    """)
    assert ids(lint(path)) == ["container-runs-instance"]


def test_dockerfile_only_final_stage_counts(tmp_path):
    path = write(tmp_path, "Dockerfile", """
        FROM rust AS build
        CMD ["/src/target/release/kite", "run", "--service-id", "1"]
        FROM debian
        CMD ["/usr/local/bin/pricer"]
    """)
    assert lint(path).findings == []


def test_yaml_reader_structure_and_lines():
    document = yamlish.load(
        "a: 1  # comment\n"
        "list:\n"
        "- x\n"
        "- 'y # not a comment'\n"
        "flow: [\"p\",\n"
        "  q, {k: v}]\n"
        "text: |\n"
        "  line one\n"
        "  line two\n"
        "next: \"quoted: value\"\n"
    )
    assert document.get("a").value == "1"
    assert document.get("a").line == 1
    assert [item.value for item in document.get("list").value] == ["x", "y # not a comment"]
    flow = document.get("flow").value
    assert [flow[0].value, flow[1].value] == ["p", "q"]
    assert flow[2].value["k"].value == "v"
    assert document.get("text").value == "line one\nline two"
    assert document.get("next").value == "quoted: value"
    assert document.get("next").line == 10


def test_yaml_reader_sequence_of_mappings():
    document = yamlish.load("env_file:\n  - path: ./a.env\n    required: false\n  - ./b.env\n")
    items = document.get("env_file").value
    assert items[0].get("path").value == "./a.env"
    assert items[0].get("required").value == "false"
    assert items[1].value == "./b.env"
