"""Shell scripts: launches through wrappers, here-documents, entrypoints, and the shell reader."""

from __future__ import annotations

from bpm_doctor.lint import shell
from bpm_doctor.lint.commands import expand
from bpm_doctor.model import Severity
from tests.lint.helpers import ids, lint, of_id, write


def test_nohup_background_launch(tmp_path):
    path = write(tmp_path, "start.sh", """
        #!/bin/bash
        export BLUEPRINT_ID=9
        export SERVICE_ID=5
        nohup ./target/release/ferry-relay run > /var/log/ferry.log 2>&1 &
    """)
    findings = of_id(lint(path), "script-launches-instance")
    assert len(findings) == 1
    assert findings[0].severity == Severity.CRITICAL
    assert findings[0].line == 4
    assert findings[0].launcher == "shell"
    assert "through nohup, in the background" in findings[0].summary
    assert (findings[0].blueprint_id, findings[0].service_id) == (9, 5)


def test_tmux_launch_has_tmux_launcher(tmp_path):
    path = write(tmp_path, "tmux.sh", """
        tmux new-session -d -s ferry 'SERVICE_ID=5 /srv/ferry/bin/ferry-relay run'
    """)
    findings = of_id(lint(path), "script-launches-instance")
    assert [f.launcher for f in findings] == ["tmux"]


def test_screen_launch_has_screen_launcher(tmp_path):
    path = write(tmp_path, "screen.sh", "screen -dmS ferry /srv/ferry/bin/ferry-relay run --service-id 5\n")
    findings = of_id(lint(path), "script-launches-instance")
    assert [(f.launcher, f.service_id) for f in findings] == [("screen", 5)]


def test_cargo_run_with_ids_is_launch(tmp_path):
    path = write(tmp_path, "dev.sh", "SERVICE_ID=0 TEST_MODE=true cargo run --release --bin ferry-relay -- run\n")
    findings = of_id(lint(path), "script-launches-instance")
    assert len(findings) == 1
    assert "ferry-relay" in findings[0].summary


def test_exported_ids_skip_other_tools(tmp_path):
    path = write(tmp_path, "deploy.sh", """
        export BLUEPRINT_ID=9 SERVICE_ID=5
        npm run build
        cargo run --bin ferry-relay
        curl -fsS https://rpc.example.invalid/
        echo "now run: ./bin/ferry-relay run --service-id 5"
    """)
    assert lint(path).findings == []


def test_docker_run_with_ids_is_container_launch(tmp_path):
    path = write(tmp_path, "deploy.sh", "docker run -d --name op -e BLUEPRINT_ID=21 -e SERVICE_ID=1 tradebp:latest\n")
    findings = lint(path).findings
    assert [(f.id, f.launcher) for f in findings] == [("container-runs-instance", "container")]


def test_entrypoint_script_is_container_launch(tmp_path):
    path = write(tmp_path, "docker/entrypoint.sh", """
        #!/bin/sh
        exec /usr/local/bin/kite run --blueprint-id="$BLUEPRINT_ID" --service-id="$SERVICE_ID" "$@"
    """)
    assert ids(lint(path)) == ["container-runs-instance"]


def test_script_run_by_dockerfile_is_entrypoint(tmp_path):
    write(tmp_path, "Dockerfile", 'FROM debian\nCOPY start.sh /start.sh\nENTRYPOINT ["/start.sh"]\n')
    write(tmp_path, "start.sh", "#!/bin/sh\nexec /usr/local/bin/kite run --service-id \"$SERVICE_ID\"\n")
    assert ids(lint(tmp_path)) == ["container-runs-instance"]


def test_script_without_suffix_found_by_shebang(tmp_path):
    write(tmp_path, "bin/run-operator", "#!/usr/bin/env bash\n/srv/ferry/bin/ferry-relay run --service-id 3 &\n")
    write(tmp_path, "bin/README", "ferry-relay run --service-id 3\n")
    assert ids(lint(tmp_path)) == ["script-launches-instance"]


def test_manager_with_bad_flags_in_script(tmp_path):
    path = write(tmp_path, "go-live.sh", "cargo tangle blueprint run --chain testnet --keystore-uri /k &\n")
    findings = lint(path).findings
    assert [(f.id, f.severity) for f in findings] == [("manager-unknown-flag", Severity.WARNING)]


def test_comments_are_not_commands(tmp_path):
    path = write(tmp_path, "doc.sh", """
        #!/bin/sh
        # expect: critical script-launches-instance
        # nohup ./bin/ferry-relay run --service-id 5 &
        # cat > "$OUT" <<EOF ... EOF
        echo done  # ./bin/ferry-relay run --service-id 5
    """)
    assert lint(path).findings == []


def test_heredoc_unit_keeps_file_lines(tmp_path):
    path = write(tmp_path, "gen.sh", """
        #!/usr/bin/env bash
        set -euo pipefail
        SVC="${SERVICE_ID:-<fill-after-approval>}"
        OUT="units/quill${N}-runtime.service"
        cat > "$OUT" <<EOF
        [Service]
        Environment=BLUEPRINT_ID=42
        Environment=SERVICE_ID=${SVC}
        ExecStart=/srv/quill/bin/quill-operator run
        EOF
        cat <<NEXT
        then set SERVICE_ID=<approved id> and run again
        NEXT
    """)
    result = lint(path)
    direct = of_id(result, "direct-run-unit")
    assert [(f.line, f.unit) for f in direct] == [(9, "quill${N}-runtime.service")]
    placeholders = of_id(result, "placeholder-value")
    assert [f.line for f in placeholders] == [3]
    assert "SVC" in placeholders[0].summary


def test_heredoc_through_sudo_tee(tmp_path):
    path = write(tmp_path, "install.sh", """
        sudo tee /etc/systemd/system/ferry.service > /dev/null <<'UNIT'
        [Service]
        Environment=PROTOCOL=tangle
        ExecStart=/srv/ferry/bin/ferry-relay run
        UNIT
    """)
    assert [(f.id, f.unit, f.line) for f in lint(path).findings] == [("direct-run-unit", "ferry.service", 4)]


def test_heredoc_manager_unit_flags(tmp_path):
    path = write(tmp_path, "install.sh", """
        cat <<EOF | tee /etc/systemd/system/bpm.service
        [Service]
        ExecStart=/root/.cargo/bin/cargo-tangle blueprint run --pretty
        KillMode=process
        EOF
    """)
    assert ids(lint(path)) == ["killmode-not-control-group", "manager-unknown-flag"]


def test_heredoc_settings_missing_keys(tmp_path):
    path = write(tmp_path, "gen-settings.sh", """
        ROOT=/srv/quill
        cat > "$ROOT/settings.env" <<EOF
        QUILL_RPC=https://rpc.example.invalid/
        EOF
    """)
    findings = lint(path).findings
    assert [(f.id, f.line) for f in findings] == [("settings-missing-key", 2)]


def test_quoted_heredoc_skips_defaults(tmp_path):
    path = write(tmp_path, "gen.sh", """
        SVC="<later>"
        cat > x.service <<'EOF'
        [Service]
        Environment=SERVICE_ID=${SVC}
        ExecStart=/opt/pricer
        EOF
    """)
    assert lint(path).findings == []


def test_shell_joins_continuations():
    commands = shell.parse('exec /bin/x run \\\n  --a="$B" \\\n  \'c d\' "$@"\n')
    assert len(commands) == 1
    assert commands[0].line == 1
    assert commands[0].words == ["exec", "/bin/x", "run", "--a=$B", "c d", "$@"]


def test_shell_reads_indented_heredoc():
    commands = shell.parse("cat <<-END >out\n\tbody one\n\tEND\nls\n")
    document = commands[0].here_documents[0]
    assert document.body == [(2, "body one")]
    assert commands[0].output_targets() == ["out"]
    assert commands[1].words == ["ls"]
    assert commands[1].line == 4


def test_shell_separates_fd_redirections():
    command = shell.parse("./x run 2>&1 >>log &")[0]
    assert command.words == ["./x", "run"]
    assert command.background


def test_shell_survives_unterminated_quote():
    commands = shell.parse("echo 'never closed\nnext line\n")
    assert commands[0].words[0] == "echo"


def test_shell_skips_keywords_and_for_headers():
    commands = shell.parse("if true; then ./a run; fi\nfor x in a b; do ./b; done\n")
    assert [c.words for c in commands] == [["true"], ["./a", "run"], ["./b"]]


def test_expand_peels_nested_wrappers():
    launches = expand(["sudo", "-u", "op", "env", "SERVICE_ID=1", "timeout", "5", "nohup", "./x", "run"])
    assert [launch.argv for launch in launches] == [["./x", "run"]]
    assert launches[0].env == {"SERVICE_ID": "1"}
    assert launches[0].via == ["sudo", "env", "timeout", "nohup"]


def test_expand_reads_start_stop_daemon():
    launches = expand(["start-stop-daemon", "--start", "-b", "--exec", "/srv/x", "--", "run", "--pretty"])
    assert launches[0].argv == ["/srv/x", "run", "--pretty"]
    assert launches[0].background
