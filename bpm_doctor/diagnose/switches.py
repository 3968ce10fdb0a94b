"""Checks on dev switches and unsafe placement: test mode, bypasses, global environment, /tmp keystores."""

from __future__ import annotations

import posixpath
import re

from bpm_doctor import envfile, identify, redact
from bpm_doctor.diagnose.findings import make
from bpm_doctor.diagnose.view import HostView, ManagerSite, manager_sites
from bpm_doctor.model import Finding

# Switches that let an instance run without the manager's checks.
# ALLOW_UNCHECKED_ATTESTATIONS is read by cargo-tangle's clap `env` fallback;
# ALLOW_STANDALONE lets a sandbox blueprint run without a manager bridge.
BYPASS_VARIABLES = ("ALLOW_UNCHECKED_ATTESTATIONS", "ALLOW_STANDALONE")
_GLOBAL_SUSPECT_NAMES = {"SERVICE_ID", "BLUEPRINT_ID", "TEST_MODE", *BYPASS_VARIABLES}
_TMP_DIRS = ("/tmp", "/var/tmp")
_TOML_TEST_MODE = re.compile(r"^\s*test_mode\s*=\s*true\s*(#.*)?$", re.MULTILINE)


def settings_values(view: HostView, site: ManagerSite) -> dict[str, str] | None:
    """Return a manager's settings read with dotenv semantics, or None when unknown."""
    path = site.paths.settings_file
    if path is None or site.paths.settings_kind != "env":
        return None
    text = view.snapshot.files.get(path)
    if text is None:
        return None
    return envfile.as_dict(envfile.parse_dotenv(text))


def _manager_test_mode_sources(view: HostView, site: ManagerSite) -> list[str]:
    sources = []
    if identify.is_truthy(site.environment.get("TEST_MODE")):
        sources.append("TEST_MODE in its environment")
    standalone = posixpath.basename(site.executable) == "blueprint-manager"
    if standalone and identify.argv_test_mode(site.argv):
        sources.append("--test-mode in its argv")
    settings = settings_values(view, site)
    if settings is not None and identify.is_truthy(settings.get("TEST_MODE")):
        sources.append(f"TEST_MODE in its settings file {site.paths.settings_file}")
    if standalone and site.paths.settings_file:
        text = view.snapshot.files.get(site.paths.settings_file)
        if text is not None and _TOML_TEST_MODE.search(text):
            sources.append(f"test_mode = true in {site.paths.settings_file}")
    return sources


def check_test_mode(view: HostView) -> list[Finding]:
    findings = []
    test_mode_managers = set()
    for site in manager_sites(view):
        sources = _manager_test_mode_sources(view, site)
        if not sources:
            continue
        if site.pid is not None:
            test_mode_managers.add(site.pid)
            subject = f"manager daemon pid {site.pid}"
        else:
            subject = f"manager unit {site.unit}"
        findings.append(make(
            "test-mode",
            f"{subject} runs in test mode; every instance it spawns inherits it and never connects to the bridge",
            pid=site.pid, unit=site.unit,
            path=site.paths.settings_file if any("settings" in s or "test_mode" in s for s in sources) else None,
            evidence=sources,
        ))
    for pid, info in sorted(view.instances.items()):
        process = view.snapshot.processes[pid]
        sources = []
        if identify.is_truthy(process.env.get("TEST_MODE")):
            sources.append("TEST_MODE in its environment")
        if identify.argv_test_mode(process.argv):
            sources.append("--test-mode in its argv")
        if not sources:
            continue
        if info.manager_pid in test_mode_managers:
            sources.append(f"inherited from manager daemon pid {info.manager_pid}")
        elif view.snapshot.global_environment and identify.is_truthy(view.snapshot.global_environment.get("TEST_MODE")):
            sources.append("systemd's global environment sets TEST_MODE")
        findings.append(make(
            "test-mode",
            f"instance pid {pid} runs in test mode: it skips the manager's bridge",
            pid=pid, blueprint_id=info.blueprint_id, service_id=info.service_id, evidence=sources,
        ))
    return findings


def check_bypass_flags(view: HostView) -> list[Finding]:
    findings = []
    for site in manager_sites(view):
        sources = [f"{name} in its environment" for name in BYPASS_VARIABLES
                   if identify.is_truthy(site.environment.get(name))]
        if "--allow-unchecked-attestations" in site.argv:
            sources.append("--allow-unchecked-attestations in its argv")
        settings = settings_values(view, site) or {}
        sources += [f"{name} in its settings file {site.paths.settings_file}" for name in BYPASS_VARIABLES
                    if identify.is_truthy(settings.get(name))]
        if not sources:
            continue
        subject = f"manager daemon pid {site.pid}" if site.pid is not None else f"manager unit {site.unit}"
        findings.append(make(
            "bypass-flag", f"{subject} has admission or attestation checks switched off",
            pid=site.pid, unit=site.unit, evidence=sources,
        ))
    for pid, info in sorted(view.instances.items()):
        process = view.snapshot.processes[pid]
        sources = [f"{name} in its environment" for name in BYPASS_VARIABLES if identify.is_truthy(process.env.get(name))]
        if not sources:
            continue
        findings.append(make(
            "bypass-flag", f"instance pid {pid} runs with admission or attestation checks switched off",
            pid=pid, blueprint_id=info.blueprint_id, service_id=info.service_id, evidence=sources,
        ))
    return findings


def check_global_environment(view: HostView) -> list[Finding]:
    environment = view.snapshot.global_environment
    if not environment:
        return []
    names = sorted(name for name in environment if name in _GLOBAL_SUSPECT_NAMES or redact.is_secret_name(name))
    if not names:
        return []
    return [make(
        "global-environment",
        f"systemd's global environment sets {', '.join(names)}; every unit started from now on inherits them",
        evidence=[f"variable names (values are never shown): {', '.join(names)}"],
    )]


def check_keystore_in_tmp(view: HostView) -> list[Finding]:
    seen: dict[str, list] = {}
    for site in manager_sites(view):
        if site.paths.keystore:
            seen.setdefault(site.paths.keystore, []).append(site.pid if site.pid is not None else site.unit)
    for pid in view.instances:
        uri = view.snapshot.processes[pid].env.get("KEYSTORE_URI", "")
        path = uri.removeprefix("file://")
        if path.startswith("/"):
            seen.setdefault(posixpath.normpath(path), []).append(pid)
    findings = []
    for path, owners in sorted(seen.items()):
        if not any(path == tmp or path.startswith(tmp + "/") for tmp in _TMP_DIRS):
            continue
        pids = [owner for owner in owners if isinstance(owner, int)]
        units = [owner for owner in owners if isinstance(owner, str)]
        findings.append(make(
            "keystore-in-tmp",
            f"keystore {path} lies under a temporary directory: it is lost on reboot and other users can reach it",
            path=path, pid=pids or None, unit=units or None,
        ))
    return findings
