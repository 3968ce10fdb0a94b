"""Scan under process churn inside a private PID namespace and report what went wrong, as JSON.

Run as PID 1 of a new PID namespace (tests/support/pidns.py). Subcommands:

    scan     churn (tests/support/churn.py) in a child process while this
             process scans with collect_host + diagnose as fast as it can;
             every scan is checked against the churn log afterwards. With
             --events the cache is fed by kernel process events, which
             only work in the initial PID namespace, so then the probe
             runs there, without recycled pids
    reuse    force one pid to be reused at chosen points of a scan, through
             /proc/sys/kernel/ns_last_pid and a hook on the collector's os.open
    serve    churn while `bpm-doctor serve` scans; the test scrapes it from outside
    scanner  drive daemon.scanner.Scanner for many cycles under churn and
             record this process's VmRSS and open descriptors

Each prints one JSON object on stdout. `violations` lists scans that mixed
two processes, crashed, or produced a finding that only mixing could explain.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

from bpm_doctor import log
from bpm_doctor.collect import collect_host
from bpm_doctor.collect import processes as process_collector
from bpm_doctor.config import Config
from bpm_doctor.daemon import exec_events
from bpm_doctor.diagnose import diagnose
from bpm_doctor.model import Snapshot
from tests.support import churn
from tests.support.churn import CHURN_BLUEPRINT, INSTANCE_KINDS, MANAGER_KINDS, NS_LAST_PID

# Pids the churner recycles inside the namespace; above the few this probe itself uses.
RECYCLED_PIDS = (300, 1300)
MAX_VIOLATIONS = 30
# PF_EXITING in the flags field of /proc/PID/stat (include/linux/sched.h).
PF_EXITING = 0x00000004


def _start_churner(workdir: Path, seconds: float, stop_file: Path, seed: int, recycle: bool) -> subprocess.Popen:
    arguments = [sys.executable, "-m", "tests.support.churn", "--log", str(workdir / "churn.log"),
                 "--workdir", str(workdir / "churn"), "--binaries", str(workdir / "bin"),
                 "--seconds", str(seconds), "--stop-file", str(stop_file), "--seed", str(seed)]
    if recycle:
        arguments += ["--recycle-pids", f"{RECYCLED_PIDS[0]}:{RECYCLED_PIDS[1]}"]
    return subprocess.Popen(arguments, stdout=subprocess.PIPE, text=True)


def _finish_churner(churner: subprocess.Popen, stop_file: Path) -> dict:
    stop_file.touch()
    output, _ = churner.communicate(timeout=60)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": f"churner exited with {churner.returncode}"}


def _option(argv: list[str], name: str) -> str | None:
    for index, word in enumerate(argv):
        if word == name and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith(name + "="):
            return word[len(name) + 1:]
    return None


class ScanChecker:
    """Check stored scans against the churn log once the churner has ended."""

    def __init__(self, binaries_dir: str, entries: list[dict]):
        self.binaries_dir = binaries_dir.rstrip("/") + "/"
        self.by_pid: dict[int, list[dict]] = defaultdict(list)
        self.fork_copies_seen = 0
        self.managed_services: set[int] = set()
        self.managed_data_dirs: set[str] = set()
        for entry in entries:
            self.by_pid[entry["pid"]].append(entry)
            if entry["kind"] == "managed":
                self.managed_services.add(entry["service"])
                self.managed_data_dirs.add(entry["data_dir"])

    def _entry(self, pid: int, kinds: tuple[str, ...], **match) -> dict | None:
        for entry in self.by_pid.get(pid, []):
            if entry["kind"] in kinds and all(entry.get(key) == value for key, value in match.items()):
                return entry
        return None

    def _ours(self, process) -> bool:
        argv0 = process.argv[0] if process.argv else ""
        return argv0.startswith(self.binaries_dir) or (process.exe or "").startswith(self.binaries_dir)

    def check(self, number: int, snapshot, findings, view) -> list[str]:
        problems: list[str] = []
        fork_copies = set()
        for pid, process in snapshot.processes.items():
            if not self._ours(process):
                continue
            parent = snapshot.processes.get(process.ppid)
            if parent is not None and parent.argv == process.argv and parent.exe == process.exe:
                # Forked and not yet exec'd: a copy of its parent, checked as the parent.
                fork_copies.add(pid)
                self.fork_copies_seen += 1
                continue
            problems += [f"scan {number} pid {pid}: {text}" for text in self._check_process(pid, process, snapshot)]
        for finding in findings:
            pids = finding.field_values("pid")
            if finding.id == "check-failed":
                problems.append(f"scan {number}: check-failed: {finding.summary}")
            if finding.id in ("multiple-managers", "duplicate-service") and fork_copies & set(pids):
                problems.append(f"scan {number}: {finding.id} names pids {sorted(fork_copies & set(pids))}, "
                                "which are forks of their parent that have not run exec yet")
            if finding.blueprint_id != CHURN_BLUEPRINT:
                continue
            if finding.id == "duplicate-service":
                problems.append(f"scan {number}: duplicate-service for service {finding.service_id}, pids {pids}")
            elif finding.id == "orphan-instance":
                for pid in pids:
                    if not (self._entry(pid, ("orphan",), service=finding.service_id)
                            or finding.service_id in self.managed_services):
                        problems.append(f"scan {number}: orphan-instance pid {pid} service {finding.service_id} "
                                        "matches no orphan-looking process started at that pid")
            elif finding.id == "hand-run-instance":
                for pid in pids:
                    if not self._entry(pid, ("instance-flash", "instance-sleep", "instance"),
                                       service=finding.service_id):
                        problems.append(f"scan {number}: hand-run-instance pid {pid} service {finding.service_id} "
                                        "matches no instance started at that pid")
        for pid, info in view.instances.items():
            if info.managed and info.blueprint_id == CHURN_BLUEPRINT:
                manager = snapshot.processes.get(info.manager_pid)
                data_dir = _option(manager.argv, "--data-dir") if manager else None
                if not self._entry(info.manager_pid, ("managed",), data_dir=data_dir, service=info.service_id):
                    problems.append(f"scan {number}: instance pid {pid} service {info.service_id} counted as "
                                    f"managed by pid {info.manager_pid}, which did not start that service")
        return problems

    def _check_process(self, pid: int, process, snapshot) -> list[str]:
        problems = []
        argv0 = process.argv[0] if process.argv else None
        if process.exe and argv0 and process.exe != argv0:
            problems.append(f"exe {process.exe} but argv[0] {argv0}")
        tag = _option(process.argv, "--churn-tag")
        data_dir = _option(process.argv, "--data-dir")
        service = process.env.get("SERVICE_ID")
        if tag is not None:
            if service is not None and service != tag:
                problems.append(f"argv tag {tag} but SERVICE_ID={service}")
            if not self._entry(pid, INSTANCE_KINDS, service=int(tag)):
                problems.append(f"argv tag {tag} was never started at this pid")
        elif data_dir is not None:
            env_data_dir = process.env.get("DATA_DIR")
            if env_data_dir is not None and env_data_dir != data_dir:
                problems.append(f"argv --data-dir {data_dir} but DATA_DIR={env_data_dir}")
            # A fork copy of a `managed` manager whose parent died before its exec has another pid.
            if not self._entry(pid, MANAGER_KINDS, data_dir=data_dir) and data_dir not in self.managed_data_dirs:
                problems.append(f"argv --data-dir {data_dir} was never started at this pid")
        elif service is not None and service.isdigit() and int(service) not in self.managed_services:
            problems.append(f"instance spawned by a manager with SERVICE_ID={service}, which no manager served")
        return problems


def _summary_of_findings(findings) -> list:
    return [finding for finding in findings
            if finding.id in ("check-failed", "multiple-managers")
            or (finding.blueprint_id == CHURN_BLUEPRINT
                and finding.id in ("duplicate-service", "orphan-instance", "hand-run-instance"))]


class StalenessCheck:
    """Check that an event-fed scan reflects every exec and reparenting that happened before it.

    After each scan, the current stat of every cached process is compared
    with its cache entry: a process whose exec mark or parent differs has
    changed since it was read. The next scan comes after that change, so it
    must have read the process again. An entry that still shows the old
    exec mark or parent is stale.
    """

    def __init__(self, cache: process_collector.ProcessCache):
        self.cache = cache
        self.pending: dict[int, tuple] = {}
        self.changes_seen = 0

    def after_scan(self, number: int) -> list[str]:
        problems = []
        entries = self.cache._entries
        for pid, (start_ticks, exec_mark, ppid, seen) in self.pending.items():
            entry = entries.get(pid)
            if entry is None or entry.start_ticks != start_ticks:
                continue  # exited, or the pid was reused: a new entry either way
            if entry.exec_mark == exec_mark:
                problems.append(f"scan {number} pid {pid}: the cache entry still shows the exec mark "
                                f"{exec_mark}, which had changed to {seen} before this scan")
            if entry.ppid == ppid:
                problems.append(f"scan {number} pid {pid}: the cache entry still shows parent {ppid}, "
                                "which had changed before this scan")
        self.pending = {}
        for pid, entry in entries.items():
            if entry.skipped:
                continue  # kernel threads and zombies are not reported, and a kworker renames itself at will
            stat = process_collector.read_stat(pid)
            if stat is None or stat.start_ticks != entry.start_ticks:
                continue
            if stat.flags & PF_EXITING:
                # do_exit drops the memory map, which zeroes the addresses of
                # the exec mark, well before it sends the exit event. That
                # event, not an exec, makes a later scan drop the process.
                continue
            if stat.exec_mark != entry.exec_mark or stat.ppid != entry.ppid:
                self.pending[pid] = (entry.start_ticks, entry.exec_mark if stat.exec_mark != entry.exec_mark
                                     else None, entry.ppid if stat.ppid != entry.ppid else None, stat)
                self.changes_seen += 1
        return problems


def command_scan(args) -> dict:
    workdir = Path(args.workdir)
    churn.prepare_binaries(workdir / "bin")
    stop_file = workdir / "stop"
    churner = _start_churner(workdir, args.seconds, stop_file, args.seed, recycle=not args.events)
    config = Config()
    # With --incremental, scans share a ProcessCache as the daemon's do, so a
    # reused pid must also never be served from the previous process's entry.
    cache = process_collector.ProcessCache() if args.incremental or args.events else None
    watcher = None
    staleness = None
    if args.events:
        watcher = exec_events.ExecWatcher(exec_events.open_listener(), trigger=lambda: None)
        cache.change_feed = watcher
        staleness = StalenessCheck(cache)
    stored = []
    errors: list[str] = []
    durations: list[float] = []
    vanished = 0
    unread = 0
    deadline = time.monotonic() + args.seconds

    while time.monotonic() < deadline and churner.poll() is None:
        started = time.monotonic()
        try:
            snapshot = collect_host(config, process_cache=cache)
            findings, view = diagnose(snapshot, config)
        except Exception:  # noqa: BLE001 - the probe reports any exception as a violation
            errors.append(traceback.format_exc(limit=8))
            continue
        durations.append(time.monotonic() - started)
        vanished += snapshot.read_errors.get("vanished", 0)
        stored.append((snapshot, _summary_of_findings(findings), view, len(snapshot.processes)))
        if staleness is not None:
            unread += cache.unread
            errors += staleness.after_scan(len(stored))
    stats = _finish_churner(churner, stop_file)
    if watcher is not None:
        watcher.stop()

    checker = ScanChecker(str(workdir / "bin"), churn.read_log(workdir / "churn.log"))
    violations = [f"exception: {text}" for text in errors]
    processes_seen = 0
    for number, (snapshot, findings, view, count) in enumerate(stored, start=1):
        processes_seen += count
        violations += checker.check(number, snapshot, findings, view)
    durations.sort()
    return {
        "incremental": args.incremental,
        "events": {
            "unread_total": unread, "changes_checked": staleness.changes_seen,
            "distrusted": watcher.changes.distrusted, "lost_event_bursts": watcher.lost_event_bursts,
        } if watcher is not None else None,
        "cached_reads_last_scan": cache.cached_reads if cache is not None else 0,
        "scans": len(stored), "exceptions": len(errors), "violations": violations[:MAX_VIOLATIONS],
        "violation_count": len(violations), "churn": stats, "vanished_reads": vanished,
        "processes_in_snapshots": processes_seen, "fork_copies_seen": checker.fork_copies_seen,
        "scan_seconds_median": durations[len(durations) // 2] if durations else None,
        "scan_seconds_max": durations[-1] if durations else None,
    }


# --- forced pid reuse ----------------------------------------------------------


def _spawn(path: str, argv: list[str], env: dict[str, str]) -> int:
    null = os.devnull
    actions = [(os.POSIX_SPAWN_OPEN, 0, null, os.O_RDONLY, 0), (os.POSIX_SPAWN_OPEN, 1, null, os.O_WRONLY, 0),
               (os.POSIX_SPAWN_OPEN, 2, null, os.O_WRONLY, 0)]
    return os.posix_spawn(path, argv, env, file_actions=actions)


def _spawn_at(pid: int, path: str, argv: list[str], env: dict[str, str]) -> int:
    """Spawn with the namespace's pid counter set so that the child gets `pid`; returns the pid it got."""
    with open(NS_LAST_PID, "w") as stream:
        stream.write(str(pid - 1))
    return _spawn(path, argv, env)


def _instance_command(binaries: churn.ChurnBinaries, service: int, orphan: bool) -> tuple[str, list[str], dict]:
    binary = str(binaries.standins.instance)
    env = {"PATH": "/usr/bin:/bin", "BLUEPRINT_ID": str(CHURN_BLUEPRINT), "SERVICE_ID": str(service),
           "TEST_MODE": "true"}
    if orphan:
        env["BRIDGE_SOCKET_PATH"] = f"/nonexistent/svc-{CHURN_BLUEPRINT}-{service}/svc-{CHURN_BLUEPRINT}-{service}.sock"
    return binary, [binary, "run", f"--churn-tag={service}"], env


def _manager_command(binaries: churn.ChurnBinaries, workdir: Path, tag: str) -> tuple[str, list[str], dict]:
    binary = str(binaries.standins.manager)
    settings = workdir / "settings.env"
    settings.write_text(f"BLUEPRINT_ID={CHURN_BLUEPRINT}\n" + "".join(
        f"{name}={value}\n" for name, value in churn.CONTRACTS.items())
        + f"STANDIN_INSTANCE_BINARY={binaries.standins.instance}\nSTANDIN_SERVICES=\n")
    home = workdir / tag
    data_dir = str(home / "data")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run"), "DATA_DIR": data_dir}
    return binary, [binary, "blueprint", "run", "--data-dir", data_dir, "--settings-file", str(settings)], env


def _reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


class _OpenHook:
    """Stands in for the `os` module inside bpm_doctor.collect.processes and runs a callback
    just before that module opens one chosen /proc file.

    Only `os.open` is intercepted, so the hook does not depend on the names
    of the collector's functions, only on its reading /proc with os.open.
    """

    def __init__(self, real_os, path: str, callback):
        self._os = real_os
        self._path = path
        self._callback = callback

    def open(self, path, *arguments, **keywords):
        if path == self._path:
            self._callback()
        return self._os.open(path, *arguments, **keywords)

    def __getattr__(self, name):
        return getattr(self._os, name)


def _start_ticks(pid: int) -> int | None:
    """Return field 22 of /proc/PID/stat, the start time in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2:].split()[19])


def _scenario(name: str, swap_before: str, age_seconds: float, binaries, workdir: Path,
              processes_only: bool = False) -> dict:
    """Replace an orphan-looking instance by a manager at the same pid during one scan.

    The swap happens just before the collector opens /proc/PID/`swap_before`
    of that pid for the first time: "cmdline" (after its stat line was read)
    or "environ" (after its argv and exe were read). `age_seconds` is how
    long the first process lives before the scan starts. With
    `processes_only`, only collect_processes runs, so the swap comes within
    a millisecond or two of the first process's start, often in the same clock tick.
    """
    victim_service, target = 41, 700
    path, argv, env = _instance_command(binaries, victim_service, orphan=True)
    victim = _spawn_at(target, path, argv, env)
    time.sleep(age_seconds)
    state = {"replacement": None, "swapped": False}

    def swap():
        if state["swapped"]:
            return
        state["swapped"] = True
        state["victim_ticks"] = _start_ticks(victim)
        _reap(victim)
        manager_path, manager_argv, manager_env = _manager_command(binaries, workdir, f"reuse-{name}")
        state["replacement"] = _spawn_at(victim, manager_path, manager_argv, manager_env)
        state["replacement_ticks"] = _start_ticks(state["replacement"])
        if not processes_only:
            time.sleep(0.05)  # let the stand-in manager exec and parse its options

    real_os = process_collector.os
    process_collector.os = _OpenHook(real_os, f"/proc/{victim}/{swap_before}", swap)
    try:
        if processes_only:
            snapshot = Snapshot()
            process_collector.collect_processes(snapshot)
        else:
            snapshot = collect_host(Config())
    finally:
        process_collector.os = real_os
    findings, view = diagnose(snapshot, Config())
    replacement = state["replacement"]
    seen = snapshot.processes.get(victim)
    result = {
        "scenario": name, "victim": victim, "replacement": replacement, "swapped": state["swapped"],
        "reused": replacement == victim, "victim_age_seconds": age_seconds,
        "same_tick": state.get("victim_ticks") is not None
        and state.get("victim_ticks") == state.get("replacement_ticks"),
        "seen_argv": seen.argv if seen else None, "seen_env": seen.env if seen else None,
        "seen_exe": seen.exe if seen else None,
        "vanished": snapshot.read_errors.get("vanished", 0),
        "victim_findings": sorted({f.id for f in findings if f.service_id == victim_service}),
        "check_failed": [f.summary for f in findings if f.id == "check-failed"],
        "manager_pids": list(view.managers),
        "instance_pids": sorted(view.instances),
    }
    if replacement is not None:
        _reap(replacement)
    return result


SAME_TICK_ATTEMPTS = 30


def _outcome(result: dict) -> str:
    """Name what a scan kept at the reused pid: nothing, one of the two processes, or a mix of both.

    "mixed" means argv of one process with the environment of the other. A
    read during the replacement's execve, before the kernel set its new argv
    and environment, leaves either empty; such a read counts for the process
    the other part names ("empty" when both are empty).
    """
    argv, env = result["seen_argv"], result["seen_env"] or {}
    if argv is None:
        return "dropped"
    victim_argv = any(word.startswith("--churn-tag=") for word in argv)
    replacement_argv = "blueprint" in argv
    victim_env = "SERVICE_ID" in env
    replacement_env = "DATA_DIR" in env
    if (victim_argv and replacement_env) or (replacement_argv and victim_env):
        return "mixed"
    if victim_argv or victim_env:
        return "victim"
    if replacement_argv or replacement_env:
        return "replacement"
    return "empty"


def command_reuse(args) -> dict:
    workdir = Path(args.workdir)
    binaries = churn.prepare_binaries(workdir / "bin")
    scenarios = [
        _scenario("swap-after-stat", "cmdline", 0.2, binaries, workdir),
        _scenario("swap-before-environ", "environ", 0.2, binaries, workdir),
    ]
    # The kernel stamps start times in clock ticks (10 ms at CONFIG_HZ=100), so
    # a start-time comparison alone cannot tell these two processes apart.
    outcomes = {"dropped": 0, "empty": 0, "replacement": 0, "victim": 0, "mixed": 0}
    same_tick = 0
    mixed_examples = []
    for _attempt in range(SAME_TICK_ATTEMPTS):
        result = _scenario("swap-before-environ-same-tick", "environ", 0.0, binaries, workdir, processes_only=True)
        same_tick += result["same_tick"]
        outcome = _outcome(result)
        outcomes[outcome] += 1
        if outcome == "mixed" and len(mixed_examples) < 3:
            mixed_examples.append(result)
    scenarios.append({"scenario": "swap-before-environ-same-tick", "attempts": SAME_TICK_ATTEMPTS,
                      "same_tick": same_tick, "outcomes": outcomes, "mixed_examples": mixed_examples})
    return {"scenarios": scenarios}


# --- the daemon and the Scanner under churn ------------------------------------------


def command_serve(args) -> dict:
    workdir = Path(args.workdir)
    churn.prepare_binaries(workdir / "bin")
    stop_file = workdir / "stop"
    churner = _start_churner(workdir, args.seconds + 60, stop_file, args.seed, recycle=True)
    with open(args.daemon_stderr, "w") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "bpm_doctor", "-v", "--config", "/dev/null", "serve", "--listen",
             f"127.0.0.1:{args.port}", "--interval", "5"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            env={key: value for key, value in os.environ.items() if key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")},
        )
        print(json.dumps({"daemon_pid_in_namespace": daemon.pid}), flush=True)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and daemon.poll() is None and not Path(args.stop_file).exists():
            time.sleep(0.1)
        daemon.send_signal(signal.SIGTERM)
        try:
            status = daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            status = daemon.wait()
    stats = _finish_churner(churner, stop_file)
    return {"daemon_status": status, "churn": stats}


def _vm_rss_kib() -> int:
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line in /proc/self/status")


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def command_scanner(args) -> dict:
    from bpm_doctor.daemon.scanner import Scanner

    workdir = Path(args.workdir)
    churn.prepare_binaries(workdir / "bin")
    stop_file = workdir / "stop"
    churner = _start_churner(workdir, 24 * 3600, stop_file, args.seed, recycle=True)
    scanner = Scanner(Config(), 5.0)
    samples = []
    durations = []
    # Samples come every 5 % of the cycles or of the time limit, whichever is reached first.
    warmup = min(max(1, args.cycles // 10), 200)
    sample_every = max(1, args.cycles // 20)
    sample_seconds = args.max_seconds / 20
    started = time.monotonic()
    next_sample = started + sample_seconds
    cycles = 0
    try:
        while cycles < args.cycles and time.monotonic() - started < args.max_seconds:
            before = time.monotonic()
            scanner.scan()
            durations.append(time.monotonic() - before)
            cycles += 1
            if cycles == warmup or cycles % sample_every == 0 or time.monotonic() >= next_sample:
                gc.collect()
                samples.append({"cycle": cycles, "seconds": round(time.monotonic() - started, 1),
                                "rss_kib": _vm_rss_kib(), "fds": _open_descriptors()})
                next_sample = time.monotonic() + sample_seconds
    finally:
        stats = _finish_churner(churner, stop_file)
    gc.collect()
    samples.append({"cycle": cycles, "seconds": round(time.monotonic() - started, 1), "rss_kib": _vm_rss_kib(),
                    "fds": _open_descriptors()})
    state = scanner.state
    durations.sort()
    return {
        "cycles": cycles, "warmup_cycles": warmup, "samples": samples, "churn": stats,
        "seconds": time.monotonic() - started,
        "scans_total": state.scans_total, "scan_failures_total": state.scan_failures_total,
        "check_failures_total": state.check_failures_total,
        "scan_seconds_median": durations[len(durations) // 2] if durations else None,
        "scan_seconds_p99": durations[int(len(durations) * 0.99)] if durations else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scan = commands.add_parser("scan")
    reuse = commands.add_parser("reuse")
    serve = commands.add_parser("serve")
    scanner = commands.add_parser("scanner")
    for sub in (scan, reuse, serve, scanner):
        sub.add_argument("--workdir", required=True)
        sub.add_argument("--seed", type=int, default=0)
    scan.add_argument("--seconds", type=float, default=10.0)
    scan.add_argument("--incremental", action="store_true", help="share one ProcessCache between scans")
    scan.add_argument("--events", action="store_true",
                      help="feed the cache with kernel process events; run in the initial PID namespace")
    serve.add_argument("--seconds", type=float, default=20.0)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--daemon-stderr", required=True)
    serve.add_argument("--stop-file", required=True)
    scanner.add_argument("--cycles", type=int, default=2000)
    scanner.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    if os.getpid() != 1 and not getattr(args, "events", False):
        parser.error("run this as PID 1 of a private PID namespace (tests/support/pidns.py)")
    # Findings appear and clear with every churned process; keep the log quiet.
    log.configure(0, stream=open(os.devnull, "w"))
    handler = {"scan": command_scan, "reuse": command_reuse, "serve": command_serve, "scanner": command_scanner}
    print(json.dumps(handler[args.command](args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
