"""Stale-reference findings on a real directory tree beside a running stand-in manager.

One stand-in manager runs with its working directory, HOME and
XDG_CACHE_HOME inside a pytest temporary directory, so its runtime root
(`<work>/blueprint-manager/run`, because XDG_RUNTIME_DIR is unset), its cache
root (`$XDG_CACHE_HOME/blueprint-manager`) and its data dir (`<work>/data`)
all lie in that tree. Its one service runs the stand-in instance from the
service's cache dir, as the real manager runs a downloaded binary. The
fixture then adds what a host keeps after services end and upgrades swap
binaries, and runs the real `bpm-doctor check --format json`. The tests
assert only on findings whose paths lie inside the tree, because the host
may have other manager dirs of its own.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live.conftest import BLUEPRINT_BASE, Doctor, LiveProcesses, start_manager
from tests.support.standins import StandinBinaries, compile_standins, missing_compiler

pytestmark = pytest.mark.live

BLUEPRINT = BLUEPRINT_BASE + 70
LIVE_SERVICE = 1
ENDED_SERVICE = 2
# An authorisation for a service that never ran on this host.
UNKNOWN_SERVICE = 5
SETTINGS_SERVICE_ID = 7
SECRET_NAME = "OPERATOR_PRIVATE_KEY"
SECRET_VALUE = "0x" + "5e" * 32
# e_machine values from elf(5).
ELF_MACHINES = {"x86_64": 62, "aarch64": 183}
# Upgrade binaries that the cache keeps beside the running one. The manager
# names them `binary-v<version>-<arch>-<first 8 bytes of sha256>`.
OLD_VERSION_NAMES = ("binary-v1-{arch}-0123456789abcdef", "binary-v2-{arch}-fedcba9876543210")
PARTIAL_DOWNLOAD_NAME = "binary-v3-{arch}-asset.part"


def _label(service_id: int) -> str:
    return f"svc-{BLUEPRINT}-{service_id}"


def _host_arch() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _foreign_arch() -> str:
    """Return an architecture other than this host's, for a binary the host cannot run."""
    return "x86_64" if _host_arch() == "aarch64" else "aarch64"


def elf_header(arch: str) -> bytes:
    """Return the first 20 bytes of a 64-bit little-endian ELF executable for `arch` (elf(5))."""
    identification = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELFCLASS64, ELFDATA2LSB, EV_CURRENT, SysV ABI
    object_type = (2).to_bytes(2, "little")  # ET_EXEC
    machine = ELF_MACHINES[arch].to_bytes(2, "little")
    return identification + object_type + machine


def bind_without_listener(cwd: Path, relative_path: str) -> None:
    """Bind and listen on a Unix socket in a child process that exits without unlinking it.

    The path is bound relative to `cwd`, as the manager binds its bridge
    sockets when XDG_RUNTIME_DIR is unset, which keeps it under the
    108-byte AF_UNIX limit whatever the temporary directory's length.
    """
    script = (
        "import socket, sys\n"
        "listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "listener.bind(sys.argv[1])\n"
        "listener.listen(1)\n"
        "listener.close()\n"
    )
    subprocess.run([sys.executable, "-c", script, relative_path], cwd=cwd, check=True, timeout=30)


def _skip_without_standins() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("live tests read /proc and need Linux")
    reason = missing_compiler()
    if reason is not None:
        pytest.skip(reason)
    if _host_arch() not in ELF_MACHINES:
        pytest.skip(f"no ELF machine number for this host's architecture {platform.machine()}")


def finding_paths(finding: dict) -> list[str]:
    value = finding.get("path")
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


@dataclass
class StaleTree:
    """The tree the fixture built, and the reports `check` printed for it."""

    base: Path
    runtime_root: Path
    cache_root: Path
    data_dir: Path
    settings: Path
    instance_binary: Path
    old_versions: list[Path]
    partial_download: Path
    foreign_binary: Path
    stale_socket: Path
    ended_dirs: list[Path]
    live_dirs: list[Path]
    ended_authz: Path
    unknown_authz: Path
    live_authz: Path
    rocksdb_lock: Path
    instance_pid: int
    report: dict
    report_text: str
    private_report: dict

    def findings(self, finding_id: str, report: dict | None = None) -> list[dict]:
        """Return the findings with this id that name at least one path inside the tree."""
        found = []
        for finding in (report or self.report)["findings"]:
            if finding["id"] != finding_id:
                continue
            if any(Path(path).is_relative_to(self.base) for path in finding_paths(finding)):
                found.append(finding)
        return found

    def findings_naming(self, path: Path, report: dict | None = None) -> list[dict]:
        return [f for f in (report or self.report)["findings"] if str(path) in finding_paths(f)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> StaleTree:
    _skip_without_standins()
    # A short directory name keeps the bridge socket paths inside the AF_UNIX limit.
    base = tmp_path_factory.mktemp("stale")
    binaries = compile_standins(base / "bin")
    work, home, cache_home = base / "work", base / "home", base / "cache"
    home.mkdir()
    runtime_root = work / "blueprint-manager" / "run"
    cache_root = cache_home / "blueprint-manager"
    data_dir = work / "data"
    arch = _host_arch()

    # The live service runs its binary from its cache dir, beside two older
    # upgrade binaries, a partial download and a binary for another CPU.
    live_cache = cache_root / _label(LIVE_SERVICE)
    live_cache.mkdir(parents=True)
    instance_binary = live_cache / "quill-operator"
    shutil.copy2(binaries.instance, instance_binary)
    old_versions = [live_cache / name.format(arch=arch) for name in OLD_VERSION_NAMES]
    for path in old_versions:
        shutil.copy2(binaries.instance, path)
    partial_download = live_cache / PARTIAL_DOWNLOAD_NAME.format(arch=arch)
    partial_download.write_bytes(elf_header(arch)[:10])
    # Named like the running binary, so only the ELF header can tell it apart.
    foreign_binary = live_cache / "quill-operator.previous"
    foreign_binary.write_bytes(elf_header(_foreign_arch()) + bytes(44))
    foreign_binary.chmod(0o755)

    # The service that ended: the manager left both of its dirs behind, and
    # its bridge socket after an unclean stop.
    ended_runtime = runtime_root / _label(ENDED_SERVICE)
    ended_cache = cache_root / _label(ENDED_SERVICE)
    ended_runtime.mkdir(parents=True)
    ended_cache.mkdir(parents=True)
    shutil.copy2(binaries.instance, ended_cache / "quill-operator")
    stale_socket = ended_runtime / f"{_label(ENDED_SERVICE)}.sock"
    bind_without_listener(work, str(stale_socket.relative_to(work)))

    authz = data_dir / "upgrade-authz"
    authz.mkdir(parents=True)
    live_authz, ended_authz, unknown_authz = (authz / f"{service}.json" for service in
                                              (LIVE_SERVICE, ENDED_SERVICE, UNKNOWN_SERVICE))
    for path in (live_authz, ended_authz, unknown_authz):
        path.write_text('{"allowed": true}\n')
    # RocksDB keeps this file for as long as the database exists.
    rocksdb_lock = data_dir / "private" / "auth-proxy" / "db" / "LOCK"
    rocksdb_lock.parent.mkdir(parents=True)
    rocksdb_lock.write_bytes(b"")

    doctor_config = base / "doctor.toml"
    doctor_config.write_text("")
    doctor = Doctor(doctor_config)
    # The manager's instance runs from the cache, so the cleanup kills it by that path too.
    running = StandinBinaries(manager=binaries.manager, instance=instance_binary)
    with LiveProcesses(running, base / "processes.log") as live:
        manager = start_manager(
            live, work, home, [(BLUEPRINT, LIVE_SERVICE)],
            extra_env={"XDG_CACHE_HOME": str(cache_home)},
            extra_settings=(f"SERVICE_ID={SETTINGS_SERVICE_ID}", f"{SECRET_NAME}={SECRET_VALUE}"),
            settings_mode=0o644,
        )
        settings = work / "settings.env"
        report_text = doctor.check()
        settings.chmod(0o600)
        private_report = json.loads(doctor.check())
        instance_pid = manager.instances[(BLUEPRINT, LIVE_SERVICE)]
        live_dirs = [runtime_root / _label(LIVE_SERVICE), live_cache]
        assert all(path.is_dir() for path in live_dirs), "the stand-in manager did not create its service dirs"

    return StaleTree(
        base=base, runtime_root=runtime_root, cache_root=cache_root, data_dir=data_dir, settings=settings,
        instance_binary=instance_binary, old_versions=old_versions, partial_download=partial_download,
        foreign_binary=foreign_binary, stale_socket=stale_socket, ended_dirs=[ended_runtime, ended_cache],
        live_dirs=live_dirs, ended_authz=ended_authz, unknown_authz=unknown_authz, live_authz=live_authz,
        rocksdb_lock=rocksdb_lock, instance_pid=instance_pid, report=json.loads(report_text),
        report_text=report_text, private_report=private_report,
    )


def summaries(report: dict) -> str:
    return "\n".join(f"  {f['severity']} {f['id']} path={f.get('path')}: {f['summary']}" for f in report["findings"])


def test_tree_manager_dirs_in_inventory(tree):
    managers = [entry for entry in tree.report["inventory"]["manager_daemons"]
                if entry.get("cache_dir") == str(tree.cache_root)]
    assert len(managers) == 1, tree.report["inventory"]["manager_daemons"]
    assert managers[0]["runtime_dir"] == str(tree.runtime_root)
    assert managers[0]["data_dir"] == str(tree.data_dir)
    assert managers[0]["settings_file"] == str(tree.settings)


def test_tree_instance_runs_from_cache(tree):
    instances = [entry for entry in tree.report["inventory"]["instances"] if entry["pid"] == tree.instance_pid]
    assert len(instances) == 1, tree.report["inventory"]["instances"]
    assert instances[0].get("managed") is True


# stale-service-dir

def test_ended_service_dirs_are_stale(tree):
    found = [f for f in tree.findings("stale-service-dir") if f.get("service_id") == ENDED_SERVICE
             and f.get("blueprint_id") == BLUEPRINT]
    assert len(found) == 1, summaries(tree.report)
    assert found[0]["severity"] == "info"
    assert sorted(finding_paths(found[0])) == sorted(str(path) for path in tree.ended_dirs)


def test_live_service_dirs_not_stale(tree):
    for path in tree.live_dirs:
        assert not tree.findings_naming(path), summaries(tree.report)


@pytest.mark.parametrize("name", ["ended_authz", "unknown_authz"])
def test_authz_without_instance_is_stale(tree, name):
    path = getattr(tree, name)
    found = [f for f in tree.findings_naming(path) if f["id"] == "stale-service-dir"]
    assert len(found) == 1, summaries(tree.report)
    assert found[0]["severity"] == "info"
    assert found[0]["service_id"] == int(path.stem)


def test_live_authz_not_stale(tree):
    assert tree.findings_naming(tree.live_authz) == [], summaries(tree.report)


def test_rocksdb_lock_never_reported(tree):
    lock = str(tree.rocksdb_lock)
    assert lock not in tree.report_text
    for report in (tree.report, tree.private_report):
        assert not [f for f in report["findings"] if any(path.startswith(str(tree.rocksdb_lock.parent))
                                                         for path in finding_paths(f))]


# stale-socket

def test_socket_without_listener_is_stale(tree):
    found = tree.findings_naming(tree.stale_socket)
    assert [f["id"] for f in found if f["id"] == "stale-socket"] == ["stale-socket"], summaries(tree.report)
    finding = next(f for f in found if f["id"] == "stale-socket")
    assert finding["severity"] == "warning"
    assert finding["blueprint_id"] == BLUEPRINT
    assert finding["service_id"] == ENDED_SERVICE


def test_live_bridge_socket_not_stale(tree):
    live_socket = tree.runtime_root / _label(LIVE_SERVICE) / f"{_label(LIVE_SERVICE)}.sock"
    assert tree.findings_naming(live_socket) == [], summaries(tree.report)
    assert [f for f in tree.findings("stale-socket") if f.get("service_id") == LIVE_SERVICE] == []


# stale-cached-binary

def _cached_binary_findings(tree, severity: str) -> list[dict]:
    return [f for f in tree.findings("stale-cached-binary") if f["severity"] == severity]


def test_old_upgrade_binaries_are_stale(tree):
    found = _cached_binary_findings(tree, "info")
    assert len(found) == 1, summaries(tree.report)
    paths = set(finding_paths(found[0]))
    for path in tree.old_versions:
        assert str(path) in paths
    assert found[0]["blueprint_id"] == BLUEPRINT
    assert found[0]["service_id"] == LIVE_SERVICE


def test_partial_download_is_stale(tree):
    found = _cached_binary_findings(tree, "info")
    assert str(tree.partial_download) in {path for f in found for path in finding_paths(f)}, summaries(tree.report)


def test_foreign_arch_binary_is_warning(tree):
    found = _cached_binary_findings(tree, "warning")
    assert len(found) == 1, summaries(tree.report)
    assert finding_paths(found[0]) == [str(tree.foreign_binary)]
    assert _foreign_arch() in found[0]["summary"]


def test_running_binary_not_stale(tree):
    assert tree.findings_naming(tree.instance_binary) == [], summaries(tree.report)


def test_ended_service_binary_not_cached_binary(tree):
    """The ended service's binary is reported with its dirs, not a second time as a cached binary."""
    ended_binary = tree.ended_dirs[1] / "quill-operator"
    assert tree.findings_naming(ended_binary) == [], summaries(tree.report)


# The manager's settings file

def test_settings_service_id_is_info(tree):
    found = [f for f in tree.findings_naming(tree.settings) if f["id"] == "settings-service-id"]
    assert len(found) == 1, summaries(tree.report)
    assert found[0]["severity"] == "info"
    lines = tree.settings.read_text().splitlines()
    assert found[0]["line"] == lines.index(f"SERVICE_ID={SETTINGS_SERVICE_ID}") + 1


def test_readable_secret_settings_is_warning(tree):
    found = [f for f in tree.findings_naming(tree.settings) if f["id"] == "secret-file-permissions"]
    assert len(found) == 1, summaries(tree.report)
    assert found[0]["severity"] == "warning"
    assert SECRET_NAME in found[0]["summary"]
    assert "0644" in found[0]["summary"]


def test_private_secret_settings_not_reported(tree):
    found = [f for f in tree.findings_naming(tree.settings, tree.private_report)
             if f["id"] == "secret-file-permissions"]
    assert found == [], summaries(tree.private_report)


def test_secret_value_never_printed(tree):
    assert SECRET_VALUE not in tree.report_text
    assert SECRET_VALUE not in json.dumps(tree.private_report)


# A cache root reached through a symlink, as when an operator moves the
# cache to a larger disk. /proc/PID/exe names the resolved path while the
# manager's environment names the link, and each file must still be
# reported once, under the manager's path.

LINKED = BLUEPRINT_BASE + 71


@dataclass
class LinkedCache:
    cache_root: Path
    resolved_root: Path
    old_version: Path
    foreign_binary: Path
    ended_dir: Path
    report: dict

    def findings(self, finding_id: str) -> list[dict]:
        """Return the findings with this id that name a path below either name of the cache root."""
        roots = (self.cache_root, self.resolved_root)
        return [f for f in self.report["findings"] if f["id"] == finding_id
                and any(Path(path).is_relative_to(root) for path in finding_paths(f) for root in roots)]


@pytest.fixture(scope="module", params=["cache-home-link", "cache-root-link"])
def linked_cache(request, tmp_path_factory) -> LinkedCache:
    """Run a manager whose cache home (`$XDG_CACHE_HOME`) or cache root (`.../blueprint-manager`) is a symlink."""
    _skip_without_standins()
    base = tmp_path_factory.mktemp("link")
    binaries = compile_standins(base / "bin")
    work, home, disk = base / "work", base / "home", base / "disk"
    home.mkdir()
    disk.mkdir()
    cache_home = base / "cache"
    if request.param == "cache-home-link":
        cache_home.symlink_to(disk)
        resolved_root = disk / "blueprint-manager"
        resolved_root.mkdir()
    else:
        cache_home.mkdir()
        resolved_root = disk / "bpm-cache"
        resolved_root.mkdir()
        (cache_home / "blueprint-manager").symlink_to(resolved_root)
    cache_root = cache_home / "blueprint-manager"

    live_cache = resolved_root / f"svc-{LINKED}-1"
    live_cache.mkdir()
    instance_binary = live_cache / "quill-operator"
    shutil.copy2(binaries.instance, instance_binary)
    shutil.copy2(binaries.instance, live_cache / OLD_VERSION_NAMES[0].format(arch=_host_arch()))
    (live_cache / "quill-operator.previous").write_bytes(elf_header(_foreign_arch()) + bytes(44))
    (resolved_root / f"svc-{LINKED}-2").mkdir()

    doctor_config = base / "doctor.toml"
    doctor_config.write_text("")
    running = StandinBinaries(manager=binaries.manager, instance=instance_binary)
    with LiveProcesses(running, base / "processes.log") as live:
        # The manager runs its instance through the link, as the real one runs `<cache>/svc-B-S/<binary>`.
        start_manager(live, work, home, [(LINKED, 1)], extra_env={"XDG_CACHE_HOME": str(cache_home)})
        report = json.loads(Doctor(doctor_config).check())

    linked_dir = cache_root / f"svc-{LINKED}-1"
    return LinkedCache(
        cache_root=cache_root, resolved_root=resolved_root,
        old_version=linked_dir / OLD_VERSION_NAMES[0].format(arch=_host_arch()),
        foreign_binary=linked_dir / "quill-operator.previous",
        ended_dir=cache_root / f"svc-{LINKED}-2", report=report,
    )


def test_linked_cache_foreign_binary_once(linked_cache):
    found = [f for f in linked_cache.findings("stale-cached-binary") if f["severity"] == "warning"]
    assert len(found) == 1, summaries(linked_cache.report)
    assert finding_paths(found[0]) == [str(linked_cache.foreign_binary)]


def test_linked_cache_old_version_reported(linked_cache):
    found = [f for f in linked_cache.findings("stale-cached-binary") if f["severity"] == "info"]
    assert len(found) == 1, summaries(linked_cache.report)
    assert finding_paths(found[0]) == [str(linked_cache.old_version)]


def test_linked_cache_ended_dir_once(linked_cache):
    found = linked_cache.findings("stale-service-dir")
    assert len(found) == 1, summaries(linked_cache.report)
    assert finding_paths(found[0]) == [str(linked_cache.ended_dir)]


def test_linked_cache_live_dir_not_stale(linked_cache):
    found = [f for f in linked_cache.findings("stale-service-dir") if f.get("service_id") == 1]
    assert found == [], summaries(linked_cache.report)
