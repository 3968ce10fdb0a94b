"""The finding catalogue: stable ids, default severities and remedies.

Operators write alert routes, silences and allow-list entries against these
ids, so an id keeps its meaning once released. Severities here are the
defaults; a few findings are raised at another severity in a given context
(`exec-missing` is critical for the manager unit), and configuration may
override them per id.
"""

from __future__ import annotations

from dataclasses import dataclass

from bpm_doctor.model import Severity


@dataclass(frozen=True)
class Entry:
    """A catalogue entry: where the finding applies and what to do about it."""

    id: str
    severity: Severity
    scope: str
    remedy: str


_C, _W, _I = Severity.CRITICAL, Severity.WARNING, Severity.INFO

ENTRIES = [
    Entry("manager-down", _C, "host",
          "Start the manager unit (systemctl start UNIT) and read `journalctl -u UNIT` for why it stopped."),
    Entry("manager-crashloop", _C, "host",
          "Fix the cause named in the finding, then `systemctl restart UNIT`; the journal shows each failed start."),
    Entry("manager-unsupervised", _W, "host",
          "Stop this manager and run it only from its systemd unit, so it is restarted and its instances are cleaned up with it."),
    Entry("multiple-managers", _C, "host",
          "Keep one manager unit enabled and disable the others. Two cargo-tangle managers cannot share port 8276, "
          "so one manager per operator on one host does not work: use one host per operator."),
    Entry("hand-run-instance", _C, "host",
          "Stop this process and remove what launched it (the unit, crontab line, tmux window or container). "
          "Only the manager may launch instances; it starts every approved service itself."),
    Entry("direct-run-unit", _C, "host,lint",
          "Disable and remove this unit (systemctl disable --now UNIT). The manager unit launches the instance; "
          "move any settings it needs into the manager's settings file."),
    Entry("hand-run-manager-command", _C, "host",
          "Stop this command. Manager commands such as `service spawn` and `harness up` are for development, "
          "not for an operator box with a manager daemon."),
    Entry("duplicate-service", _C, "host",
          "Keep the manager's instance and stop the others: two instances submit the same results and race for nonces."),
    Entry("orphan-instance", _C, "host",
          "Stop this process (kill PID after checking it is still the same process). The manager spawns a fresh "
          "instance; then find out why the old one outlived its manager (KillMode, a SIGKILL, a manager outside systemd)."),
    Entry("orphan-descendant", _W, "host",
          "Stop this leftover child of a dead instance; it may hold ports, files or a GPU the new instance needs."),
    Entry("managed-instance-gone", _W, "host",
          "Restart the manager unit: the manager does not respawn an instance that exited until the manager restarts."),
    Entry("test-mode", _C, "host",
          "Remove TEST_MODE and --test-mode from the instance, the manager's unit, settings file and environment. "
          "In test mode an instance never connects to the manager's bridge."),
    Entry("bypass-flag", _W, "host",
          "Remove the bypass switch from the manager's flags, unit environment and settings file, then restart the manager."),
    Entry("global-environment", _W, "host",
          "Run `systemctl unset-environment NAME` for each name listed, then restart the units that inherited them."),
    Entry("keystore-in-tmp", _W, "host",
          "Move the keystore to a directory that survives reboots and is readable only by the operator (for example "
          "under /var/lib), and point the manager at it."),
    Entry("dropin-overrides-execstart", _C, "host,lint",
          "Edit the drop-in: start it with an empty `ExecStart=` line to reset the command, and keep the command a manager daemon."),
    Entry("unit-load-error", _C, "host",
          "Run `systemd-analyze verify UNIT` and `journalctl -u UNIT`, fix the unit or drop-in, then `systemctl daemon-reload`."),
    Entry("manager-unknown-flag", _C, "host,lint",
          "Remove the flags `cargo-tangle blueprint run` does not accept; they belong to the instance runner. "
          "Use --keystore-path instead of --keystore-uri and --network instead of --chain."),
    Entry("settings-missing-key", _C, "host,lint",
          "Add BLUEPRINT_ID, TANGLE_CONTRACT, STAKING_CONTRACT and STATUS_REGISTRY_CONTRACT to the manager's settings file."),
    Entry("settings-service-id", _I, "host,lint",
          "Remove SERVICE_ID from the manager's settings: the manager starts every service assigned to the operator "
          "and sets SERVICE_ID per instance itself."),
    Entry("exec-missing", _W, "host",
          "Point the unit at an existing executable, or disable and remove the unit if it is left over from a rename."),
    Entry("stale-unit", _W, "host",
          "Remove the unit file (and its drop-ins), then `systemctl daemon-reload`, so it cannot be re-enabled by mistake."),
    Entry("killmode-not-control-group", _W, "host,lint",
          "Remove the KillMode= line so the default control-group stops the instances together with the manager."),
    Entry("stale-socket", _W, "host",
          "Remove the socket file; no process listens on it. Keep sockets of services that are still active."),
    Entry("stale-service-dir", _I, "host",
          "Remove the per-service directories once the service is terminated on chain. Keep the blueprint's shared "
          "data directory while any service of that blueprint runs."),
    Entry("stale-cached-binary", _I, "host",
          "Remove cached binaries that no instance runs; the manager downloads what it needs again."),
    Entry("secret-file-permissions", _W, "host,lint",
          "Restrict the file to its owner (chmod 600 FILE); it contains secret-like keys."),
    Entry("script-launches-instance", _C, "lint",
          "Do not start the instance from a script; install and enable the manager unit instead."),
    Entry("container-runs-instance", _C, "lint",
          "Do not run the instance as a container entrypoint on an operator box; the manager launches it."),
    Entry("runbook-direct-run", _W, "lint",
          "Rewrite the section to start the Blueprint Manager (cargo-tangle blueprint run under systemd) "
          "instead of the instance binary."),
    Entry("placeholder-value", _W, "lint",
          "Replace the placeholder with the real value before the file reaches a host."),
    Entry("settings-divergence", _W, "lint",
          "Write the value so systemd's EnvironmentFile= and dotenv read it the same: no inline comments, "
          "no `export`, no `$VAR`, and quotes around the whole value or none."),
    Entry("suppression-without-reason", _W, "lint",
          "Give a reason after the suppression comment: `# bpm-doctor: ignore[ID] why this is deliberate`."),
    Entry("check-failed", _C, "host,lint",
          "A check raised an error; the rest of the scan went on. Report it with the snapshot (bpm-doctor snapshot)."),
]

BY_ID = {entry.id: entry for entry in ENTRIES}
IDS = [entry.id for entry in ENTRIES]


def severity_of(finding_id: str) -> Severity:
    return BY_ID[finding_id].severity


def remedy_of(finding_id: str) -> str:
    return BY_ID[finding_id].remedy
