"""Journal tokens that explain why a manager unit fails.

Tokens, not whole lines: the manager's messages come from format strings
in the blueprint SDK (`crates/manager/src/executor/mod.rs`,
`cli/src/settings.rs`) and carry ids, paths and error details, and
systemd's lines carry the unit name.
"""

from __future__ import annotations

CRASH_CAUSES: list[tuple[tuple[str, ...], str]] = [
    (("unexpected argument", "INVALIDARGUMENT", "Usage: cargo-tangle"),
     "cargo-tangle rejects its flags (usage error, exit status 2)"),
    (("Missing BLUEPRINT_ID", "Missing TANGLE_CONTRACT", "Missing STAKING_CONTRACT",
      "Missing STATUS_REGISTRY_CONTRACT"),
     "the settings file lacks a required key"),
    (("Invalid BLUEPRINT_ID",), "the settings file has an invalid BLUEPRINT_ID"),
    (("AddrInUse", "Auth Proxy Closed Unexpectedly", "Address already in use"),
     "port 8276 is already in use, most likely by another manager"),
    (("LOCK: Resource temporarily unavailable", "While lock file"),
     "the data dir's RocksDB lock is held by another manager"),
    (("Failed to locate executable", "203/EXEC"), "the ExecStart executable does not exist"),
]

# Lines worth keeping in a snapshot: the crash causes above, plus systemd's
# load errors and left-over process notices and the manager's lifecycle lines.
KEPT_TOKENS: tuple[str, ...] = tuple(token for tokens, _cause in CRASH_CAUSES for token in tokens) + (
    "Refusing",
    "left-over process",
    "remains running after unit stopped",
    "Process for svc-",
    "Spawning native process",
    "Service never connected to bridge",
    "Unable to establish bridge connection",
    "Scheduled restart job",
    "Main process exited",
)


def is_kept(line: str) -> bool:
    return any(token in line for token in KEPT_TOKENS)
