"""Load and validate the optional TOML configuration.

    role = "operator-host"            # or "remote-target"
    instance_binaries = ["trading-blueprint"]
    operator_address = "0x..."        # exported as an info metric for fleet rules
    max_services = 50                 # instance series per (blueprint, service) before overflow

    [[allow]]
    unit = "ferry-validator.service"  # or: binary = "name"
    reason = "HTTP-only validator, SERVICE_ID=0 on purpose"

    [severity]
    stale-socket = "info"             # override a finding's severity

    [serve]
    listen = "127.0.0.1:9737"
    interval_seconds = 30

Every error is collected before giving up, each as `file:line: message`,
in line order.
"""

from __future__ import annotations

import os
import math
import re
import stat
import tomllib
from dataclasses import dataclass, field

from bpm_doctor import catalogue, tomltext
from bpm_doctor.errors import ConfigError
from bpm_doctor.model import Severity

DEFAULT_PATH = "/etc/bpm-doctor/config.toml"
DEFAULT_LISTEN = "127.0.0.1:9737"
MIN_INTERVAL_SECONDS = 5.0
# A day: longer intervals defeat the staleness alerts and overflow timer arithmetic.
MAX_INTERVAL_SECONDS = 86400.0
# A real configuration is a few hundred bytes; a larger file is rejected, not read whole.
MAX_CONFIG_BYTES = 1024 * 1024
ROLES = ("operator-host", "remote-target")
_TOP_LEVEL_KEYS = {"role", "instance_binaries", "operator_address", "max_services", "allow", "severity", "serve"}
_SERVE_KEYS = {"listen", "interval_seconds"}
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class Allowance:
    """A sanctioned exception: findings about this unit or binary drop to info."""

    reason: str
    unit: str | None = None
    binary: str | None = None


@dataclass
class Config:
    """Validated configuration. `role_explicit` is True when the file set the role."""

    role: str = "operator-host"
    role_explicit: bool = False
    instance_binaries: set[str] = field(default_factory=set)
    operator_address: str | None = None
    max_services: int = 50
    allow: list[Allowance] = field(default_factory=list)
    severity_overrides: dict[str, Severity] = field(default_factory=dict)
    listen: str = DEFAULT_LISTEN
    interval_seconds: float = 30.0
    path: str | None = None

    def allowance_for(self, unit: str | None = None, binary: str | None = None) -> Allowance | None:
        for allowance in self.allow:
            if unit is not None and allowance.unit == unit:
                return allowance
            if binary is not None and allowance.binary == binary:
                return allowance
        return None


def load(path: str, required: bool = True) -> Config:
    """Read and validate a configuration file.

    A missing file gives the defaults unless `required` is set. Raises
    ConfigError with every problem found.
    """
    try:
        # Opening a FIFO blocks until something writes to it, so a FIFO is rejected unopened.
        mode = os.stat(path).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise ConfigError([f"{path}: cannot read configuration: a FIFO or socket, not a TOML file"])
        with open(path, "rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if required:
            raise ConfigError([f"{path}: configuration file not found"]) from None
        return Config()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read configuration: {error.strerror}"]) from error
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: cannot read configuration: larger than {MAX_CONFIG_BYTES // 1024} KiB"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError([_not_utf8(path, raw, error.start)]) from None
    return parse(text, path)


def _not_utf8(path: str, raw: bytes, offset: int) -> str:
    """Describe the first byte that is not UTF-8; TOML files must be UTF-8 (TOML 1.0, "Spec")."""
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return (f"{path}:{line}: invalid TOML: byte 0x{raw[offset]:02x} at column {column} is not UTF-8; "
            "save the file as UTF-8")


def parse(text: str, path: str = "<config>") -> Config:
    """Validate configuration text. Raises ConfigError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line, description = tomltext.describe_error(error, text)
        raise ConfigError([f"{path}:{line}: invalid TOML: {description}"]) from None

    problems: list[tuple[tuple, str]] = []
    config = Config(path=path)

    def fail(key: str | tuple, message: str) -> None:
        """Record a problem with the value at `key`, a top-level name or a key path such as ("serve", "listen")."""
        problems.append((key if isinstance(key, tuple) else (key,), message))

    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            fail(key, f"unknown setting {key!r}; known settings are {', '.join(sorted(_TOP_LEVEL_KEYS))}")

    _read_role(data, config, fail)
    _read_instance_binaries(data, config, fail)
    _read_operator(data, config, fail)
    _read_allow(data, config, fail)
    _read_severity(data, config, fail)
    _read_serve(data, config, fail)

    if problems:
        raise ConfigError(_locate(problems, text, path))
    return config


def _read_role(data: dict, config: Config, fail) -> None:
    if "role" not in data:
        return
    if data["role"] not in ROLES:
        fail("role", f"invalid role {data['role']!r}: expected \"operator-host\" or \"remote-target\"")
        return
    config.role = data["role"]
    config.role_explicit = True


def _read_instance_binaries(data: dict, config: Config, fail) -> None:
    names = data.get("instance_binaries", [])
    if not isinstance(names, list) or not all(isinstance(name, str) and name and "/" not in name for name in names):
        fail("instance_binaries", "instance_binaries must be a list of executable basenames (no slashes)")
        return
    config.instance_binaries = set(names)


def _read_operator(data: dict, config: Config, fail) -> None:
    if "operator_address" in data:
        address = data["operator_address"]
        if not isinstance(address, str) or not _ADDRESS.match(address):
            fail("operator_address", "operator_address must be a 0x-prefixed 40-digit hex address")
        else:
            config.operator_address = address.lower()
    if "max_services" in data:
        value = data["max_services"]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10000:
            fail("max_services", "max_services must be a whole number from 1 to 10000")
        else:
            config.max_services = value


def _read_allow(data: dict, config: Config, fail) -> None:
    entries = data.get("allow", [])
    if not isinstance(entries, list):
        fail("allow", "allow must be a list of tables, written [[allow]] or allow = [{ ... }]")
        return
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            fail(("allow", index - 1), f"allow entry {index} must be a table with unit or binary, and reason")
            continue
        unknown = set(entry) - {"unit", "binary", "reason"}
        if unknown:
            fail(("allow", index - 1), f"allow entry {index} has unknown keys {sorted(unknown)}")
        unit, binary, reason = entry.get("unit"), entry.get("binary"), entry.get("reason")
        if (unit is None) == (binary is None):
            fail(("allow", index - 1), f"allow entry {index} needs exactly one of unit or binary")
            continue
        if not isinstance(reason, str) or not reason.strip():
            fail(("allow", index - 1), f"allow entry {index} needs a non-empty reason")
            continue
        if not isinstance(unit or binary, str):
            fail(("allow", index - 1), f"allow entry {index}: unit and binary must be strings")
            continue
        config.allow.append(Allowance(reason.strip(), unit, binary))


def _read_severity(data: dict, config: Config, fail) -> None:
    overrides = data.get("severity", {})
    if not isinstance(overrides, dict):
        fail("severity", "severity must be a table of finding id = \"info\" | \"warning\" | \"critical\"")
        return
    for finding_id, value in overrides.items():
        if finding_id not in catalogue.BY_ID:
            fail(("severity", finding_id), f"unknown finding id {finding_id!r} in [severity]")
            continue
        try:
            config.severity_overrides[finding_id] = Severity.parse(str(value))
        except ValueError as error:
            fail(("severity", finding_id), str(error))


def _read_serve(data: dict, config: Config, fail) -> None:
    serve = data.get("serve", {})
    if not isinstance(serve, dict):
        fail("serve", "serve must be a table")
        return
    for key in serve:
        if key not in _SERVE_KEYS:
            fail(("serve", key), f"unknown setting {key!r} in [serve]; known settings are listen, interval_seconds")
    if "listen" in serve:
        listen = serve["listen"]
        if not isinstance(listen, str) or not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[0-9A-Za-z.-]+):[0-9]{1,5}", listen) \
                or not 0 < int(listen.rpartition(":")[2]) < 65536:
            fail(("serve", "listen"), f"invalid listen address {listen!r}: expected HOST:PORT such as 127.0.0.1:9737")
        else:
            config.listen = listen
    if "interval_seconds" in serve:
        interval = serve["interval_seconds"]
        if not isinstance(interval, (int, float)) or isinstance(interval, bool) or not math.isfinite(interval) \
                or not MIN_INTERVAL_SECONDS <= interval <= MAX_INTERVAL_SECONDS:
            fail(("serve", "interval_seconds"), f"invalid interval_seconds {interval!r}: expected a number of "
                 f"seconds from {MIN_INTERVAL_SECONDS:g} to {MAX_INTERVAL_SECONDS:g}")
        else:
            config.interval_seconds = float(interval)


def _locate(problems: list[tuple[tuple, str]], text: str, path: str) -> list[str]:
    """Format problems as `file:line: message`, sorted by line so they read top to bottom."""
    lines = tomltext.key_lines(text)
    located = [(_line_of(lines, key_path), message) for key_path, message in problems]
    # The sort is stable, so problems on one line keep the order of the checks.
    located.sort(key=lambda item: item[0])
    return [f"{path}:{line}: {message}" for line, message in located]


def _line_of(lines: dict[tuple, int], key_path: tuple) -> int:
    """Return the line of `key_path`, else of its nearest parent found, else 1.

    Keys inside an inline table have no line of their own, so `allow = [{ ... }]`
    places a problem with an entry on the `allow` line.
    """
    while key_path:
        if key_path in lines:
            return lines[key_path]
        key_path = key_path[:-1]
    return 1
