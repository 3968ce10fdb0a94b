"""Configuration parsing reports every error with its file and line."""

import pytest

from bpm_doctor import config
from bpm_doctor.errors import ConfigError
from bpm_doctor.model import Severity


def test_defaults_without_file(tmp_path):
    loaded = config.load(str(tmp_path / "absent.toml"), required=False)
    assert loaded.role == "operator-host"
    assert loaded.role_explicit is False
    assert loaded.listen == "127.0.0.1:9737"


def test_required_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config.load(str(tmp_path / "absent.toml"), required=True)
    assert "configuration file not found" in caught.value.errors[0]


def test_not_utf8_names_line_and_column(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'role = "operator-host"\n# caf\xe9\n')
    with pytest.raises(ConfigError) as caught:
        config.load(str(path))
    assert caught.value.errors == [f"{path}:2: invalid TOML: byte 0xe9 at column 6 is not UTF-8; "
                                     "save the file as UTF-8"]


def test_full_configuration_parses():
    text = '''role = "remote-target"
instance_binaries = ["trading-blueprint"]
operator_address = "0x00000000000000000000000000000000000A11CE"
[[allow]]
unit = "ferry-validator.service"
reason = "HTTP-only validator"
[severity]
stale-socket = "info"
[serve]
listen = "127.0.0.1:9999"
interval_seconds = 10
'''
    loaded = config.parse(text, "c.toml")
    assert loaded.role == "remote-target"
    assert loaded.instance_binaries == {"trading-blueprint"}
    assert loaded.operator_address == "0x00000000000000000000000000000000000a11ce"
    assert loaded.allowance_for(unit="ferry-validator.service").reason == "HTTP-only validator"
    assert loaded.severity_overrides == {"stale-socket": Severity.INFO}
    assert loaded.interval_seconds == 10.0


def test_all_errors_reported_at_once_with_lines():
    text = '''role = "bogus"
colour = 1
[[allow]]
unit = "a.service"
[severity]
no-such-id = "info"
test-mode = "fatal"
[serve]
interval_seconds = 1
listen = "everywhere"
'''
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "c.toml")
    errors = caught.value.errors
    assert errors[0].startswith("c.toml:1: invalid role 'bogus'")
    assert any(e.startswith("c.toml:2: unknown setting 'colour'") for e in errors)
    assert any(e.startswith("c.toml:3: allow entry 1 needs a non-empty reason") for e in errors)
    assert any(e.startswith("c.toml:6: unknown finding id 'no-such-id'") for e in errors)
    assert any(e.startswith("c.toml:7: invalid severity 'fatal'") for e in errors)
    assert any(e.startswith("c.toml:9: invalid interval_seconds 1") for e in errors)
    assert any(e.startswith("c.toml:10: invalid listen address") for e in errors)
    assert len(errors) == 7


def test_toml_syntax_error_names_line():
    with pytest.raises(ConfigError) as caught:
        config.parse('role = "operator-host"\nrole = \n', "c.toml")
    assert caught.value.errors[0].startswith("c.toml:2: invalid TOML")


@pytest.mark.parametrize("value", ["nan", "inf", "1e300"])
def test_interval_must_be_finite_and_bounded(value):
    with pytest.raises(ConfigError) as caught:
        config.parse(f"[serve]\ninterval_seconds = {value}\n", "c.toml")
    assert caught.value.errors[0].startswith("c.toml:2: invalid interval_seconds")


@pytest.mark.parametrize("text, line, message", [
    ('role = "operator-host"\n\nchecks.foo.bar = 1\n', 3, "unknown setting 'checks'"),
    ('role = "operator-host"\n[a.b]\nc = 1\n', 2, "unknown setting 'a'"),
    ('role = "operator-host"\nserve.listen = "x"\n', 2, "invalid listen address 'x'"),
    ('role = "operator-host"\n\n[serve.extra]\nx = 1\n', 3, "unknown setting 'extra' in [serve]"),
    ('\n\nseverity.no-such-id = "info"\n', 3, "unknown finding id 'no-such-id'"),
    ('[severity]\n\n"stale-socket" = "loud"\n', 3, "invalid severity 'loud'"),
    ('[serve]\ninterval_seconds = 10\n\n[serve.x]\nlisten = 1\n', 4, "unknown setting 'x' in [serve]"),
])
def test_dotted_key_error_names_its_line(text, line, message):
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "c.toml")
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith(f"c.toml:{line}: {message}")


def test_allow_entry_error_names_its_table():
    text = '[[allow]]\nunit = "a.service"\nreason = "r"\n\n[[allow]]\nunit = "b.service"\n'
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "c.toml")
    assert caught.value.errors == ["c.toml:5: allow entry 2 needs a non-empty reason"]


def test_errors_are_listed_in_line_order():
    text = 'serve.listen = "x"\nrole = "laptop"\ncolour = 1\n[severity]\nno-such-id = "info"\n'
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "c.toml")
    lines = [int(error.split(":")[1]) for error in caught.value.errors]
    assert lines == [1, 2, 3, 5]


@pytest.mark.parametrize("text, line, message", [
    ('role = "operator-host"\ninstance_binaries = ["a",\n"b"\n',
     2, "invalid TOML: unclosed array: missing ']' before the end of the file"),
    ('role = "operator-host"\nrole = "remote-target"',
     2, "invalid TOML: duplicate key: this key is already set"),
    ('max_services = 5\nrole = "operator-host',
     2, "invalid TOML: unterminated string: missing the closing quote before the end of the file"),
    ('role = "operator-host"\noperator_address = """0x\n\n',
     2, "invalid TOML: unterminated string: missing the closing quote before the end of the file"),
    ('max_services = 5\nrole = \'operator-host\n\n',
     2, "invalid TOML: unterminated literal string: missing the closing quote before the end of the file"),
    ('role = "operator-host"\nchecks = {b = 1\n',
     2, "invalid TOML: unclosed inline table: missing '}' (column 16)"),
])
def test_error_at_end_of_file_names_its_line(text, line, message):
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "c.toml")
    assert caught.value.errors == [f"c.toml:{line}: {message}"]


@pytest.mark.parametrize("text, error", [
    ('role = "operator-host"\n\nrol e = 1\n', "c.toml:3: invalid TOML: missing '=' after the key (column 5)"),
    ('role = "operator-host\n',
     "c.toml:1: invalid TOML: unterminated string: missing the closing quote on this line (column 22)"),
    ("[serve]\n[serve]\n", "c.toml:2: invalid TOML: table serve is declared twice (column 7)"),
    ("max_services = five\n", "c.toml:1: invalid TOML: invalid value: expected a quoted string, number, true, "
                               "false, date, array or inline table (column 16)"),
    ("role = 1 2\n", "c.toml:1: invalid TOML: unexpected text after the value: each key = value needs its own line "
                     "(column 10)"),
])
def test_toml_syntax_error_in_plain_words(text, error):
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "c.toml")
    assert caught.value.errors == [error]
