"""Hostile files where the collectors look: loops, FIFOs, huge and unreadable files, odd bytes, bad config.

A fake host tree under tmp_path contains a unit root (passed to collect_host
as `unit_roots`) with a manager unit. Its ExecStart names a settings file,
and its working directory and HOME give a cache root, runtime root,
keystore and data dir. Each test plants one kind of trouble there and runs the real
collectors; the scan must finish, and what it could not read must be counted.
The host's own processes are scanned as well, read-only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from bpm_doctor import cli, report, snapshot as snapshot_module
from bpm_doctor.collect import collect_host
from bpm_doctor.config import Config
from bpm_doctor.diagnose import diagnose
from bpm_doctor.report import json_report, nagios, prometheus, text

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLE_SNAPSHOT = REPOSITORY / "examples" / "handrun-duplicate.hostsnap"
SCAN_TIMEOUT_SECONDS = 30
HUGE_BYTES = 50 * 1024 * 1024


@pytest.fixture(autouse=True)
def restore_logging():
    """Undo cli.main's structlog setup, which writes to this test's captured stderr, closed after the test."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@dataclass
class Tree:
    """A fake host: a unit root and the files one manager unit points at."""

    root: Path
    units: Path
    work: Path
    home: Path

    @property
    def settings(self) -> Path:
        return self.work / "settings.env"

    @property
    def env_file(self) -> Path:
        return self.work / "extra.env"

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "cargo-tangle"

    @property
    def cache_root(self) -> Path:
        return self.home / ".cache" / "blueprint-manager"

    @property
    def dropin_dir(self) -> Path:
        return self.units / "bpm-manager.service.d"

    def unit_text(self, settings: Path | None = None, env_file: Path | None = None) -> str:
        return (
            "[Unit]\nDescription=Blueprint Manager\n\n[Service]\n"
            f"WorkingDirectory={self.work}\nEnvironment=HOME={self.home}\n"
            f"EnvironmentFile=-{env_file or self.env_file}\n"
            f"ExecStart={self.binary} blueprint run --settings-file {settings or self.settings} "
            f"--data-dir {self.work}/data --keystore-path {self.work}/keystore\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        )


@pytest.fixture
def tree(tmp_path) -> Tree:
    tree = Tree(tmp_path, tmp_path / "units", tmp_path / "work", tmp_path / "home")
    for directory in (tree.units, tree.work / "data" / "upgrade-authz", tree.work / "keystore", tree.cache_root,
                      tree.binary.parent, tree.dropin_dir):
        directory.mkdir(parents=True)
    tree.binary.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\x3e\x00")
    tree.settings.write_text("BLUEPRINT_ID=1\nTANGLE_CONTRACT=0x" + "1" * 40 + "\n")
    tree.env_file.write_text("RUST_LOG=info\n")
    (tree.units / "bpm-manager.service").write_text(tree.unit_text())
    (tree.dropin_dir / "10-restart.conf").write_text("[Service]\nRestart=always\n")
    return tree


def collect_bounded(tree: Tree, fifos: tuple[Path, ...] = ()):
    """Run collect_host over the tree's unit root in a thread; fail instead of hanging past the timeout.

    If the scan blocks, every FIFO is opened for writing, which releases a
    reader blocked in open(2), so the thread can finish.
    """
    result: dict = {}

    def scan():
        try:
            result["snapshot"] = collect_host(Config(), unit_roots=(str(tree.units),))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            result["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=scan, daemon=True)
    thread.start()
    thread.join(SCAN_TIMEOUT_SECONDS)
    if thread.is_alive():
        for fifo in fifos:
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"collect_host blocked for more than {SCAN_TIMEOUT_SECONDS} s")
    if "error" in result:
        raise result["error"]
    return result["snapshot"], time.monotonic() - started


def all_outputs(snapshot) -> dict[str, str | bytes]:
    """Return every rendering of one scan: text, JSON, Nagios, Prometheus exposition and the snapshot file text."""
    findings, view = diagnose(snapshot, Config())
    result = report.verdict(findings, snapshot, view)
    return {
        "text": text.render(result),
        "json": json_report.render(result),
        "nagios": nagios.render(result),
        "metrics": prometheus.render_text(prometheus.state_from_result(result), Config()),
        "findings": findings,
    }


def assert_no_check_failed(snapshot) -> None:
    findings, _view = diagnose(snapshot, Config())
    assert [finding.summary for finding in findings if finding.id == "check-failed"] == []


# --- symlink loops, FIFOs, huge files ----------------------------------------------------


def loop(path: Path) -> Path:
    """Make `path` a symlink to itself, which open(2) and stat(2) fail with ELOOP."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists():
        path.unlink()
    path.symlink_to(path.name)
    return path


def test_symlink_loops_are_skipped(tree):
    loop(tree.settings)
    loop(tree.env_file)
    loop(tree.binary)
    loop(tree.work / "keystore")
    loop(tree.work / "data" / "upgrade-authz")
    (tree.cache_root / "svc-1-2").symlink_to("svc-1-2")
    loop(tree.dropin_dir / "10-restart.conf")
    (tree.units / "looped.service").symlink_to("looped.service")
    (tree.units / "blueprint-extra.service.d").symlink_to("blueprint-extra.service.d")
    (tree.units / "blueprint-extra.service").write_text(tree.unit_text())
    looped_root = tree.root / "looped-units"
    looped_root.symlink_to(looped_root.name)

    started = time.monotonic()
    snapshot = collect_host(Config(), unit_roots=(str(tree.units), str(looped_root)))
    assert time.monotonic() - started < SCAN_TIMEOUT_SECONDS
    assert "bpm-manager.service" in snapshot.units
    assert "blueprint-extra.service" in snapshot.units
    assert "looped.service" not in snapshot.units
    assert str(tree.settings) not in snapshot.files
    assert snapshot.read_errors.get("unreadable:settings", 0) >= 2
    assert snapshot.read_errors.get("unreadable:unit-file", 0) >= 1
    assert_no_check_failed(snapshot)


def test_fifos_never_block_a_scan(tree):
    fifos = []
    for path in (tree.settings, tree.env_file, tree.binary, tree.dropin_dir / "10-restart.conf",
                 tree.units / "fifo.service", tree.work / "keystore", tree.cache_root / "svc-1-2" / "quill",
                 tree.work / "data" / "upgrade-authz" / "svc-1-2"):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            path.rmdir()
        elif path.exists():
            path.unlink()
        os.mkfifo(path)
        fifos.append(path)
    snapshot, seconds = collect_bounded(tree, tuple(fifos))
    assert seconds < 10
    assert "bpm-manager.service" in snapshot.units
    assert snapshot.read_errors.get("unreadable:settings", 0) >= 2
    assert snapshot.read_errors.get("unreadable:unit-file", 0) >= 1
    assert snapshot.paths[str(tree.settings)].kind == "file"
    assert str(tree.settings) not in snapshot.files
    assert_no_check_failed(snapshot)


def sparse(path: Path, head: bytes, size: int = HUGE_BYTES) -> None:
    """Write `head`, then extend the file to `size` bytes without writing the rest (a sparse file of NULs)."""
    with open(path, "wb") as stream:
        stream.write(head)
        stream.truncate(size)


def test_huge_files_are_never_read_whole(tree):
    sparse(tree.units / "bpm-manager.service", tree.unit_text().encode())
    sparse(tree.dropin_dir / "10-restart.conf", b"[Service]\nRestart=always\n")
    sparse(tree.settings, b"BLUEPRINT_ID=1\n")
    sparse(tree.env_file, b"RUST_LOG=info\n")
    sparse(tree.binary, b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\x3e\x00")
    tracemalloc.start()
    try:
        snapshot, seconds = collect_bounded(tree)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak of {peak / 1e6:.1f} MB: a 50 MB file was read whole"
    assert seconds < 10
    assert "bpm-manager.service" in snapshot.units
    assert len(snapshot.files[str(tree.units / "bpm-manager.service")]) <= 256 * 1024
    assert str(tree.settings) not in snapshot.files
    assert snapshot.read_errors.get("unreadable:settings", 0) >= 2
    assert snapshot.paths[str(tree.binary)].attrs.get("elf-machine") == "x86_64"
    assert_no_check_failed(snapshot)


@pytest.mark.live
def test_cache_root_with_100k_entries_is_bounded(tree):
    """100,000 junk files beside five service dirs: bounded time and memory, no service dir hidden.

    Marked live only for its run time: creating the files takes a few seconds.
    """
    for index in range(100_000):
        os.close(os.open(tree.cache_root / f"junk-{index}", os.O_CREAT | os.O_WRONLY, 0o644))
    for service in range(5):
        (tree.cache_root / f"svc-1-{service}").mkdir()
        (tree.cache_root / f"svc-1-{service}" / "quill").write_bytes(b"\x7fELF")
    tracemalloc.start()
    try:
        snapshot, seconds = collect_bounded(tree)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    recorded = [path for path in snapshot.paths if path.startswith(str(tree.cache_root) + "/")]
    assert seconds < 10
    assert peak < 16 * 1024 * 1024
    assert sorted(p for p in recorded if p.count("/") == str(tree.cache_root).count("/") + 1) == [
        str(tree.cache_root / f"svc-1-{service}") for service in range(5)]
    assert len(recorded) == 10

    for service in range(5, 2100):
        (tree.cache_root / f"svc-2-{service}").mkdir()
    snapshot, _seconds = collect_bounded(tree)
    services = [path for path in snapshot.paths if "/svc-" in path and path.count("/") ==
                str(tree.cache_root).count("/") + 1 and path.startswith(str(tree.cache_root))]
    assert len(services) == 2000
    assert snapshot.read_errors.get("truncated:directory", 0) == 1


# --- unreadable paths -----------------------------------------------------------------

COLLECT_SCRIPT = """
import json, sys
from bpm_doctor.collect import collect_host
from bpm_doctor.config import Config
from bpm_doctor.diagnose import diagnose
from bpm_doctor.report import verdict
snapshot = collect_host(Config(), unit_roots=(sys.argv[1],))
findings, view = diagnose(snapshot, Config())
result = verdict(findings, snapshot, view)
print(json.dumps({"read_errors": snapshot.read_errors, "exit_code": result.exit_code,
                  "blind_spots": result.blind_spots, "units": sorted(snapshot.units),
                  "files": sorted(snapshot.files), "check_failed": [f.summary for f in findings if f.id == "check-failed"]}))
"""


def collect_without_privileges(tree: Tree) -> dict:
    """Collect the tree in a subprocess that file modes apply to.

    As root, the subprocess runs with an empty capability bounding set
    (setpriv), so it lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH and mode
    000 denies even the owner. As another user the modes apply anyway.
    """
    prefix: list[str] = []
    if os.geteuid() == 0:
        from tests.support import tools

        prefix = [tools.require("setpriv", "util-linux"), "--bounding-set=-all", "--inh-caps=-all", "--"]
    completed = subprocess.run(prefix + [sys.executable, "-c", COLLECT_SCRIPT, str(tree.units)], capture_output=True,
                               text=True, timeout=120, cwd=str(REPOSITORY), env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_unreadable_paths_are_counted(tree):
    second = tree.units / "blueprint-second.service"
    second.write_text(tree.unit_text())
    second.chmod(0)
    (tree.cache_root / "svc-1-2").mkdir()
    tree.settings.chmod(0)
    tree.dropin_dir.chmod(0)
    (tree.cache_root / "svc-1-2").chmod(0)
    try:
        result = collect_without_privileges(tree)
    finally:
        for path in (tree.dropin_dir, tree.cache_root / "svc-1-2"):
            path.chmod(0o755)
    print(result)
    assert result["check_failed"] == []
    assert "bpm-manager.service" in result["units"]
    assert "blueprint-second.service" not in result["units"]
    assert result["read_errors"].get("permission-denied:unit-file", 0) >= 2
    assert result["read_errors"].get("permission-denied:settings", 0) == 1
    assert result["read_errors"].get("permission-denied:path", 0) >= 1
    assert str(tree.settings) not in result["files"]
    assert result["blind_spots"], "unreadable unit files and settings must make the scan incomplete"
    assert result["exit_code"] in (2, 3)


# --- bytes that are not UTF-8 -------------------------------------------------------------


def test_non_utf8_names_and_content_render_everywhere(tree):
    units = os.fsencode(tree.units)
    odd_unit = units + b"/bpm-\xff\xfe.service"
    odd_settings = os.fsencode(tree.work) + b"/settings-\xff.env"
    with open(odd_settings, "wb") as stream:
        stream.write(b"BLUEPRINT_ID=1\nNOTE=caf\xe9 \xff\xfe\n")
    unit = tree.unit_text(settings=Path(os.fsdecode(odd_settings))).encode("utf-8", "surrogateescape")
    with open(odd_unit, "wb") as stream:
        stream.write(unit.replace(b"Description=Blueprint Manager", b"Description=caf\xe9 \x80 manager"))
    with open(os.fsencode(tree.dropin_dir) + b"/20-\xfe.conf", "wb") as stream:
        stream.write(b"[Service]\nEnvironment=LABEL=\xff\xfe\n")
    snapshot, _seconds = collect_bounded(tree)
    assert os.fsdecode(odd_unit).rsplit("/", 1)[1] in snapshot.units

    outputs = all_outputs(snapshot)
    assert [f.summary for f in outputs.pop("findings") if f.id == "check-failed"] == []
    for name, output in outputs.items():
        data = output if isinstance(output, bytes) else output.encode("utf-8")
        assert data, name
    assert "\\xff" in outputs["json"] or "\\\\xff" in outputs["json"]
    json.loads(outputs["json"])

    saved = tree.root / "odd.hostsnap"
    snapshot_module.save(snapshot, str(saved))
    reloaded = snapshot_module.load(saved)
    assert set(reloaded.units) == set(snapshot.units)
    for name, output in all_outputs(reloaded).items():
        if name != "findings":
            (output if isinstance(output, bytes) else output.encode("utf-8"))


# --- configuration mistakes ---------------------------------------------------------------

CONFIG_MISTAKES = {
    "toml syntax": "role = \n",
    "unterminated string": 'role = "operator-host\n',
    "duplicate key": 'role = "operator-host"\nrole = "remote-target"\n',
    "unknown key": 'rol = "operator-host"\n',
    "bad role": 'role = "laptop"\n',
    "binaries not a list": 'instance_binaries = "quill"\n',
    "binary with slash": 'instance_binaries = ["/opt/quill"]\n',
    "empty binary": 'instance_binaries = [""]\n',
    "bad address": 'operator_address = "0x12"\n',
    "address not a string": "operator_address = 12\n",
    "max_services zero": "max_services = 0\n",
    "max_services bool": "max_services = true\n",
    "max_services float": "max_services = 2.5\n",
    "allow not a list": 'allow = "x"\n',
    "allow entry not a table": 'allow = ["x"]\n',
    "allow both": '[[allow]]\nunit = "a.service"\nbinary = "b"\nreason = "r"\n',
    "allow neither": '[[allow]]\nreason = "r"\n',
    "allow no reason": '[[allow]]\nunit = "a.service"\n',
    "allow blank reason": '[[allow]]\nunit = "a.service"\nreason = "  "\n',
    "allow unknown key": '[[allow]]\nunit = "a.service"\nreason = "r"\ncolour = "red"\n',
    "allow unit not string": '[[allow]]\nunit = 3\nreason = "r"\n',
    "severity not a table": 'severity = "info"\n',
    "severity unknown id": '[severity]\nno-such-finding = "info"\n',
    "severity bad value": '[severity]\nstale-socket = "loud"\n',
    "serve not a table": 'serve = 1\n',
    "serve unknown key": '[serve]\nport = 9\n',
    "listen no port": '[serve]\nlisten = "127.0.0.1"\n',
    "listen port too big": '[serve]\nlisten = "127.0.0.1:70000"\n',
    "listen not a string": "[serve]\nlisten = 9737\n",
    "interval too short": "[serve]\ninterval_seconds = 1\n",
    "interval bool": "[serve]\ninterval_seconds = true\n",
    "interval string": '[serve]\ninterval_seconds = "30"\n',
    "several mistakes": 'role = "laptop"\nmax_services = -1\n[serve]\ninterval_seconds = 0\n',
}
ERROR_LINE = re.compile(r"^bpm-doctor: (?P<path>\S+):(?P<line>\d+): \S.*$")


def run_cli(arguments: list[str], capsys) -> tuple[int, list[str], str]:
    status = cli.main(arguments)
    captured = capsys.readouterr()
    return status, captured.err.splitlines(), captured.out


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith(".bpm-doctor-"))


@pytest.mark.parametrize("mistake", sorted(CONFIG_MISTAKES))
def test_config_mistake_is_one_line_per_error(mistake, tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG_MISTAKES[mistake])
    report_path, metrics_path = tmp_path / "out" / "report.txt", tmp_path / "out" / "metrics.prom"
    report_path.parent.mkdir()
    status, errors, output = run_cli(["--config", str(config), "check", "--snapshot", str(EXAMPLE_SNAPSHOT),
                                      "--output", str(report_path), "--textfile", str(metrics_path)], capsys)
    assert status == 3
    assert output == ""
    assert errors
    for line in errors:
        match = ERROR_LINE.match(line)
        assert match, line
        assert match["path"] == str(config)
        assert 1 <= int(match["line"]) <= CONFIG_MISTAKES[mistake].count("\n") + 1
    assert list(report_path.parent.iterdir()) == []


def test_several_mistakes_all_reported(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG_MISTAKES["several mistakes"])
    _status, errors, _output = run_cli(["--config", str(config), "check", "--snapshot", str(EXAMPLE_SNAPSHOT)], capsys)
    assert [ERROR_LINE.match(line)["line"] for line in errors] == ["1", "2", "4"]


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo", "oversized", "binary"])
def test_unreadable_config_file(kind, tmp_path, capsys):
    config = tmp_path / "config.toml"
    if kind == "directory":
        config.mkdir()
    elif kind == "fifo":
        os.mkfifo(config)
    elif kind == "oversized":
        sparse(config, b"# comment\n", 2 * 1024 * 1024)
    elif kind == "binary":
        config.write_bytes(b"role = \"operator-host\"\n\xff\xfe\x00\x00garbage = \x80\n")
    outcome: dict = {}

    def run():
        outcome["result"] = run_cli(["--config", str(config), "check", "--snapshot", str(EXAMPLE_SNAPSHOT)], capsys)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(config, os.O_RDWR | os.O_NONBLOCK))  # release a reader blocked on the FIFO
        thread.join(5)
        pytest.fail("bpm-doctor blocked on reading its configuration for more than 10 s")
    status, errors, output = outcome["result"]
    assert status == 3
    assert output == ""
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"bpm-doctor: {config}")


# --- outputs that cannot be written ------------------------------------------------------


def unwritable_targets(tmp_path: Path) -> dict[str, Path]:
    """Return targets that cannot be written, even by root: a missing directory, a file as parent, a directory."""
    (tmp_path / "plain-file").write_text("x")
    (tmp_path / "a-directory").mkdir()
    return {
        "missing directory": tmp_path / "no" / "such" / "report",
        "parent is a file": tmp_path / "plain-file" / "report",
        "target is a directory": tmp_path / "a-directory",
    }


@pytest.mark.parametrize("target", ["missing directory", "parent is a file", "target is a directory"])
@pytest.mark.parametrize("command", ["check --output", "check --textfile", "snapshot -o"])
def test_unwritable_output_is_one_line_and_leaves_nothing(command, target, tmp_path, capsys):
    path = unwritable_targets(tmp_path)[target]
    if command == "check --textfile":
        path = path.with_suffix(".prom") if target != "target is a directory" else path
        if target == "target is a directory":
            path = tmp_path / "a-directory.prom"
            path.mkdir()
        arguments = ["check", "--snapshot", str(EXAMPLE_SNAPSHOT), "--textfile", str(path)]
    elif command == "check --output":
        arguments = ["check", "--snapshot", str(EXAMPLE_SNAPSHOT), "--output", str(path)]
    else:
        arguments = ["snapshot", "-o", str(path)]
    before = sorted(p.name for p in tmp_path.iterdir())
    status, errors, _output = run_cli(["--config", os.devnull, *arguments], capsys)
    assert status == 3
    assert len(errors) == 1, errors
    assert errors[0].startswith("bpm-doctor: ")
    assert "internal error" not in errors[0]
    assert str(path) in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    for directory in (tmp_path, tmp_path / "a-directory"):
        assert leftovers(directory) == []


def test_unwritable_report_is_not_an_internal_error(tmp_path, capsys):
    path = unwritable_targets(tmp_path)["missing directory"]
    _status, errors, _output = run_cli(["--config", os.devnull, "check", "--snapshot", str(EXAMPLE_SNAPSHOT),
                                        "--output", str(path)], capsys)
    assert "internal error" not in errors[0]


@pytest.mark.parametrize("command", ["check --output", "check --textfile", "snapshot -o"])
def test_read_only_directory_output(command, tmp_path):
    """A directory without write permission, as root without CAP_DAC_OVERRIDE (setpriv) or as another user."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    if command == "check --output":
        arguments = ["check", "--snapshot", str(EXAMPLE_SNAPSHOT), "--output", str(directory / "report.txt")]
    elif command == "check --textfile":
        arguments = ["check", "--snapshot", str(EXAMPLE_SNAPSHOT), "--textfile", str(directory / "metrics.prom")]
    else:
        arguments = ["snapshot", "-o", str(directory / "host.hostsnap")]
    prefix: list[str] = []
    if os.geteuid() == 0:
        from tests.support import tools

        prefix = [tools.require("setpriv", "util-linux"), "--bounding-set=-all", "--inh-caps=-all", "--"]
    try:
        completed = subprocess.run(prefix + [sys.executable, "-m", "bpm_doctor", "--config", os.devnull, *arguments],
                                   capture_output=True, text=True, timeout=120, cwd=str(REPOSITORY))
    finally:
        directory.chmod(0o755)
    assert completed.returncode == 3, completed.stderr
    assert len(completed.stderr.splitlines()) == 1, completed.stderr
    assert "Permission denied" in completed.stderr
    assert list(directory.iterdir()) == []
