#!/usr/bin/env python3
"""Measure bpm-doctor's process scans against a plain /proc loop and two exporters, on this machine.

Usage, from the repository root with the package importable:

    python bench/scan_bench.py                      # 2,000, 5,000 and 10,000 sleepers
    python bench/scan_bench.py --counts 200 --soak-seconds 5 --trials 3

The script starts N `sleep` processes and, in one run, prints Markdown
tables of medians and ratios:

1. scan cost per process count: a cold process scan (`collect_processes`
   with an empty cache), a warm one (the cache of the previous scan), the
   floor (a plain Python loop reading /proc/PID/{stat,cmdline,cgroup}), the
   daemon's whole warm scan (collect_host with the process and unit file
   caches the daemon keeps, plus diagnose), both warm scans again with
   the cache fed by process events when the proc connector can be
   subscribed (as root), and the scrape
   latency of prometheus-process-exporter (every process tracked, without
   threads and smaps) and prometheus-node-exporter (processes collector
   only) when their Debian packages are installed;
2. `bpm-doctor serve` at a 15 s interval over 2,000 sleepers: its CPU share
   of one core and peak RSS (VmHWM) over `--soak-seconds`, with and without
   exec events;
3. the delay from a hand-run exec (`env BLUEPRINT_ID=... sleep`) to the
   `bpm_doctor_findings{id="hand-run-instance"}` series changing, p50 and
   p95 over `--trials`, with exec events (60 s interval) and without them
   (5 s interval, the minimum).

Limits and clean-up: every process the script starts is recorded by pid
and killed by pid at the end, on SIGTERM and on SIGINT. The sleepers also
end on their own after `--max-seconds` plus a minute. The run stops adding
work when `--max-seconds` is reached. The script raises RLIMIT_NPROC to its
hard limit and reports when kernel.pid_max, kernel.threads-max, a pids
cgroup limit or the available memory caps the counts. The exporters listen
on 127.0.0.1 only, on ports picked by the kernel.

The figures are one machine's: compare ratios from the same run, not
absolute times across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from bpm_doctor.collect import collect_host  # noqa: E402
from bpm_doctor.collect.processes import ProcessCache, collect_processes  # noqa: E402
from bpm_doctor.collect.units import UnitFileCache  # noqa: E402
from bpm_doctor.config import Config  # noqa: E402
from bpm_doctor.daemon import exec_events  # noqa: E402
from bpm_doctor.diagnose import diagnose  # noqa: E402
from bpm_doctor.model import Snapshot  # noqa: E402

PROCESS_EXPORTER = "/usr/bin/prometheus-process-exporter"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
SLEEP = "/bin/sleep"
# Estimated private memory of one idle `sleep`, to keep the counts within the available memory.
SLEEPER_BYTES_ESTIMATE = 512 * 1024
PROCESS_EXPORTER_CONFIG = """process_names:
  - name: "{{.Comm}}"
    cmdline:
    - '.+'
"""
INSTANCE_ENVIRONMENT = ("BLUEPRINT_ID=9321", "SERVICE_ID=1", "TEST_MODE=true")


class Deadline:
    """The run's time budget; phases check it before they start more work."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0


class Started:
    """Every process this script started, killed by pid in `stop_all`."""

    def __init__(self):
        self.sleepers: list[int] = []
        self.others: list[subprocess.Popen] = []

    def spawn_sleepers(self, count: int, seconds: int) -> None:
        environment = {"PATH": "/usr/bin:/bin"}
        for _ in range(count):
            self.sleepers.append(os.posix_spawn(SLEEP, ["sleep", str(seconds)], environment))

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs)
        self.others.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.others:
            self.others.remove(process)

    def stop_all(self) -> None:
        for process in list(self.others):
            self.stop(process)
        # The sleepers are unreaped children, so their pids cannot have been reused.
        for pid in self.sleepers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.sleepers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.sleepers.clear()


# Limits and machine facts


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def allowed_count(wanted: int) -> tuple[int, list[str]]:
    """Raise RLIMIT_NPROC and return how many sleepers fit, with a note for each limit that caps it."""
    notes = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NPROC, (hard, hard))
        notes.append(f"raised RLIMIT_NPROC from {soft} to {hard}")
    soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
    headroom = 500  # the host's own processes, the exporters and the daemon
    limits = []
    if soft != resource.RLIM_INFINITY and os.geteuid() != 0:
        limits.append(("RLIMIT_NPROC", soft))
    for name, path in (("kernel.pid_max", "/proc/sys/kernel/pid_max"),
                       ("kernel.threads-max", "/proc/sys/kernel/threads-max")):
        value = _read(path)
        if value and value.isdigit():
            limits.append((name, int(value)))
    pids_limit = _cgroup_pids_max()
    if pids_limit is not None:
        limits.append(("cgroup pids.max", pids_limit))
    available = _mem_available()
    if available is not None:
        limits.append(("MemAvailable / 512 KiB", available // SLEEPER_BYTES_ESTIMATE))
    allowed = wanted
    for name, value in limits:
        if value - headroom < allowed:
            allowed = max(0, value - headroom)
            notes.append(f"{name} = {value} caps the sleepers at {allowed}; raise it to run {wanted}")
    return allowed, notes


def _cgroup_pids_max() -> int | None:
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        candidates = []
        if "pids" in controllers.split(","):
            candidates.append(f"/sys/fs/cgroup/pids{path}/pids.max")
        if hierarchy == "0":
            candidates.append(f"/sys/fs/cgroup{path}/pids.max")
        for candidate in candidates:
            value = _read(candidate)
            if value and value.isdigit():
                return int(value)
    return None


def _mem_available() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def machine_facts() -> list[tuple[str, str]]:
    cpu = "unknown"
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = _read("/proc/meminfo") or ""
    total = next((line.split()[1] for line in memory.splitlines() if line.startswith("MemTotal:")), "0")
    facts = [
        ("CPU", cpu),
        ("cores (os.cpu_count)", str(os.cpu_count())),
        ("memory", f"{int(total) / 1024 / 1024:.1f} GiB"),
        ("kernel", platform.release()),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("load average at start", " ".join(f"{value:.2f}" for value in os.getloadavg())),
    ]
    for package in ("psutil", "prometheus-client", "structlog"):
        try:
            facts.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            facts.append((package, "not installed"))
    for name, path in (("process-exporter", PROCESS_EXPORTER), ("node_exporter", NODE_EXPORTER)):
        facts.append((name, _tool_version(path)))
    return facts


def _tool_version(path: str) -> str:
    if not os.path.exists(path):
        return "not installed"
    package = {PROCESS_EXPORTER: "prometheus-process-exporter", NODE_EXPORTER: "prometheus-node-exporter"}[path]
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True,
                            timeout=30)
    return f"{package} {result.stdout.strip()}" if result.returncode == 0 else path


# Scan variants


def floor_loop() -> int:
    """Read stat, cmdline and cgroup of every process with plain open(); returns the process count."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        count += 1
        for attribute in ("stat", "cmdline", "cgroup"):
            try:
                with open(f"/proc/{name}/{attribute}", "rb") as stream:
                    stream.read()
            except OSError:
                pass
    return count


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape_seconds(port: int) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        response.read()
    return time.perf_counter() - started


def wait_for_port(port: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def start_exporters(started: Started, workdir: Path) -> dict[str, int]:
    """Start the installed exporters on 127.0.0.1; returns {name: port}."""
    ports = {}
    if os.path.exists(PROCESS_EXPORTER):
        config = workdir / "process-exporter.yml"
        config.write_text(PROCESS_EXPORTER_CONFIG)
        port = free_port()
        started.popen([PROCESS_EXPORTER, "-web.listen-address", f"127.0.0.1:{port}", "-config.path", str(config),
                       "-threads=false", "-gather-smaps=false"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait_for_port(port):
            ports["process-exporter"] = port
    if os.path.exists(NODE_EXPORTER):
        port = free_port()
        started.popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                       "--collector.processes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait_for_port(port):
            ports["node_exporter"] = port
    return ports


def event_fed_cache() -> tuple[ProcessCache, exec_events.ExecWatcher] | None:
    """Return a process cache fed by its own proc connector subscription, as the daemon's; None without one.

    The watcher's thread is not started: each scan reads the queued events
    itself when it calls changed_since_last_scan.
    """
    try:
        sock = exec_events.open_listener()
    except exec_events.Unavailable:
        return None
    watcher = exec_events.ExecWatcher(sock, trigger=lambda: None)
    cache = ProcessCache()
    cache.change_feed = watcher
    return cache, watcher


def measure_count(rounds: int, exporters: dict[str, int]) -> dict[str, float]:
    """Run every variant `rounds` times, interleaved so that load changes hit all alike; returns medians.

    With the proc connector, the "events" variants are scans whose cache is
    fed by process events, as in the daemon when it may subscribe.
    """
    config = Config()
    cache = ProcessCache()
    host_cache = ProcessCache()
    unit_file_cache = UnitFileCache()
    fed = event_fed_cache()
    fed_host = event_fed_cache()
    watchers = [pair[1] for pair in (fed, fed_host) if pair is not None]

    def whole_warm_scan(process_cache: ProcessCache) -> None:
        snapshot = collect_host(config, process_cache=process_cache, unit_file_cache=unit_file_cache)
        diagnose(snapshot, config)

    variants = {
        "floor": floor_loop,
        "cold": lambda: collect_processes(Snapshot()),
        "warm": lambda: collect_processes(Snapshot(), cache=cache),
        "daemon scan (warm)": lambda: whole_warm_scan(host_cache),
    }
    if fed is not None and fed_host is not None:
        variants["warm (events)"] = lambda: collect_processes(Snapshot(), cache=fed[0])
        variants["daemon scan (warm, events)"] = lambda: whole_warm_scan(fed_host[0])
    try:
        # Two scans before timing: the first fills the caches, and the
        # event-fed ones need a second before the events vouch for anything.
        for name in ("warm", "daemon scan (warm)", "warm (events)", "daemon scan (warm, events)"):
            if name in variants:
                variants[name]()
                variants[name]()
        for port in exporters.values():
            scrape_seconds(port)  # the first scrape sets the exporter up
        samples = _interleaved_samples(rounds, variants, exporters)
    finally:
        for watcher in watchers:
            watcher.stop()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    medians["processes"] = float(len([name for name in os.listdir("/proc") if name.isdigit()]))
    return medians


def _interleaved_samples(rounds: int, variants: dict, exporters: dict[str, int]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in [*variants, *exporters]}
    for _ in range(rounds):
        for name, variant in variants.items():
            started = time.perf_counter()
            variant()
            samples[name].append(time.perf_counter() - started)
        for name, port in exporters.items():
            samples[name].append(scrape_seconds(port))
    return samples


# The daemon


class DaemonRun:
    """`bpm-doctor serve` on 127.0.0.1 with an empty configuration, its log in a file."""

    def __init__(self, started: Started, workdir: Path, interval: float, exec_events: bool):
        config = workdir / "empty.toml"
        config.write_text("")
        self.log = workdir / f"daemon-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "bpm_doctor", "--config", str(config), "serve",
                "--listen", "127.0.0.1:0", "--interval", f"{interval:g}"]
        if not exec_events:
            argv.append("--no-exec-events")
        self.started = started
        with open(self.log, "w") as stream:
            self.process = started.popen(argv, stdout=subprocess.DEVNULL, stderr=stream, cwd=str(REPOSITORY),
                                         env={**os.environ, "NOTIFY_SOCKET": ""})
        self.address = None
        self.exec_events = None

    def wait_started(self, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            for event in self.events():
                if event["event"] == "serve_started":
                    self.address = event["listen"]
                    self.exec_events = event.get("exec_events")
                    try:
                        urllib.request.urlopen(f"http://{self.address}/metrics", timeout=5).read()
                        return True
                    except OSError:
                        break
            time.sleep(0.1)
        return False

    def events(self) -> list[dict]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def cpu_seconds(self) -> float:
        data = Path(f"/proc/{self.process.pid}/stat").read_bytes()
        fields = data[data.rfind(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def hand_run_count(self) -> float:
        with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith('bpm_doctor_findings{id="hand-run-instance"'):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        self.started.stop(self.process)


def soak(started: Started, workdir: Path, seconds: float, interval: float, exec_events: bool) -> dict | None:
    daemon = DaemonRun(started, workdir, interval, exec_events)
    try:
        if not daemon.wait_started():
            return None
        cpu_before, wall_before = daemon.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        cpu_after, wall_after = daemon.cpu_seconds(), time.monotonic()
        return {
            "cpu_share": (cpu_after - cpu_before) / (wall_after - wall_before),
            "peak_rss": daemon.peak_rss_bytes(),
            "exec_events": daemon.exec_events,
        }
    finally:
        daemon.stop()


def exec_delays(started: Started, workdir: Path, trials: int, exec_events: bool, deadline: Deadline) -> dict | None:
    """Time hand-run exec → metric change; returns p50, p95 and counts, or None when the daemon did not start."""
    interval = 60.0 if exec_events else 5.0
    daemon = DaemonRun(started, workdir, interval, exec_events)
    delays: list[float] = []
    timeouts = 0
    try:
        if not daemon.wait_started():
            return None
        limit = 5.0 if exec_events else interval + 5.0
        for _ in range(trials):
            if deadline.passed():
                break
            before = daemon.hand_run_count()
            began = time.monotonic()
            instance = started.popen(["env", *INSTANCE_ENVIRONMENT, "sleep", "120"], start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            changed = None
            while time.monotonic() - began < limit:
                if daemon.hand_run_count() != before:
                    changed = time.monotonic() - began
                    break
                time.sleep(0.01)
            started.stop(instance)
            if changed is None:
                timeouts += 1
            else:
                delays.append(changed)
            # Let the finding clear and the exec rate limit pass before the next trial,
            # then wait a random part of the interval, so that the execs fall at random
            # points of the scan schedule instead of a fixed time after a scan.
            clear_by = time.monotonic() + limit
            while time.monotonic() < clear_by and daemon.hand_run_count() != before:
                time.sleep(0.05)
            time.sleep(1.1 + random.uniform(0.0, 1.0 if exec_events else interval))
    finally:
        daemon.stop()
    result = {"trials": len(delays) + timeouts, "timeouts": timeouts, "interval": interval,
              "exec_events": daemon.exec_events}
    if delays:
        ordered = sorted(delays)
        result["p50"] = statistics.median(ordered)
        result["p95"] = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        result["max"] = ordered[-1]
    return result


# Output


def milliseconds(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}"


def print_scan_table(results: dict[int, dict[str, float]], exporters: list[str]) -> None:
    scans = ["floor", "cold", "warm", "warm (events)", "daemon scan (warm)", "daemon scan (warm, events)"]
    columns = ["sleepers", "processes", *[f"{name} ms" for name in scans], *[f"{name} ms" for name in exporters],
               "cold / floor", "cold / warm", "cold / warm (events)", *[f"{name} / cold" for name in exporters]]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for count, medians in results.items():
        row = [f"{count:,}", f"{int(medians['processes']):,}",
               *[milliseconds(medians.get(name)) for name in [*scans, *exporters]],
               ratio(medians["cold"], medians["floor"]), ratio(medians["cold"], medians["warm"]),
               ratio(medians["cold"], medians.get("warm (events)")),
               *[ratio(medians.get(name), medians["cold"]) for name in exporters]]
        print("| " + " | ".join(row) + " |")


def exec_events_label(requested: bool, enabled: bool | None) -> str:
    """Name the exec-event setting of a row: on, off, or requested but unavailable on this host."""
    if enabled:
        return "on"
    if requested:
        return "requested, unavailable"
    return "off"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="2000,5000,10000",
                        help="comma-separated numbers of sleeper processes (default: 2000,5000,10000)")
    parser.add_argument("--rounds", type=int, default=7, help="runs of each variant per count (default: 7)")
    parser.add_argument("--soak-seconds", type=float, default=60.0,
                        help="seconds to watch the daemon's CPU and memory, per exec-event setting (default: 60)")
    parser.add_argument("--soak-interval", type=float, default=15.0, help="daemon interval in the soak (default: 15)")
    parser.add_argument("--soak-count", type=int, default=2000, help="sleepers during the soak (default: 2000)")
    parser.add_argument("--trials", type=int, default=20, help="hand-run execs per exec-delay setting (default: 20)")
    parser.add_argument("--no-exporters", action="store_true", help="do not start the exporters")
    parser.add_argument("--max-seconds", type=float, default=1800.0,
                        help="stop starting new work after this many seconds (default: 1800)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    counts = sorted(int(text) for text in arguments.counts.split(",") if text.strip())
    deadline = Deadline(arguments.max_seconds)
    started = Started()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, on_signal)
    sleeper_seconds = int(arguments.max_seconds) + 60
    try:
        with tempfile.TemporaryDirectory(prefix="scan-bench-") as directory:
            return _run(arguments, counts, deadline, started, Path(directory), sleeper_seconds)
    finally:
        started.stop_all()


def _run(arguments, counts: list[int], deadline: Deadline, started: Started, workdir: Path,
         sleeper_seconds: int) -> int:
    command = " ".join([Path(sys.executable).name, "bench/scan_bench.py", *(sys.argv[1:])])
    print(f"# scan_bench: {command}\n")
    print("| machine | |\n|---|---|")
    for name, value in machine_facts():
        print(f"| {name} | {value} |")
    print()
    allowed, notes = allowed_count(max(counts + [arguments.soak_count]))
    for note in notes:
        print(f"note: {note}")
    exporters = {} if arguments.no_exporters else start_exporters(started, workdir)
    missing = [name for name in ("process-exporter", "node_exporter") if name not in exporters]
    if missing and not arguments.no_exporters:
        print(f"note: not measured (not installed or did not start): {', '.join(missing)}")

    results: dict[int, dict[str, float]] = {}
    for count in counts:
        if count > allowed:
            print(f"note: skipped {count:,} sleepers: the limits above allow {allowed:,}")
            continue
        if deadline.passed():
            print(f"note: skipped {count:,} sleepers: --max-seconds reached")
            continue
        started.spawn_sleepers(count - len(started.sleepers), sleeper_seconds)
        time.sleep(1.0)
        results[count] = measure_count(arguments.rounds, exporters)
    for process in list(started.others):
        started.stop(process)  # the exporters are done
    print(f"\n## Process scan cost (median of {arguments.rounds} interleaved rounds)\n")
    print_scan_table(results, list(exporters))

    soak_count = min(arguments.soak_count, allowed)
    extra = soak_count - len(started.sleepers)
    if extra > 0:
        started.spawn_sleepers(extra, sleeper_seconds)
    elif extra < 0:
        surplus, started.sleepers = started.sleepers[soak_count:], started.sleepers[:soak_count]
        for pid in surplus:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    time.sleep(1.0)
    print(f"\n## Daemon over {arguments.soak_seconds:g} s at a {arguments.soak_interval:g} s interval "
          f"with {soak_count:,} sleepers\n")
    if arguments.soak_seconds < 2 * arguments.soak_interval:
        print(f"NOTE: a soak shorter than two intervals sees at most one interval scan after the first, "
              f"so its CPU share is mostly start-up and idle time.\n")
    print("| exec events | CPU share of one core | peak RSS (VmHWM) |\n|---|---|---|")
    for exec_events in (True, False):
        if deadline.passed():
            print(f"| {'on' if exec_events else 'off'} | skipped: --max-seconds reached | |")
            continue
        soaked = soak(started, workdir, arguments.soak_seconds, arguments.soak_interval, exec_events)
        if soaked is None:
            print(f"| {'on' if exec_events else 'off'} | the daemon did not start | |")
            continue
        label = exec_events_label(exec_events, soaked["exec_events"])
        print(f"| {label} | {soaked['cpu_share'] * 100:.2f} % | {soaked['peak_rss'] / 1024 / 1024:.1f} MiB |")

    print(f"\n## Hand-run exec to metric change ({arguments.trials} trials each)\n")
    print("| exec events | interval s | trials | p50 s | p95 s | max s | no change seen |\n|---|---|---|---|---|---|---|")
    for exec_events in (True, False):
        if deadline.passed():
            print(f"| {'on' if exec_events else 'off'} | skipped: --max-seconds reached | | | | | |")
            continue
        measured = exec_delays(started, workdir, arguments.trials, exec_events, deadline)
        if measured is None:
            print(f"| {'on' if exec_events else 'off'} | the daemon did not start | | | | | |")
            continue
        label = exec_events_label(exec_events, measured["exec_events"])
        print(f"| {label} | {measured['interval']:g} | {measured['trials']} | "
              f"{measured.get('p50', float('nan')):.3f} | {measured.get('p95', float('nan')):.3f} | "
              f"{measured.get('max', float('nan')):.3f} | {measured['timeouts']} |")
    print(f"\nload average at end: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
