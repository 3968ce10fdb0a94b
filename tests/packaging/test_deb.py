"""The Debian package: build, lintian, then install, run and purge it in a booted Debian 12 container.

The package is built from a copy of the working tree (tests/packaging/debbuild.py).
It is then installed with `dpkg --install` into a container that
systemd-nspawn boots on a cached debootstrap tree (tests/packaging/nspawn.py).
There its postinst creates the bpm-doctor user and starts bpm-doctor.service,
as on a real host.

Before the package is installed, a root-owned process is started whose only
blueprint coordinates are in its environment. The service can recognise it
as an instance only by reading another user's /proc/PID/environ, so finding
it proves that the sandbox leaves that access.

The tests share one container and run in file order: the last one purges the
package. Without root or the tools they need they skip, except under
CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

from tests.packaging import debbuild, nspawn
from tests.support import tools

pytestmark = [pytest.mark.systemd, pytest.mark.deb]

REPOSITORY = Path(__file__).resolve().parents[2]
UNITS = ("bpm-doctor.service", "bpm-doctor-check.service", "bpm-doctor-check.timer")
DEB_DIRECTORY_INSIDE = "/mnt/bpm-doctor-deb"
PROBE_UNIT = "bpm-probe-instance.service"
PROBE_BLUEPRINT_ID = 4242
PROBE_SERVICE_ID = 77
METRICS_URL = "http://127.0.0.1:9737/metrics"
TEXTFILE_LINK = "/var/lib/prometheus/node-exporter/bpm-doctor.prom"
TEXTFILE = "/var/lib/bpm-doctor/bpm-doctor.prom"
SERVICE_ACTIVE_TIMEOUT_SECONDS = 60


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str):
    """Skip, or fail when CI=true, because CI installs everything these tests need."""
    if _in_ci():
        pytest.fail(f"CI=true, but the package tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


# --- the build -------------------------------------------------------------


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> debbuild.BuildResult:
    tools.require("dpkg-buildpackage", "dpkg-dev")
    source = debbuild.copy_source(REPOSITORY, tmp_path_factory.mktemp("deb"))
    missing = debbuild.missing_build_dependencies(source)
    if missing:
        _unavailable(f"build dependencies missing: {missing}")
    return debbuild.build(source)


def test_lintian_reports_no_error_or_warning(package):
    tools.require("lintian", "lintian")
    completed = debbuild.lintian(package.changes)
    tags = [line for line in completed.stdout.splitlines() if line.startswith(("E:", "W:"))]
    assert tags == []
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_package_contains_program_units_and_docs(package):
    paths = set(debbuild.package_paths(package.deb))
    for expected in ("./usr/bin/bpm-doctor", "./etc/bpm-doctor/config.toml",
                     "./lib/systemd/system/bpm-doctor.service", "./lib/systemd/system/bpm-doctor-check.service",
                     "./lib/systemd/system/bpm-doctor-check.timer", "./usr/lib/sysusers.d/bpm-doctor.conf",
                     "./usr/share/man/man1/bpm-doctor.1.gz", "./usr/share/doc/bpm-doctor/copyright",
                     "./usr/lib/python3/dist-packages/bpm_doctor/cli.py"):
        assert expected in paths


def test_packaged_files_match_checkout(package, tmp_path):
    root = debbuild.extract(package.deb, tmp_path / "root")
    for name in UNITS:
        packaged = (root / "lib/systemd/system" / name).read_bytes()
        assert packaged == (REPOSITORY / "packaging/systemd" / name).read_bytes(), name
    assert (root / "etc/bpm-doctor/config.toml").read_bytes() == (REPOSITORY / "packaging/config.toml").read_bytes()


def test_only_config_is_conffile(package):
    assert debbuild.control_file(package.deb, "conffiles").split() == ["/etc/bpm-doctor/config.toml"]


def test_depends_on_libraries_and_systemd(package):
    depends = [alternative.strip() for alternative in debbuild.control_field(package.deb, "Depends").split(",")]
    names = {alternative.split()[0] for alternative in depends}
    for name in ("python3-psutil", "python3-structlog", "python3-prometheus-client", "python3-systemd",
                 "systemd", "default-dbus-system-bus"):
        assert name in names


# --- the container -----------------------------------------------------------


@pytest.fixture(scope="module")
def container(package, tmp_path_factory):
    reason = nspawn.missing_requirements()
    if reason:
        _unavailable(reason)
    try:
        rootfs = nspawn.cached_rootfs()
    except nspawn.ContainerError as error:
        _unavailable(f"cannot build the container's root file system: {error}")
    box = nspawn.Container(rootfs, tmp_path_factory.mktemp("container") / "console.log",
                           binds={package.deb.parent: DEB_DIRECTORY_INSIDE})
    try:
        box.start()
    except nspawn.ContainerError as error:
        _unavailable(f"the container did not boot: {error}")
    yield box
    for problem in box.stop():
        warnings.warn(f"container cleanup: {problem}", stacklevel=1)


@pytest.fixture(scope="module")
def installed(container, package):
    """Start the probe process, then install the package; postinst starts bpm-doctor.service."""
    container.run(["systemd-run", f"--unit={PROBE_UNIT}",
                   f"--property=Environment=BLUEPRINT_ID={PROBE_BLUEPRINT_ID} SERVICE_ID={PROBE_SERVICE_ID}",
                   "/bin/sleep", "infinity"])
    completed = container.run(["dpkg", "--install", f"{DEB_DIRECTORY_INSIDE}/{package.deb.name}"],
                              timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


def _journal(container, unit: str) -> str:
    completed = container.run(["journalctl", "--no-pager", "-o", "cat", "-n", "30", "-u", unit], check=False)
    return f"journal of {unit}:\n{completed.stdout}{completed.stderr}"


def _require_serve(container):
    completed = container.run(["bpm-doctor", "serve", "--help"], check=False)
    if completed.returncode != 0:
        pytest.fail(f"`bpm-doctor serve` is not available in this build: {completed.stderr.strip()}",
                    pytrace=False)


def _wait_active(container, unit: str) -> dict[str, str]:
    def active():
        state = container.show(unit, "ActiveState", "SubState", "StatusText", "NRestarts")
        return state if state["ActiveState"] == "active" else None

    try:
        return container.wait_for(active, SERVICE_ACTIVE_TIMEOUT_SECONDS, f"{unit} to become active")
    except TimeoutError as error:
        pytest.fail(f"{error}\n{_journal(container, unit)}", pytrace=False)


def test_install_creates_user_and_enables_only_service(container, installed):
    entry = container.run(["getent", "passwd", "bpm-doctor"]).stdout.strip().split(":")
    assert entry[6] == "/usr/sbin/nologin"
    assert container.run(["systemctl", "is-enabled", "bpm-doctor.service"], check=False).stdout.strip() == "enabled"
    timer = container.run(["systemctl", "is-enabled", "bpm-doctor-check.timer"], check=False).stdout.strip()
    assert timer == "disabled"


def test_installed_units_verify_clean(container, installed):
    # The container has no man-db, so the man: link is not checked here;
    # test_unit_hardening.py checks it on the host.
    completed = container.run(["systemd-analyze", "verify", "--man=no",
                               *(f"/lib/systemd/system/{name}" for name in UNITS)], check=False)
    assert completed.stdout + completed.stderr == ""
    assert completed.returncode == 0


def test_service_becomes_active(container, installed):
    _require_serve(container)
    state = _wait_active(container, "bpm-doctor.service")
    assert state["NRestarts"] == "0", _journal(container, "bpm-doctor.service")


def test_metrics_answer_on_loopback(container, installed):
    _require_serve(container)
    _wait_active(container, "bpm-doctor.service")
    script = ("import sys, urllib.request\n"
              f"with urllib.request.urlopen({METRICS_URL!r}, timeout=10) as response:\n"
              "    sys.stdout.write(str(response.status) + '\\n' + response.read().decode())\n")
    completed = container.run(["python3", "-c", script], check=False)
    assert completed.returncode == 0, completed.stderr + _journal(container, "bpm-doctor.service")
    status, _, body = completed.stdout.partition("\n")
    assert status == "200"
    assert "bpm_doctor_build_info" in body
    # The probe's coordinates are only in its environment (see the module docstring).
    assert f'blueprint_id="{PROBE_BLUEPRINT_ID}"' in body


def test_check_in_unit_sandbox_reads_root_environ(container, installed):
    """Run the shipped check unit, with only its command changed to print JSON: it finds the root-owned probe."""
    output = "/run/bpm-probe-check.json"
    dropin = "/run/systemd/system/bpm-doctor-check.service.d/probe.conf"
    container.run(["mkdir", "-p", "/var/lib/prometheus/node-exporter"])
    container.write_file(dropin, "[Service]\nExecStartPre=\nExecStart=\n"
                                 "ExecStart=/usr/bin/bpm-doctor check --format json\n"
                                 f"StandardOutput=truncate:{output}\nStandardError=journal\n")
    try:
        container.run(["systemctl", "daemon-reload"])
        started = container.run(["systemctl", "start", "bpm-doctor-check.service"], check=False)
        assert started.returncode == 0, started.stderr + _journal(container, "bpm-doctor-check.service")
        report = json.loads(container.read_file(output))
    finally:
        container.run(["rm", "-f", dropin, output])
        container.run(["systemctl", "daemon-reload"])
    instances = {(item["blueprint_id"], item["service_id"]) for item in report["inventory"]["instances"]}
    assert (PROBE_BLUEPRINT_ID, PROBE_SERVICE_ID) in instances
    assert [reason for reason in report["read_errors"] if reason.startswith("permission-denied")] == []
    assert report["complete"] is True


def test_check_timer_publishes_textfile(container, installed):
    help_text = container.run(["bpm-doctor", "check", "--help"]).stdout
    if "--textfile" not in help_text:
        pytest.fail("`bpm-doctor check --textfile` is not available in this build", pytrace=False)
    container.run(["mkdir", "-p", "/var/lib/prometheus/node-exporter"])
    container.run(["systemctl", "enable", "bpm-doctor-check.timer"])
    started = container.run(["systemctl", "start", "bpm-doctor-check.service"], check=False)
    assert started.returncode == 0, started.stderr + _journal(container, "bpm-doctor-check.service")
    assert container.show("bpm-doctor-check.service", "Result")["Result"] == "success"
    assert container.run(["readlink", TEXTFILE_LINK]).stdout.strip() == TEXTFILE
    owner_and_mode = container.run(["stat", "--format=%U %a", TEXTFILE]).stdout.split()
    assert owner_and_mode == ["bpm-doctor", "644"]
    # cat inside the container: from the host, /proc/PID1/root would resolve the absolute link on the host.
    metrics = container.run(["cat", TEXTFILE_LINK]).stdout
    assert f'blueprint_id="{PROBE_BLUEPRINT_ID}"' in metrics


def test_check_command_reports_probe_as_critical(container, installed):
    completed = container.run(["bpm-doctor", "check", "--format", "nagios"], check=False)
    # The probe is an instance that the manager did not start: a critical finding.
    assert completed.stdout.startswith("BPM-DOCTOR CRITICAL"), completed.stdout + completed.stderr
    assert completed.returncode == 2


# Keep this test last: it removes the package the tests above use.
def test_purge_removes_everything(container, installed):
    listed = container.run(["dpkg-query", "--listfiles", "bpm-doctor"]).stdout.split("\n")
    listed_files = container.run(["sh", "-c", 'for path; do [ -d "$path" ] || echo "$path"; done', "sh",
                                  *filter(None, listed)]).stdout.split()
    completed = container.run(["dpkg", "--purge", "bpm-doctor"], timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr

    leftovers = [*listed_files, "/etc/bpm-doctor", "/usr/lib/python3/dist-packages/bpm_doctor",
                 "/usr/share/doc/bpm-doctor", "/var/lib/bpm-doctor", TEXTFILE_LINK,
                 "/etc/systemd/system/multi-user.target.wants/bpm-doctor.service",
                 "/etc/systemd/system/timers.target.wants/bpm-doctor-check.timer"]
    present = container.run(["sh", "-c", 'for path; do [ -e "$path" ] || [ -L "$path" ] && echo "$path"; done; '
                                         "ls /var/lib/systemd/deb-systemd-helper-enabled "
                                         "/var/lib/systemd/deb-systemd-helper-enabled/*.wants 2>/dev/null "
                                         "| grep bpm-doctor || true",
                             "sh", *leftovers]).stdout.split()
    assert present == []
    assert container.show("bpm-doctor.service", "LoadState")["LoadState"] == "not-found"
    # Debian policy keeps the system user after a purge, so its name still resolves.
    remaining = container.run(["python3", "-c", "import psutil; print([p.pid for p in psutil.process_iter(['username']) "
                                                "if p.info['username'] == 'bpm-doctor'])"]).stdout.strip()
    assert remaining == "[]"
