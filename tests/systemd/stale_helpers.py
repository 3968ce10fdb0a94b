"""Helpers for the stale-unit scenarios: manager units, settings files, unit states and findings.

tests/systemd/host.py installs and removes units. These helpers write the
units the stale scenarios need and wait for systemd to settle them.
"""

from __future__ import annotations

from pathlib import Path

from tests.systemd.host import InstalledUnits, SystemdHost

# Any 0x-prefixed 40-digit hex value passes the manager's settings check.
CONTRACTS = {
    "TANGLE_CONTRACT": "0x" + "1" * 40,
    "STAKING_CONTRACT": "0x" + "2" * 40,
    "STATUS_REGISTRY_CONTRACT": "0x" + "3" * 40,
}


def write_settings(directory: Path, host: SystemdHost, blueprint_id: int, service_id: int) -> Path:
    """Write the manager's settings file: coordinates, contracts and the stand-in's inputs."""
    lines = [f"BLUEPRINT_ID={blueprint_id}"]
    lines += [f"{name}={value}" for name, value in CONTRACTS.items()]
    lines.append(f"STANDIN_SERVICES={blueprint_id}/{service_id}")
    lines.append(f"STANDIN_INSTANCE_BINARY={host.binaries.instance}")
    path = directory / "settings.env"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def manager_unit(directory: Path, settings: Path, executable: str, extra_service_lines: tuple[str, ...] = ()) -> str:
    """Return a manager unit as an operator writes it, starting `executable blueprint run`."""
    service = [
        "[Service]",
        f"WorkingDirectory={directory}",
        f"Environment=HOME={directory}",
        f"ExecStart={executable} blueprint run --data-dir {directory}/data "
        f"--keystore-path {directory}/keystore --settings-file {settings}",
        "Restart=on-failure",
        "RestartSec=30s",
        *extra_service_lines,
    ]
    sections = (
        ["[Unit]", "Description=Tangle Blueprint Manager"],
        service,
        ["[Install]", "WantedBy=multi-user.target"],
    )
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def start_manager(host: SystemdHost, units: InstalledUnits, name: str, text: str) -> tuple[int, int]:
    """Install, enable and start a manager unit that runs the stand-in, and return (manager pid, instance pid)."""
    units.install(name, text)
    host.systemctl("enable", "--runtime", "--now", name)
    manager_pid = int(host.show(name, "MainPID")["MainPID"])
    assert manager_pid > 0, host.journal(name)

    def connected_instance():
        for ready in host.ready_instances(name):
            if ready.ppid == manager_pid and ready.bridge == "connected":
                return ready
        return None

    ready = host.wait_for(connected_instance, f"the instance of manager pid {manager_pid} to connect to its bridge")
    return manager_pid, ready.pid


def wait_for_properties(host: SystemdHost, unit: str, **expected: str) -> dict[str, str]:
    """Wait until `systemctl show` gives each property its expected value, and return the properties."""
    names = tuple(expected)

    def settled():
        properties = host.show(unit, *names)
        return properties if all(properties.get(key) == value for key, value in expected.items()) else None

    return host.wait_for(settled, f"{unit} to reach {expected}")


def findings(report: dict, finding_id: str, unit: str | None = None) -> list[dict]:
    """Return the findings with this id, and with `unit` only those that name that unit."""
    return [f for f in report["findings"] if f["id"] == finding_id and (unit is None or f.get("unit") == unit)]


def summaries(report: dict) -> str:
    return "\n".join(f"  {f['severity']} {f['id']} unit={f.get('unit')} path={f.get('path')}: {f['summary']}"
                     for f in report["findings"])
