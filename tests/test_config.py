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
    assert "c.toml:1: invalid role 'bogus'" in errors[1] or any(e.startswith("c.toml:1: invalid role") for e in errors)
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
