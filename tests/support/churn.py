"""Start and end thousands of short-lived processes that look like managers and instances.

Race tests scan the host while this runs. Every process carries a tag that
appears both in its argv and in an environment variable bpm-doctor keeps,
so a scan that mixed two processes under one pid shows up as a mismatch:

    kind             binary                     argv tag                env tag         lifetime
    manager-flash    /bin/sleep as cargo-tangle --data-dir D            DATA_DIR=D      exits at once (sleep rejects "blueprint")
    manager          stand-in cargo-tangle      --data-dir D            DATA_DIR=D      until killed, no instance
    managed          stand-in cargo-tangle      --data-dir D            DATA_DIR=D      until killed; spawns one instance
    instance-flash   stand-in quill-operator    --churn-tag=S           SERVICE_ID=S    exits at once (no bridge)
    instance-sleep   /bin/sleep as quill-op...  --churn-tag=S           SERVICE_ID=S    exits at once
    instance         stand-in quill-operator    --churn-tag=S           SERVICE_ID=S    until killed, test mode
    orphan           stand-in quill-operator    --churn-tag=S           SERVICE_ID=S    until killed, with BRIDGE_SOCKET_PATH

Each spawn gets its own service id S, so no two processes of one run ever
serve the same (blueprint, service). The instance a `managed` manager spawns
serves the manager's S. Long-lived processes end by SIGKILL, SIGTERM or
SIGINT after a random lifetime of up to `max_lifetime_seconds`. Exited children
are reaped only every `reap_interval_seconds`, so they sit as zombies meanwhile.
The churner is a child subreaper: instances orphaned by a killed manager are
re-parented to it, and it kills and reaps them by pid.

With `recycle_pids`, meant only for a private PID namespace, the churner writes
/proc/sys/kernel/ns_last_pid so that new processes take pids from a small
range again and again, and pids are reused within milliseconds.

Run as `python -m tests.support.churn --log FILE --workdir DIR --binaries DIR
--seconds N`; it writes one JSON object per line to the log (spawns, exits,
adopted orphans) and a summary line to stdout when it ends.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.standins import StandinBinaries, compile_standins

CHURN_BLUEPRINT = 9913
KINDS = ("manager-flash", "manager", "managed", "instance-flash", "instance-sleep", "instance", "orphan")
INSTANCE_KINDS = ("instance-flash", "instance-sleep", "instance", "orphan")
MANAGER_KINDS = ("manager-flash", "manager", "managed")
LONG_LIVED = ("manager", "managed", "instance", "orphan")
DEFAULT_WEIGHTS = {
    "manager-flash": 2, "manager": 1, "managed": 1,
    "instance-flash": 3, "instance-sleep": 3, "instance": 2, "orphan": 2,
}
CONTRACTS = {
    "TANGLE_CONTRACT": "0x" + "1" * 40,
    "STAKING_CONTRACT": "0x" + "2" * 40,
    "STATUS_REGISTRY_CONTRACT": "0x" + "3" * 40,
}
_PR_SET_CHILD_SUBREAPER = 36
NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


@dataclass(frozen=True)
class ChurnBinaries:
    """The executables the churner starts: compiled stand-ins and copies of /bin/sleep."""

    standins: StandinBinaries
    sleep_manager: Path
    sleep_instance: Path


def prepare_binaries(directory: Path) -> ChurnBinaries:
    """Compile the stand-ins into `directory` and copy /bin/sleep under the manager and instance names."""
    standins = compile_standins(directory / "standins")
    flash = directory / "sleep"
    flash.mkdir(parents=True, exist_ok=True)
    sleep = shutil.which("sleep") or "/bin/sleep"
    sleep_manager = flash / "cargo-tangle"
    sleep_instance = flash / "quill-operator"
    shutil.copy2(sleep, sleep_manager)
    shutil.copy2(sleep, sleep_instance)
    return ChurnBinaries(standins, sleep_manager, sleep_instance)


def binaries_in(directory: Path) -> ChurnBinaries:
    """Return the ChurnBinaries that `prepare_binaries(directory)` made."""
    return ChurnBinaries(
        StandinBinaries(directory / "standins" / "cargo-tangle", directory / "standins" / "quill-operator"),
        directory / "sleep" / "cargo-tangle",
        directory / "sleep" / "quill-operator",
    )


@dataclass
class Spawned:
    pid: int
    kind: str
    deadline: float | None


@dataclass
class ChurnStats:
    """What one churn run did, for the summary line and the reliability figures."""

    started: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    spawn_failures: int = 0
    killed: int = 0
    reaped: int = 0
    adopted_orphans: int = 0
    distinct_pids: int = 0
    reused_pids: int = 0
    max_alive: int = 0

    def as_dict(self) -> dict:
        return {
            "started": self.started, "started_total": sum(self.started.values()),
            "spawn_failures": self.spawn_failures, "killed": self.killed, "reaped": self.reaped,
            "adopted_orphans": self.adopted_orphans, "distinct_pids": self.distinct_pids,
            "reused_pids": self.reused_pids, "max_alive": self.max_alive,
        }


class Churner:
    """Spawn, kill and reap processes until a deadline; log every spawn and exit as a JSON line."""

    def __init__(self, binaries: ChurnBinaries, workdir: Path, log_path: Path, seed: int = 0,
                 weights: dict[str, int] | None = None, max_alive: int = 40,
                 max_lifetime_seconds: float = 0.3, reap_interval_seconds: float = 0.02,
                 recycle_pids: tuple[int, int] | None = None):
        self.binaries = binaries
        self.workdir = workdir
        self.log_path = log_path
        self.random = random.Random(seed)
        weights = weights or DEFAULT_WEIGHTS
        self.kinds = [kind for kind in KINDS for _ in range(weights.get(kind, 0))]
        self.max_alive = max_alive
        self.max_lifetime_seconds = max_lifetime_seconds
        self.reap_interval_seconds = reap_interval_seconds
        self.recycle_pids = recycle_pids
        self.stats = ChurnStats()
        self.children: dict[int, Spawned] = {}
        self._service = 0
        self._seen_pids: set[int] = set()
        self._adopted_killed: set[int] = set()
        self._log = open(log_path, "a", buffering=1, encoding="utf-8")
        self._settings = self._write_settings()

    def _write_settings(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "settings.env"
        lines = [f"BLUEPRINT_ID={CHURN_BLUEPRINT}", *(f"{name}={value}" for name, value in CONTRACTS.items()),
                 f"STANDIN_INSTANCE_BINARY={self.binaries.standins.instance}", "STANDIN_SERVICES="]
        path.write_text("\n".join(lines) + "\n")
        return path

    def run(self, seconds: float, stop_file: Path | None = None) -> ChurnStats:
        """Churn for `seconds` (or until `stop_file` exists), then kill and reap everything started."""
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        deadline = time.monotonic() + seconds
        next_reap = time.monotonic()
        try:
            while time.monotonic() < deadline and not (stop_file and stop_file.exists()):
                if len(self.children) < self.max_alive:
                    self._spawn(self.random.choice(self.kinds))
                else:
                    time.sleep(0.001)
                now = time.monotonic()
                self._kill_due(now)
                if now >= next_reap:
                    self._reap()
                    self._kill_adopted()
                    next_reap = now + self.reap_interval_seconds
        finally:
            self._shutdown()
            self._log.close()
        self.stats.distinct_pids = len(self._seen_pids)
        return self.stats

    def _record(self, **entry) -> None:
        entry["t"] = time.monotonic()
        self._log.write(json.dumps(entry) + "\n")

    def _next_pid_range(self) -> None:
        """Send the next pid back to the start of the recycled range once it has passed the end."""
        if self.recycle_pids is None:
            return
        low, high = self.recycle_pids
        try:
            with open(NS_LAST_PID) as stream:
                last = int(stream.read())
            if last >= high:
                with open(NS_LAST_PID, "w") as stream:
                    stream.write(str(low))
        except OSError:
            self.recycle_pids = None

    def _spawn(self, kind: str) -> None:
        self._service += 1
        service = self._service
        path, argv, env = self._command(kind, service)
        self._next_pid_range()
        null = os.devnull
        actions = [(os.POSIX_SPAWN_OPEN, 0, null, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, null, os.O_WRONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 2, null, os.O_WRONLY, 0)]
        try:
            pid = os.posix_spawn(path, argv, env, file_actions=actions)
        except OSError:
            self.stats.spawn_failures += 1
            return
        self.stats.started[kind] += 1
        if pid in self._seen_pids:
            self.stats.reused_pids += 1
        self._seen_pids.add(pid)
        lifetime = self.random.uniform(0, self.max_lifetime_seconds) if kind in LONG_LIVED else None
        self.children[pid] = Spawned(pid, kind, None if lifetime is None else time.monotonic() + lifetime)
        self.stats.max_alive = max(self.stats.max_alive, len(self.children))
        self._record(pid=pid, kind=kind, service=service, data_dir=env.get("DATA_DIR") if kind in MANAGER_KINDS else None)

    def _command(self, kind: str, service: int) -> tuple[str, list[str], dict[str, str]]:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        if kind in MANAGER_KINDS:
            home = self.workdir / f"m{service}"
            data_dir = str(home / "data")
            env.update({"HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run"), "DATA_DIR": data_dir,
                        "STANDIN_SERVICES": f"{CHURN_BLUEPRINT}/{service}" if kind == "managed" else "",
                        "TEST_MODE": "true"})
            binary = self.binaries.sleep_manager if kind == "manager-flash" else self.binaries.standins.manager
            argv = [str(binary), "blueprint", "run", "--data-dir", data_dir, "--keystore-path", str(home / "keystore"),
                    "--settings-file", str(self._settings)]
            return str(binary), argv, env
        env.update({"BLUEPRINT_ID": str(CHURN_BLUEPRINT), "SERVICE_ID": str(service)})
        if kind in ("instance", "orphan"):
            env["TEST_MODE"] = "true"
        if kind == "orphan":
            label = f"svc-{CHURN_BLUEPRINT}-{service}"
            env["BRIDGE_SOCKET_PATH"] = str(self.workdir / "gone" / label / f"{label}.sock")
        binary = self.binaries.sleep_instance if kind == "instance-sleep" else self.binaries.standins.instance
        return str(binary), [str(binary), "run", f"--churn-tag={service}"], env

    def _kill_due(self, now: float) -> None:
        for spawned in list(self.children.values()):
            if spawned.deadline is None or spawned.deadline > now:
                continue
            spawned.deadline = None
            if spawned.kind == "managed":
                # SIGINT makes the stand-in kill its instance first; SIGKILL leaves an orphan behind.
                sig = self.random.choice((signal.SIGINT, signal.SIGINT, signal.SIGKILL))
            else:
                sig = self.random.choice((signal.SIGKILL, signal.SIGTERM))
            try:
                os.kill(spawned.pid, sig)  # unreaped child of this process, so the pid is still ours
                self.stats.killed += 1
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.stats.reaped += 1
            if self.children.pop(pid, None) is None:
                self._adopted_killed.discard(pid)
                self._record(exit=pid, adopted=True)
            else:
                self._record(exit=pid)

    def _adopted(self) -> list[int]:
        """Return live children this process did not spawn: instances re-parented to this subreaper."""
        found = []
        for task in os.listdir(f"/proc/{os.getpid()}/task"):
            try:
                with open(f"/proc/{os.getpid()}/task/{task}/children") as stream:
                    found += [int(word) for word in stream.read().split()]
            except OSError:
                continue
        return [pid for pid in found if pid not in self.children]

    def _kill_adopted(self) -> None:
        for pid in self._adopted():
            if pid in self._adopted_killed:
                continue
            # A re-parented child stays ours until this process reaps it, so its pid cannot be reused meanwhile.
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self._adopted_killed.add(pid)
            self.stats.adopted_orphans += 1

    def _shutdown(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while (self.children or self._adopted()) and time.monotonic() < deadline:
            self._kill_adopted()
            self._reap()
            time.sleep(0.01)


def read_log(path: Path) -> list[dict]:
    """Return the spawn entries of a churn log (the lines with a `kind`)."""
    entries = []
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            entry = json.loads(line)
            if "kind" in entry:
                entries.append(entry)
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Churn processes that look like managers and instances.")
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--binaries", required=True, type=Path, help="directory that prepare_binaries filled")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stop-file", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-alive", type=int, default=40)
    parser.add_argument("--max-lifetime", type=float, default=0.3)
    parser.add_argument("--recycle-pids", metavar="LOW:HIGH", help="reuse pids in this range (private PID namespace only)")
    args = parser.parse_args(argv)
    recycle = tuple(int(part) for part in args.recycle_pids.split(":")) if args.recycle_pids else None
    churner = Churner(binaries_in(args.binaries), args.workdir, args.log, seed=args.seed, max_alive=args.max_alive,
                      max_lifetime_seconds=args.max_lifetime, recycle_pids=recycle)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: args.stop_file and args.stop_file.touch())
    stats = churner.run(args.seconds, args.stop_file)
    print(json.dumps(stats.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
