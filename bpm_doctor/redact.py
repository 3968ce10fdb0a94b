"""Keep secret values out of everything bpm-doctor stores or prints.

Operator boxes keep private keys in the very places the doctor reads:
settings files, unit `Environment=` lines, process environments, argv and
RPC URLs with an API key in them. The rule is to drop on read: a value is kept
only when its variable is a blueprint coordinate or switch and the value has
the shape that variable should have. Everything else becomes `<redacted>`
before it reaches a snapshot, a finding, a log line or a metric.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

# Variable names whose values are kept, each with the shape the value must
# have. A value of another shape (a key pasted into SERVICE_ID, say) is
# redacted like any other.
_NUMBER = re.compile(r"^[0-9]{1,20}$")
_SWITCH = re.compile(r"^[A-Za-z0-9_.-]{0,16}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_PATH = re.compile(r"^[A-Za-z0-9_./@%+=:,~-]{0,512}$")

KEPT_ENVIRONMENT: dict[str, re.Pattern[str]] = {
    "BLUEPRINT_ID": _NUMBER,
    "SERVICE_ID": _NUMBER,
    "PROTOCOL": _SWITCH,
    "CHAIN": _SWITCH,
    "TEST_MODE": _SWITCH,
    "ALLOW_STANDALONE": _SWITCH,
    "ALLOW_UNCHECKED_ATTESTATIONS": _SWITCH,
    "REGISTRATION_MODE_ON": _SWITCH,
    "REGISTRATION_CAPTURE_ONLY": _SWITCH,
    "PREFERRED_SOURCE": _SWITCH,
    "USE_VM": _SWITCH,
    "TANGLE_CONTRACT": _ADDRESS,
    "STAKING_CONTRACT": _ADDRESS,
    "STATUS_REGISTRY_CONTRACT": _ADDRESS,
    "BRIDGE_SOCKET_PATH": _PATH,
    "DATA_DIR": _PATH,
    "KEYSTORE_URI": _PATH,
    "REGISTRATION_OUTPUT_PATH": _PATH,
    "HOME": _PATH,
    "XDG_RUNTIME_DIR": _PATH,
    "XDG_CACHE_HOME": _PATH,
    "TMUX": _PATH,
    "STY": _PATH,
    "INVOCATION_ID": _SWITCH,
    "BLUEPRINT_CARGO_BIN": _PATH,
}

# Names that suggest a secret. Matched against upper-cased variable, flag and
# TOML key names. KEYSTORE_URI and friends are paths, not secrets.
_SECRET_NAME = re.compile(
    r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|MNEMONIC|SEED|PRIVATE|CREDENTIAL|AUTH|COOKIE|API_?KEY"
)
# Short names that are secrets only as a whole word: --pass, --pw, --pin, DB_PWD.
_SHORT_SECRET_NAME = re.compile(r"(?:^|_)(?:PASS|PW|PWD|PIN)$")
# HTTP authorization schemes (RFC 9110, 11.4): the word after one is a credential.
_AUTHORIZATION_SCHEMES = {"bearer", "basic", "token", "digest"}
_NOT_SECRET_NAMES = {"KEYSTORE_URI", "KEYSTORE_PATH", "KEYSTORE", "KEYSTORE_DIR", "KEEPER_SERVICE_ID"}

# The scheme is bounded: with `*`, a long run of scheme characters without
# "://" made every start position scan to the end of the run, so one 128 kB
# argv word took a minute. Real schemes are far shorter than 32 characters.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,31})://(?P<rest>[^\s\"'<>]*)")
_LONG_HEX = re.compile(r"\b(?:0x)?[0-9a-fA-F]{48,}\b")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/_=-]{40,}")
_ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", re.DOTALL)
# The shortest text the patterns above can change: a URL needs "://", and
# _LONG_TOKEN, the shorter of the two runs, needs 40 characters.
_MIN_REDACTABLE_LENGTH = 40
# For str patterns, \s is what str.isspace() calls whitespace.
_WHITESPACE = re.compile(r"\s")
# A word that no rule of redact_argv changes: not a flag, no `=`, no
# whitespace, no "://" (no colon at all) and shorter than the shortest run.
_PLAIN_WORD = re.compile(r"(?!-)[A-Za-z0-9_/.,+@%~-]{0,39}")


def is_secret_name(name: str) -> bool:
    """Return True when a variable, flag or key name suggests a secret value."""
    normalized = name.strip().lstrip("-").upper().replace("-", "_")
    if normalized in _NOT_SECRET_NAMES:
        return False
    return bool(_SECRET_NAME.search(normalized) or _SHORT_SECRET_NAME.search(normalized))


def keep_environment_value(name: str, value: str) -> str | None:
    """Return the value to store for an environment variable, or None to drop it.

    Kept variables whose value has the wrong shape are stored as `<redacted>`,
    so their presence still counts (a redacted TEST_MODE is still truthy).
    """
    shape = KEPT_ENVIRONMENT.get(name)
    if shape is None:
        return None
    if shape is _PATH and "://" in value:
        value = redact_urls(value)
    # fullmatch: `$` alone also matches before a final newline.
    if shape.fullmatch(value):
        return value
    return REDACTED


def filter_environment(environ: dict[str, str]) -> dict[str, str]:
    """Drop every variable that is not a blueprint coordinate or switch."""
    kept = {}
    for name, value in environ.items():
        stored = keep_environment_value(name, value)
        if stored is not None:
            kept[name] = stored
    return kept


def redact_urls(text: str) -> str:
    """Reduce every URL in a text to its scheme, host and port.

    RPC URLs carry API keys in the user info, the path or the query
    (`https://user:pass@host/v3/<key>`), so only the part before the path is kept.
    """

    def shorten(match: re.Match[str]) -> str:
        rest = match.group("rest")
        # RFC 3986 forbids a raw "/" or "?" in the user info, but pasted
        # passwords have them: everything before the last "@" goes.
        userinfo, at, rest = rest.rpartition("@")
        authority, separator, tail = rest.partition("/")
        if "?" in authority:
            authority, _, query = authority.partition("?")
            tail = tail or query
            separator = separator or "?"
        if at:
            authority = REDACTED + "@" + authority
        shortened = f"{match.group('scheme')}://{authority}"
        if tail.strip("/"):
            shortened += "/" + REDACTED
        elif separator:
            shortened += "/"
        return shortened

    return _URL.sub(shorten, text)


def redact_token(token: str) -> str:
    """Redact secret-looking parts of one free-text token (URLs, long hex, long base64)."""
    # Most argv words are short and contain no URL, and none of the three
    # substitutions below can change them.
    if len(token) < _MIN_REDACTABLE_LENGTH and "://" not in token:
        return token
    token = redact_urls(token)
    token = _LONG_HEX.sub(REDACTED, token)
    if REDACTED not in token:
        token = _LONG_TOKEN.sub(_keep_paths_only, token)
    return token


def _keep_paths_only(match: re.Match[str]) -> str:
    # A long run without a slash is a key or a token. Paths and words that
    # merely run long contain separators.
    text = match.group(0)
    # "eyJ" is base64 for '{"', the start of a JSON Web Token's parts.
    if text.startswith("eyJ"):
        return REDACTED
    if "/" in text or "_" in text or "-" in text:
        return text
    return REDACTED


def redact_argv(argv: list[str]) -> list[str]:
    """Return argv with secret values replaced by `<redacted>`.

    Redacted: the value after a secret-named flag (`--private-key X`,
    `--password=X`), the value of a `NAME=value` word unless NAME is a kept
    coordinate, URL credentials and paths, and long hex or base64 runs. A
    word that contains whitespace, such as a `bash -c` script, is split and
    redacted by the same rules.
    """
    redacted: list[str] = []
    hide_next = False
    after_authorization = False
    for word in argv:
        if hide_next:
            if after_authorization and word.lower() in _AUTHORIZATION_SCHEMES:
                # `Authorization: Bearer X`: keep the scheme, hide what follows it.
                redacted.append(word)
                after_authorization = False
                continue
            redacted.append(REDACTED)
            hide_next = after_authorization = False
            continue
        if word.lower() in _AUTHORIZATION_SCHEMES or word.lower().endswith("authorization:"):
            redacted.append(redact_token(word))
            hide_next = True
            after_authorization = word.endswith(":")
            continue
        if _PLAIN_WORD.fullmatch(word):
            redacted.append(word)
            continue
        if _has_whitespace(word):
            redacted.append(redact_free_text(word))
            continue
        if word.startswith("-") and not word.startswith("---"):
            flag, equals, value = word.partition("=")
            if is_secret_name(flag):
                if equals:
                    redacted.append(f"{flag}={REDACTED}")
                else:
                    redacted.append(flag)
                    hide_next = True
                continue
            redacted.append(redact_token(word))
            continue
        assignment = _ASSIGNMENT.match(word)
        if assignment is not None:
            name = assignment.group("name")
            if name.isupper() or is_secret_name(name):
                redacted.append(redact_assignment(name, assignment.group("value")))
            else:
                redacted.append(f"{name}={redact_token(assignment.group('value'))}")
            continue
        redacted.append(redact_token(word))
    return redacted


def _has_whitespace(word: str) -> bool:
    return _WHITESPACE.search(word) is not None


def redact_assignment(name: str, value: str) -> str:
    """Render `NAME=value` with the value kept only for a coordinate of the right shape."""
    stored = keep_environment_value(name, value)
    if stored is None:
        stored = REDACTED if value else ""
    return f"{name}={stored}"


_UNIT_SUFFIXES = (".service", ".timer", ".socket", ".path", ".mount", ".target", ".slice", ".scope")
_EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload")
_WORD = re.compile(r"\S+")


def file_kind(path: str) -> str:
    """Return "unit", "toml" or "env" for a file the doctor stores."""
    if path.endswith(_UNIT_SUFFIXES) or (".d/" in path and path.endswith(".conf")):
        return "unit"
    if path.endswith(".toml"):
        return "toml"
    return "env"


def redact_file_text(path: str, text: str) -> str:
    """Redact secret values in a stored file, keeping every line in place.

    Line numbers stay valid, so findings can still point at a line.
    """
    kind = file_kind(path)
    lines = text.split("\n")
    if kind == "env":
        return "\n".join(_redact_env_lines(lines))
    redact_line = {"unit": _redact_unit_line, "toml": _redact_toml_line}[kind]
    return "\n".join(redact_line(line) for line in lines)


def _redact_env_lines(lines: list[str]) -> list[str]:
    """Redact an env file whose quoted values may run over several lines.

    dotenv and systemd both read a quoted value up to its closing quote,
    across line breaks, so the lines after an opening quote are value too
    (a mnemonic, a PEM body) and are redacted whole.
    """
    redacted: list[str] = []
    open_quote: str | None = None
    for line in lines:
        if open_quote is not None:
            redacted.append(REDACTED)
            if _unescaped_count(line, open_quote) % 2 == 1:
                open_quote = None
            continue
        redacted.append(_redact_env_line(line))
        open_quote = _unclosed_quote(line)
    return redacted


def _unescaped_count(text: str, quote: str) -> int:
    return len(re.findall(r"(?<!\\)" + re.escape(quote), text))


def _unclosed_quote(line: str) -> str | None:
    """Return the quote character of an assignment whose quoted value does not close on this line."""
    stripped = line.strip()
    if stripped.startswith("#"):
        return None
    _name, equals, value = stripped.removeprefix("export ").partition("=")
    value = value.lstrip()
    if not equals or value[:1] not in ("'", '"'):
        return None
    quote = value[0]
    return quote if _unescaped_count(value, quote) % 2 == 1 else None


_OPENING_QUOTES = "\"'`("


def redact_free_text(line: str) -> str:
    """Redact a free-text line word by word, keeping its spacing.

    The words go through `redact_argv`, so a secret-named flag hides the word
    after it here too (`--password X` in a crontab line).
    """
    parts = re.split(r"(\s+)", line)
    words = [part for part in parts if part and not part.isspace()]
    # Opening quotes are set aside, so that `"token=x` is read as the assignment token=x.
    quotes = [word[:len(word) - len(word.lstrip(_OPENING_QUOTES))] for word in words]
    unquoted = [word[len(quote):] for quote, word in zip(quotes, words)]
    redacted = iter(quote + word for quote, word in zip(quotes, redact_argv(unquoted)))
    return "".join(part if not part or part.isspace() else next(redacted) for part in parts)


def _leading_space(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _redact_unit_line(line: str) -> str:
    stripped = line.strip()
    if not stripped or stripped[0] in "#;":
        return redact_free_text(line)
    key, equals, value = stripped.partition("=")
    key = key.strip()
    if equals and key == "Environment":
        words = _shell_words(value)
        redacted = []
        for word in words:
            name, has_equals, assigned = word.partition("=")
            redacted.append(redact_assignment(name, assigned) if has_equals else redact_token(word))
        return f"{_leading_space(line)}Environment={' '.join(_quote(word) for word in redacted)}"
    if equals and key in _EXEC_KEYS:
        continued = value.rstrip().endswith("\\")
        words = _shell_words(value.rstrip().removesuffix("\\"))
        rendered = " ".join(_quote(word) for word in redact_argv(words))
        return f"{_leading_space(line)}{key}={rendered}" + (" \\" if continued else "")
    return redact_free_text(line)


def _redact_toml_line(line: str) -> str:
    key, equals, _value = line.partition("=")
    if equals and is_secret_name(key.strip().strip('"')):
        return f'{key}= "{REDACTED}"'
    return redact_free_text(line)


def _redact_env_line(line: str) -> str:
    from bpm_doctor.envfile import split_dotenv_line

    parsed = split_dotenv_line(line)
    if parsed is None:
        return redact_free_text(line)
    name, value, quote, comment = parsed
    stored = keep_environment_value(name, value)
    if stored is None:
        stored = REDACTED if value else ""
    export = "export " if line.lstrip().startswith("export ") else ""
    rebuilt = f"{_leading_space(line)}{export}{name}={quote}{stored}{quote}"
    if comment:
        rebuilt += " " + redact_free_text(comment)
    return rebuilt


def _shell_words(value: str) -> list[str]:
    import shlex

    try:
        return shlex.split(value, posix=True)
    except ValueError:
        return value.split()


def _quote(word: str) -> str:
    if word and re.fullmatch(r"[A-Za-z0-9_./@%+=:,<>~$-]+", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
