"""packaging/config.toml, shipped as /etc/bpm-doctor/config.toml: valid as shipped and when uncommented."""

from __future__ import annotations

import re
from pathlib import Path

from bpm_doctor import config

EXAMPLE = Path(__file__).resolve().parents[2] / "packaging" / "config.toml"
# A commented-out setting or table header: "#key = value", "#[table]" or "#[[table]]".
COMMENTED_SETTING = re.compile(r"^#(\[\[?[a-z_]+\]\]?|[a-z_-]+ = .+)$")


def _uncommented(text: str) -> str:
    """Uncomment every setting, keeping only the first of repeated keys within a table."""
    lines, seen = [], set()
    table = ""
    for line in text.splitlines():
        match = COMMENTED_SETTING.match(line)
        if not match:
            continue
        setting = match.group(1)
        if setting.startswith("["):
            table = setting
            lines.append(setting)
            seen = set()
            continue
        key = setting.split(" = ", 1)[0]
        if key in seen and not table.startswith("[["):
            continue
        seen.add(key)
        lines.append(setting)
    return "\n".join(lines) + "\n"


def test_example_as_shipped_gives_defaults():
    parsed = config.parse(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE))
    defaults = config.Config()
    assert not parsed.role_explicit
    assert parsed.listen == defaults.listen
    assert parsed.interval_seconds == defaults.interval_seconds
    assert parsed.max_services == defaults.max_services
    assert parsed.allow == []
    assert parsed.severity_overrides == {}


def test_example_settings_valid_when_uncommented():
    text = _uncommented(EXAMPLE.read_text(encoding="utf-8"))
    parsed = config.parse(text, "uncommented example")
    assert parsed.role_explicit
    assert parsed.listen == config.DEFAULT_LISTEN
    assert len(parsed.allow) == 2
    assert "stale-socket" in parsed.severity_overrides


def test_example_names_every_setting():
    """A setting added to bpm_doctor.config must be documented in the example too."""
    text = EXAMPLE.read_text(encoding="utf-8")
    tables = {"allow": "[[allow]]", "severity": "[severity]", "serve": "[serve]"}
    for key in sorted(config._TOP_LEVEL_KEYS | config._SERVE_KEYS):
        written = tables.get(key, f"{key} = ")
        assert re.search(rf"^#{re.escape(written)}", text, re.MULTILINE), f"{key} is not in {EXAMPLE.name}"
