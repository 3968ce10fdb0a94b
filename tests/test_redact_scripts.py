"""A shell script in one argv word (`sh -c '...'`) is redacted word by word, like any other argv.

A shell that stays to wait for what it started keeps the script in its
argv, and ExecStart=/bin/sh -c '...' keeps it in the unit file; both reach
snapshots. tests/secrets/test_secrets_systemd.py found a `token=` value
there that was kept.
"""

import string

from hypothesis import given, settings, strategies as st

from bpm_doctor import redact

SECRET = "S3CRscriptValue91"


def test_script_flag_value_redacted():
    argv = ["bash", "-c", f"SIGNER_KEY={SECRET} quill run --password {SECRET} --private-key={SECRET} & wait"]
    assert redact.redact_argv(argv) == [
        "bash", "-c", "SIGNER_KEY=<redacted> quill run --password <redacted> --private-key=<redacted> & wait"]


def test_script_assignment_and_url_redacted():
    argv = ["/bin/sh", "-c", f'echo "token={SECRET} https://u:{SECRET}@rpc.example.invalid/v3/x"; exit 1']
    redacted = redact.redact_argv(argv)
    assert SECRET not in " ".join(redacted)
    assert redacted[2].endswith("exit 1")


def test_script_keeps_layout_and_coordinates():
    argv = ["bash", "-c", "set -eu\nBLUEPRINT_ID=5 SERVICE_ID=2 exec quill run"]
    assert redact.redact_argv(argv) == argv


def test_unit_execstart_script_redacted():
    text = f"[Service]\nExecStart=/bin/sh -c 'quill run --password {SECRET}'\n"
    assert SECRET not in redact.redact_file_text("/etc/systemd/system/q.service", text)


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.sampled_from(["quill", "run", "&&", "exec", "BLUEPRINT_ID=1", "-v", ";"]), max_size=4),
    flag=st.sampled_from(["--password", "--private-key", "--api-token", "--keystore-password", "--mnemonic"]),
    secret=st.text(alphabet=string.ascii_letters + string.digits, min_size=6, max_size=30).map(lambda s: "S3CR" + s),
    inline=st.booleans(),
    separator=st.sampled_from([" ", "\n", "\t", "  "]),
)
def test_secret_flag_in_script_never_kept(before, flag, secret, inline, separator):
    words = before + ([f"{flag}={secret}"] if inline else [flag, secret]) + ["&", "wait"]
    argv = ["sh", "-c", separator.join(words)]
    assert secret not in "".join(redact.redact_argv(argv))
