"""Checks on the manager's settings file and on files that carry secrets."""

from __future__ import annotations

import posixpath

from bpm_doctor import envfile, redact
from bpm_doctor.diagnose.findings import make
from bpm_doctor.diagnose.switches import settings_values
from bpm_doctor.diagnose.view import HostView, manager_sites
from bpm_doctor.model import Finding, Severity

# `cli/src/settings.rs` of the blueprint SDK requires these; SERVICE_ID is optional.
REQUIRED_SETTINGS = ("BLUEPRINT_ID", "TANGLE_CONTRACT", "STAKING_CONTRACT", "STATUS_REGISTRY_CONTRACT")


def check_settings_files(view: HostView) -> list[Finding]:
    findings = []
    checked: set[str] = set()
    for site in manager_sites(view):
        path = site.paths.settings_file
        if path is None or site.paths.settings_kind != "env" or path in checked:
            continue
        checked.add(path)
        state = view.snapshot.path_state(path)
        if state == "missing":
            findings.append(make(
                "settings-missing-key",
                f"the manager's settings file {path} does not exist, so the manager cannot start",
                pid=site.pid, unit=site.unit, path=path,
                remedy="Create the settings file with BLUEPRINT_ID, TANGLE_CONTRACT, STAKING_CONTRACT and "
                       "STATUS_REGISTRY_CONTRACT, or point --settings-file at the existing one.",
            ))
            continue
        values = settings_values(view, site)
        if values is None:
            continue
        missing = [name for name in REQUIRED_SETTINGS if not values.get(name)]
        if missing:
            findings.append(make(
                "settings-missing-key",
                f"the manager's settings file {path} lacks {', '.join(missing)}",
                pid=site.pid, unit=site.unit, path=path,
            ))
        if "SERVICE_ID" in values:
            line = next(a.line for a in envfile.parse_dotenv(view.snapshot.files[path]) if a.name == "SERVICE_ID")
            findings.append(make(
                "settings-service-id",
                f"the manager's settings file {path} pins SERVICE_ID; the manager ignores it and sets the "
                "service id per instance",
                unit=site.unit, path=path, line=line,
            ))
    return findings


def _environment_files(view: HostView) -> set[str]:
    paths = set()
    for site in manager_sites(view):
        if site.paths.settings_file:
            paths.add(site.paths.settings_file)
    for info in view.units.values():
        if info.effective is None:
            continue
        for path, _optional, _entry in info.effective.environment_files:
            if posixpath.isabs(path):
                paths.add(posixpath.normpath(path))
    return paths


def check_secret_file_permissions(view: HostView) -> list[Finding]:
    findings = []
    for path in sorted(_environment_files(view)):
        entry = view.snapshot.paths.get(path)
        text = view.snapshot.files.get(path)
        if entry is None or "mode" not in entry.attrs or text is None:
            continue
        try:
            mode = int(entry.attrs["mode"], 8)
        except ValueError:
            continue
        secret_names = sorted({a.name for a in envfile.parse_dotenv(text) if redact.is_secret_name(a.name)})
        if not secret_names or not mode & 0o044:
            continue
        findings.append(make(
            "secret-file-permissions",
            f"{path} holds secret-like keys ({', '.join(secret_names)}) and is readable by group or others "
            f"(mode {mode:04o})",
            path=path, severity=Severity.WARNING,
        ))
    return findings
