"""Property tests: the file readers never crash, and no report prints a planted secret."""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from bpm_doctor import unitfile
from bpm_doctor.config import Config
from bpm_doctor.lint import compose, dockerfile, envfiles, markdown, scripts, shell, units, yamlish
from bpm_doctor.lint.commands import ShellState
from bpm_doctor.lint.context import LintContext
from bpm_doctor.lint.manager_help import BUILT_IN
from bpm_doctor.report import lint_json, lint_text, sarif
from tests.lint.helpers import lint

# Characters that drive the readers' state machines, plus lines cut from
# the constructs they understand, so generated text reaches deep branches.
SYNTAX = list("ab01 \t\n\\'\"$(){}[]<>|&;#=:-_/.*!@%`~,") + ["<<EOF", "EOF", "\nEOF\n", "<<-X", "${A:-<b>}", "$(x"]
SNIPPETS = [
    "[Service]", "[Unit]", "ExecStart=/srv/x/bin/op run", "ExecStart=", "Environment=BLUEPRINT_ID=1 SERVICE_ID=2",
    "ExecStart=/root/.cargo/bin/cargo-tangle blueprint run --chain x \\", "KillMode=process", "services:",
    "  op:", "    entrypoint: [\"/x\", \"run\"", "    command:", "      - run", "    environment:",
    "      <<: *env", "x: &env", "- a: b", "  key: |", "FROM debian AS b", "ENTRYPOINT [\"/x\", \"run\"]",
    "CMD exec /x run --service-id 1 \\", "ENV A=1 B", "```bash", "```", "~~~", "## Going live",
    "## Local test", "<!--", "-->", "export SERVICE_ID=1", "cat > a.service <<EOF", "EOF",
    "tmux new -d 'x run --service-id 1'", "sh -c \"exec ./y run --blueprint-id=2\"", "docker run -e SERVICE_ID=1 i",
    "BLUEPRINT_ID=1 # c", "export TANGLE_CONTRACT=0x1", "# bpm-doctor: ignore[direct-run-unit]",
    "# bpm-doctor: ignore[direct-run-unit] why", "`./x run --service-id 3`",
]
TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(SYNTAX), max_size=200).map("".join),
    st.lists(st.sampled_from(SNIPPETS), max_size=30).map("\n".join),
)
SECRET = st.text(alphabet=string.ascii_letters + string.digits, min_size=10, max_size=30).map(lambda s: "zq" + s)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _context() -> LintContext:
    return LintContext(Config(), lambda: BUILT_IN)


@FAST
@given(TEXT)
def test_shell_reader_never_crashes(text):
    state = ShellState()
    for step in state.walk(shell.parse(text)):
        for launch in step.launches:
            assert isinstance(launch.argv, list)


@FAST
@given(TEXT)
def test_unit_linter_never_crashes(text):
    unit = unitfile.parse(text, "/repo/x.service")
    units.lint_unit([unit], _context(), {"/repo/x.service"})


@FAST
@given(TEXT)
def test_env_linter_never_crashes(text):
    envfiles.lint_env("/repo/settings.env", text, _context(), mode=0o644)


@FAST
@given(TEXT)
def test_compose_reader_never_crashes(text):
    yamlish.load(text)
    compose.lint_compose("/nonexistent-repo/compose.yml", text, _context())


@FAST
@given(TEXT)
def test_dockerfile_linter_never_crashes(text):
    dockerfile.lint_dockerfile("/repo/Dockerfile", text, _context())


@FAST
@given(TEXT)
def test_script_linter_never_crashes(text):
    scripts.lint_script("/repo/x.sh", text, _context())


@FAST
@given(TEXT)
def test_markdown_linter_never_crashes(text):
    markdown.lint_markdown("/repo/x.md", text, _context())


FILE_NAMES = ["a.service", "b.service.d/o.conf", "settings.env", ".env", "run.sh", "docker-compose.yml",
              "other.yaml", "Dockerfile", "README.md"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FILE_NAMES), st.binary(max_size=400)), min_size=1, max_size=5))
def test_any_bytes_are_checked_without_errors(files):
    with tempfile.TemporaryDirectory() as directory:
        for name, data in files:
            path = Path(directory, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        result = lint(directory)
        assert result.errors == []
        assert [f for f in result.findings if f.id == "check-failed"] == []


PLANTED = {
    "deploy/runtime.service": """[Service]
Environment=BLUEPRINT_ID=9 SERVICE_ID=5
Environment=FOO_PRIVATE_KEY={s} "OTHER_SECRET={s}"
ExecStart=/srv/x/bin/op run --password {s} --rpc https://user:{s}@rpc.example.invalid/v1/{s} --api-key={s}
KillMode=process
""",
    "deploy/manager.service": """[Service]
ExecStart=/root/.cargo/bin/cargo-tangle blueprint run --password {s} --token={s} --http-rpc-url https://u:{s}@h/
KillMode=mixed
""",
    "deploy/settings.env": """BLUEPRINT_ID=9
API_KEY={s}
OPERATOR_PRIVATE_KEY={s} # rotated
export SIGNER_SECRET={s}
RPC_URL="https://u:{s}@rpc.example.invalid/"  # quoted
SERVICE_ID=<later>
""",
    "scripts/start.sh": """#!/bin/bash
export BLUEPRINT_ID=9
TOKEN={s}
nohup ./bin/op run --password {s} --url https://u:{s}@h/ &
docker run -e SERVICE_ID=1 -e BLUEPRINT_ID=2 -e API_KEY={s} img run --private-key={s}
cat > x.service <<EOF
[Service]
Environment=PROTOCOL=tangle SECRET_TOKEN={s}
ExecStart=/srv/op run --private-key={s}
EOF
""",
    "docker-compose.yml": """services:
  op:
    image: op
    command: ["run", "--service-id", "1", "--password", "{s}"]
    environment:
      - API_TOKEN={s}
""",
    "Dockerfile": """FROM debian
ENV BLUEPRINT_ID=1 SERVICE_ID=2 API_KEY={s}
ENTRYPOINT ["/x", "run", "--password", "{s}"]
""",
    "docs/runbook.md": """## Operating

```bash
export SERVICE_ID=1
./bin/op run --password {s} --rpc https://u:{s}@h/
cargo tangle blueprint run --secret-key {s}
```
""",
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SECRET, st.sets(st.sampled_from(sorted(PLANTED)), min_size=1))
def test_reports_never_print_planted_secret(secret, names):
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            path = Path(directory, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(PLANTED[name].replace("{s}", secret), encoding="utf-8")
            os.chmod(path, 0o644)
        result = lint(directory)
        assert result.findings, "the planted files must produce findings to render"
        for output in (lint_text.render(result), lint_json.render(result, 1), sarif.render(result)):
            assert secret not in output
