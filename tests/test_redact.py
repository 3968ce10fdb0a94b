"""Secret values never survive redaction."""

import re

import pytest
from hypothesis import given, strategies as st

from bpm_doctor import redact

SECRET = "Zq9sEcReTvAlUe"


@pytest.mark.parametrize("argv", [
    ["bin", "--private-key", SECRET],
    ["bin", f"--password={SECRET}"],
    ["bin", "--http-rpc-url", f"https://user:{SECRET}@rpc.example.invalid/"],
    ["bin", "--http-rpc-url", f"https://rpc.example.invalid/v3/{SECRET}"],
    ["bin", f"https://rpc.example.invalid/?apikey={SECRET}"],
    ["env", f"OPERATOR_KEY={SECRET}", "bin"],
    ["bin", "0x" + "ab" * 32],
])
def test_redact_argv_hides_secret(argv):
    redacted = " ".join(redact.redact_argv(argv))
    assert SECRET not in redacted
    assert "ab" * 32 not in redacted


def test_redact_argv_keeps_paths_and_coordinates():
    argv = ["/root/.cargo/bin/cargo-tangle", "blueprint", "run", "--data-dir", "/srv/q/bpm-data", "SERVICE_ID=5"]
    assert redact.redact_argv(argv) == argv


def test_filter_environment_keeps_only_coordinates():
    kept = redact.filter_environment({
        "BLUEPRINT_ID": "42", "SERVICE_ID": "board-red", "PRIVATE_KEY": SECRET,
        "TEST_MODE": "true", "TANGLE_CONTRACT": "0x" + "0" * 40, "PATH": "/usr/bin",
    })
    assert kept == {"BLUEPRINT_ID": "42", "SERVICE_ID": "<redacted>", "TEST_MODE": "true",
                    "TANGLE_CONTRACT": "0x" + "0" * 40}


def test_kept_name_with_secret_shaped_value_is_redacted():
    assert redact.keep_environment_value("SERVICE_ID", SECRET) == "<redacted>"
    assert redact.keep_environment_value("DATA_DIR", f"https://u:{SECRET}@h/x") != f"https://u:{SECRET}@h/x"


def test_secret_names():
    assert redact.is_secret_name("OPERATOR_PRIVATE_KEY")
    assert redact.is_secret_name("--api-token")
    assert not redact.is_secret_name("KEYSTORE_URI")
    assert not redact.is_secret_name("SERVICE_ID")


def test_unit_file_redaction_keeps_lines():
    text = f"[Service]\nEnvironment=SIGNER_KEY={SECRET} SERVICE_ID=3\nExecStart=/bin/x run --token {SECRET}\n"
    redacted = redact.redact_file_text("/etc/systemd/system/x.service", text)
    assert SECRET not in redacted
    assert redacted.count("\n") == text.count("\n")
    assert "SERVICE_ID=3" in redacted


def test_env_file_redaction_keeps_keys_and_comments():
    text = f"BLUEPRINT_ID=30 # ours\nPRIVATE_KEY=\"{SECRET}\"\nexport TOKEN={SECRET}\n"
    redacted = redact.redact_file_text("/srv/settings.env", text)
    assert SECRET not in redacted
    assert redacted.splitlines()[0] == "BLUEPRINT_ID=30 # ours"
    assert redacted.splitlines()[2].startswith("export TOKEN=")


def test_toml_secret_key_is_redacted():
    redacted = redact.redact_file_text("/srv/bpm.toml", f'signer_private_key = "{SECRET}"\ntest_mode = true\n')
    assert SECRET not in redacted
    assert "test_mode = true" in redacted


def test_redaction_is_idempotent():
    text = f"Environment=A_KEY={SECRET}\nExecStart=/x --http-rpc-url https://u:p@h/k/{SECRET}\n"
    once = redact.redact_file_text("/x.service", text)
    assert redact.redact_file_text("/x.service", once) == once


def test_multiline_quoted_value_redacted_whole():
    text = f'A_KEY="first {SECRET}\nsecond {SECRET}"\nBLUEPRINT_ID=4\n'
    redacted = redact.redact_file_text("/srv/settings.env", text)
    assert SECRET not in redacted
    assert redacted.splitlines()[2] == "BLUEPRINT_ID=4"


def substitute_every_pattern(token: str) -> str:
    """redact_token without its short-token shortcut."""
    token = redact.redact_urls(token)
    token = redact._LONG_HEX.sub(redact.REDACTED, token)
    if redact.REDACTED not in token:
        token = redact._LONG_TOKEN.sub(redact._keep_paths_only, token)
    return token


# Runs of 35 to 55 characters straddle both thresholds: 40 for a token, 48 for hex.
token_runs = st.text(alphabet="0123456789abcdefABCDEFxyz", min_size=35, max_size=55)
token_texts = st.lists(
    st.one_of(token_runs, st.text(alphabet="0123456789abcdefxyz:/@?=_-+. \n", max_size=12)), max_size=4,
).map("".join)


@given(token_texts)
def test_short_token_shortcut_changes_nothing(token):
    assert redact.redact_token(token) == substitute_every_pattern(token)


argv_words = st.one_of(
    token_runs,
    st.text(alphabet="abcXYZ019_/.,+@%~-=: \t", max_size=14),
    st.sampled_from(["--private-key", "--password=x", "-k", "KEY=v", "SERVICE_ID=3", "http://u:p@h/x", "run"]),
)


@given(st.lists(argv_words, max_size=6))
def test_plain_word_shortcut_changes_nothing(argv):
    with_shortcut = redact.redact_argv(argv)
    saved = redact._PLAIN_WORD
    redact._PLAIN_WORD = re.compile(r"(?!)")
    try:
        without_shortcut = redact.redact_argv(argv)
    finally:
        redact._PLAIN_WORD = saved
    assert with_shortcut == without_shortcut


@pytest.mark.parametrize("word", ["g" * 200_000, "g" * 200_000 + ":/x://y", "a" * 200_000 + "g", "x-" * 100_000])
def test_long_words_redact_in_linear_time(word):
    # A quadratic pattern needs minutes for these; the alarm turns a hang into a failure.
    import signal

    def too_slow(_signum, _frame):
        raise TimeoutError("redaction of one long word took over 10 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(10)
    try:
        redacted = redact.redact_argv(["quill", word])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert len(redacted) == 2


@pytest.mark.parametrize("name, value", [("TEST_MODE", "true\n"), ("KEYSTORE_URI", "/tmp/ks\n"), ("SERVICE_ID", "1\n")])
def test_trailing_newline_value_redacted(name, value):
    assert redact.keep_environment_value(name, value) == redact.REDACTED


@pytest.mark.parametrize("argv, secret", [
    (["x", f"wss://user:{SECRET}/slash@host/"], SECRET),
    (["x", f"https://user:{SECRET}?x@host"], SECRET),
    (["x", "--pass", SECRET], SECRET),
    (["x", "--pw", SECRET], SECRET),
    (["x", "--pwd", SECRET], SECRET),
    (["x", "--pin", SECRET], SECRET),
    (["curl", "-H", f"Authorization: Bearer {SECRET}"], SECRET),
    (["curl", f"--header=Authorization: Bearer {SECRET}"], SECRET),
    (["curl", "-H", f"Authorization: {SECRET}"], SECRET),
    (["x", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.sig"], "eyJzdWIiOiIxMjM0NTY3ODkw"),
])
def test_uncommon_secret_forms_redacted(argv, secret):
    assert secret not in " ".join(redact.redact_argv(argv))


def test_pass_substrings_keep_values():
    assert redact.redact_argv(["x", "--passive", "v", "--bypass", "run"]) == ["x", "--passive", "v", "--bypass", "run"]
