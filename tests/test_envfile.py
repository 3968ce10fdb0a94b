"""systemd EnvironmentFile= and dotenv readings of one settings file."""

from bpm_doctor import envfile

TWO_WAYS = """BLUEPRINT_ID=30   # sandbox blueprint
export STATUS_REGISTRY_CONTRACT=0xabc
SIDECAR_IMAGE="ghcr.example.invalid/sidecar:pinned" # keep pinned
BASE=/srv
STATE_DIR=$BASE/state
QUOTED='$BASE literal'
"""


def test_systemd_keeps_inline_comment():
    values = envfile.as_dict(envfile.parse_systemd(TWO_WAYS))
    assert values["BLUEPRINT_ID"] == "30 # sandbox blueprint"


def test_systemd_ignores_export_lines():
    values = envfile.as_dict(envfile.parse_systemd(TWO_WAYS))
    assert "STATUS_REGISTRY_CONTRACT" not in values


def test_dotenv_strips_inline_comment_and_export():
    values = envfile.as_dict(envfile.parse_dotenv(TWO_WAYS))
    assert values["BLUEPRINT_ID"] == "30"
    assert values["STATUS_REGISTRY_CONTRACT"] == "0xabc"
    assert values["SIDECAR_IMAGE"] == "ghcr.example.invalid/sidecar:pinned"


def test_dotenv_expands_earlier_names_only_outside_single_quotes():
    values = envfile.as_dict(envfile.parse_dotenv(TWO_WAYS))
    assert values["STATE_DIR"] == "/srv/state"
    assert values["QUOTED"] == "$BASE literal"


def test_divergences_name_each_line():
    found = {d.name: d.line for d in envfile.divergences(TWO_WAYS)}
    assert found["BLUEPRINT_ID"] == 1
    assert found["STATUS_REGISTRY_CONTRACT"] == 2
    assert found["STATE_DIR"] == 5
    assert "BASE" not in found


def test_systemd_joins_continued_lines():
    values = envfile.as_dict(envfile.parse_systemd("A=one \\\ntwo\nB=3\n"))
    assert values == {"A": "one two", "B": "3"}


def test_parsers_skip_invalid_names():
    assert envfile.parse_dotenv("1X=2\n=3\nnot a line\n") == []
    assert envfile.parse_systemd("1X=2\n=3\nnot a line\n") == []
