"""The instance rule shared by host diagnosis and lint (`identify.argv_is_instance`)."""

from __future__ import annotations

import pytest

from bpm_doctor import identify

CASES = [
    (["/srv/x/bin/relay", "run"], {"BLUEPRINT_ID": "9"}, set(), True),
    (["/srv/x/bin/relay", "run", "--service-id=3"], {}, set(), True),
    (["/srv/x/bin/relay", "run"], {}, set(), False),
    (["/usr/local/bin/tb"], {"BLUEPRINT_ID": "13", "SERVICE_ID": "0"}, set(), True),
    (["/usr/local/bin/validator"], {"SERVICE_ID": "0"}, set(), False),
    (["/root/.cache/blueprint-manager/svc-13-0/tb"], {}, set(), True),
    (["/opt/tb/trading-blueprint"], {}, {"trading-blueprint"}, True),
    (["/root/.cargo/bin/cargo-tangle", "blueprint", "run"], {"BLUEPRINT_ID": "1", "SERVICE_ID": "2"}, set(), False),
    (["cargo", "tangle", "blueprint", "run"], {"PROTOCOL": "tangle"}, set(), False),
]


@pytest.mark.parametrize("argv, environment, binaries, expected", CASES)
def test_argv_is_instance_table(argv, environment, binaries, expected):
    assert identify.argv_is_instance(argv, environment, binaries) is expected


def test_cache_check_ends_at_double_slash_root():
    assert identify.in_manager_cache("//x") is False
    assert identify.in_manager_cache("//root/.cache/blueprint-manager/svc-1-2/x") is True
