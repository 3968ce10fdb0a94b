"""Reading `cargo-tangle blueprint run --help`, with a stand-in help text and fake executables.

The help text below is a stand-in written for these tests in the layout
clap 4 prints (long help: option lines indented 2 or 6 spaces, descriptions
indented 10, `[default: ...]`, `[env: ...]` and `[aliases: ...]` notes). It
is not copied from a real cargo-tangle, which is not installed here.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

from bpm_doctor.config import Config
from bpm_doctor.lint import lint_paths
from bpm_doctor.lint.manager_help import BUILT_IN, accepted_flags, parse_help
from tests.lint.helpers import write

STAND_IN_HELP = """\
Run a blueprint through the Blueprint Manager

Usage: cargo-tangle blueprint run [OPTIONS]

Options:
  -p, --protocol <PROTOCOL>
          The protocol to run

          [default: tangle]
          [possible values: tangle]

      --http-rpc-url <URL>
          HTTP RPC endpoint

          [default: http://127.0.0.1:8545]

  -k, --keystore-path <KEYSTORE_PATH>
          Keystore directory
          --keystore-uri is not accepted here, use this flag

      --network <NETWORK>
          [aliases: --chain-name]

      --allow-unchecked-attestations
          Skip attestation checks

          [env: ALLOW_UNCHECKED_ATTESTATIONS=]

      --vm, --no-vm
  -f, --settings-file <SETTINGS_FILE>    short-help style description on the same line
  -h, --help
          Print help (see a summary with '-h')
"""


def test_parse_help_splits_values_and_switches():
    with_value, switches = parse_help(STAND_IN_HELP)
    assert with_value == {"-p", "--protocol", "--http-rpc-url", "-k", "--keystore-path", "--network",
                          "--chain-name", "-f", "--settings-file"}
    assert switches == {"--allow-unchecked-attestations", "--vm", "--no-vm", "-h", "--help"}


def test_description_lines_are_not_options():
    _with_value, switches = parse_help(STAND_IN_HELP)
    assert "--keystore-uri" not in switches


def test_missing_cargo_tangle_uses_built_in():
    assert accepted_flags(which=lambda name: None) is BUILT_IN


def test_help_output_replaces_built_in():
    def run(command, **kwargs):
        assert command[1:] == ["blueprint", "run", "--help"]
        assert kwargs["timeout"] == 5.0
        return subprocess.CompletedProcess(command, 0, STAND_IN_HELP, "")

    flags = accepted_flags(which=lambda name: "/opt/bin/cargo-tangle", run=run)
    assert "--chain-name" in flags.with_value
    assert "--vm" in flags.switches
    assert "/opt/bin/cargo-tangle" in flags.source


def test_timeout_falls_back_with_reason():
    def run(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    flags = accepted_flags(which=lambda name: "/opt/bin/cargo-tangle", run=run)
    assert flags.with_value == BUILT_IN.with_value
    assert "timed out after 5 s" in flags.source


def test_failed_help_falls_back():
    def run(command, **kwargs):
        return subprocess.CompletedProcess(command, 2, "", "error: unexpected argument")

    flags = accepted_flags(which=lambda name: "/opt/bin/cargo-tangle", run=run)
    assert flags.switches == BUILT_IN.switches
    assert "exited with status 2" in flags.source


def _fake_cargo_tangle(directory, body: str) -> str:
    path = directory / "cargo-tangle"
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(directory)


def test_installed_cargo_tangle_help_is_used(tmp_path, monkeypatch):
    bin_directory = tmp_path / "bin"
    bin_directory.mkdir()
    help_file = write(tmp_path, "help.txt", STAND_IN_HELP)
    monkeypatch.setenv("PATH", _fake_cargo_tangle(bin_directory, f"exec cat '{help_file}'\n") + os.pathsep
                       + os.environ.get("PATH", ""))
    unit = write(tmp_path, "repo/m.service",
                 "[Service]\nExecStart=/root/.cargo/bin/cargo-tangle blueprint run --chain-name testnet --pretty\n")
    result = lint_paths([str(unit)], Config())
    assert [f.id for f in result.findings] == ["manager-unknown-flag"]
    assert "--pretty" in result.findings[0].summary
    assert "--chain-name" not in result.findings[0].summary
    assert any(str(bin_directory) in item for item in result.findings[0].evidence)


def test_hanging_cargo_tangle_times_out(tmp_path, monkeypatch):
    bin_directory = tmp_path / "bin"
    bin_directory.mkdir()
    sleep = shutil.which("sleep")
    monkeypatch.setenv("PATH", _fake_cargo_tangle(bin_directory, f"exec '{sleep}' 30\n"))
    flags = accepted_flags(timeout=0.5)
    assert flags.with_value == BUILT_IN.with_value
    assert "timed out" in flags.source
