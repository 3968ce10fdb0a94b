"""Start stand-in processes as root, then run `bpm-doctor check` with fewer privileges; print the outcomes as JSON.

Run as PID 1 of a private PID namespace (tests/support/pidns.py), so the
verdicts depend only on the processes started here. Scenarios:

    managed     a stand-in manager and the instance it spawned, both root
    hand-run    that, plus a root instance started by hand whose argv
                carries --blueprint-id and --service-id, so its coordinates
                can be read without its environment

Each scenario runs the check as full root, as root with an empty capability
bounding set (`setpriv --bounding-set=-all --inh-caps=-all`), and as uid
65534. The last one uses /usr/bin/python3 with PYTHONPATH set to the
checkout, because a virtual environment under /root is not readable by that
user. The output names the interpreter each run used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import standins

REPOSITORY = Path(__file__).resolve().parents[2]
BLUEPRINT = 4242
CONTRACTS = {
    "TANGLE_CONTRACT": "0x" + "1" * 40,
    "STAKING_CONTRACT": "0x" + "2" * 40,
    "STATUS_REGISTRY_CONTRACT": "0x" + "3" * 40,
}
SYSTEM_PYTHON = "/usr/bin/python3"


def _wait_for(predicate, seconds: float, description: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {seconds:g} s waiting for {description}")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as stream:
            return [int(word) for word in stream.read().split()]
    except OSError:
        return []


def start_processes(workdir: Path, binaries: standins.StandinBinaries, hand_run: bool) -> dict:
    manager_dir = workdir / "manager"
    manager_dir.mkdir(parents=True, exist_ok=True)
    settings = manager_dir / "settings.env"
    settings.write_text("\n".join([f"BLUEPRINT_ID={BLUEPRINT}", *(f"{k}={v}" for k, v in CONTRACTS.items()),
                                   f"STANDIN_SERVICES={BLUEPRINT}/1", f"STANDIN_INSTANCE_BINARY={binaries.instance}"])
                        + "\n")
    settings.chmod(0o600)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(manager_dir)}
    log = open(workdir / "processes.log", "ab")
    manager = subprocess.Popen(
        [str(binaries.manager), "blueprint", "run", "--data-dir", "./data", "--keystore-path", "./keystore",
         "--settings-file", "./settings.env"],
        cwd=manager_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    instance = _wait_for(lambda: (_children(manager.pid) or [None])[0], 20, "the managed instance")
    _wait_for(lambda: b"connected" in (workdir / "processes.log").read_bytes(), 20, "the instance to ping its bridge")
    started = {"manager": manager.pid, "managed_instance": instance, "popen": [manager]}
    if hand_run:
        hand = subprocess.Popen(
            [str(binaries.instance), "run", "--blueprint-id", str(BLUEPRINT), "--service-id", "1"],
            cwd=manager_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            env={"PATH": "/usr/bin:/bin", "BLUEPRINT_ID": str(BLUEPRINT), "SERVICE_ID": "1", "TEST_MODE": "true"})
        started["hand_run"] = hand.pid
        started["popen"].append(hand)
        _wait_for(lambda: b"bridge=skipped" in (workdir / "processes.log").read_bytes(), 20, "the hand-run instance")
    return started


def run_check(mode: str, workdir: Path) -> dict:
    """Run `check --format json` and `--format nagios` (plus --textfile where writable) in one privilege mode."""
    environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(REPOSITORY),
                   "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/nonexistent"}
    setpriv = shutil.which("setpriv") or "setpriv"
    python = sys.executable
    prefix: list[str] = []
    textfile = None
    if mode == "root-no-capabilities":
        prefix = [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--"]
        textfile = workdir / f"{mode}.prom"
    elif mode == "nobody":
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        python = SYSTEM_PYTHON
    elif mode == "root":
        textfile = workdir / f"{mode}.prom"
    outcome: dict = {"mode": mode, "python": python}
    for output_format in ("json", "nagios"):
        arguments = [python, "-m", "bpm_doctor", "-v", "--config", os.devnull, "check", "--format", output_format]
        if output_format == "json" and textfile is not None:
            arguments += ["--textfile", str(textfile)]
        completed = subprocess.run(prefix + arguments, capture_output=True, text=True, timeout=120,
                                   env=environment, cwd="/")
        outcome[output_format] = {"exit_code": completed.returncode, "stdout": completed.stdout,
                                  "stderr": completed.stderr[-3000:]}
    if textfile is not None and textfile.exists():
        outcome["textfile"] = textfile.read_text()
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--scenario", choices=("managed", "hand-run"), required=True)
    args = parser.parse_args(argv)
    if os.getpid() != 1:
        parser.error("run this as PID 1 of a private PID namespace (tests/support/pidns.py)")
    binaries = standins.compile_standins(args.workdir / "bin")
    started = start_processes(args.workdir, binaries, hand_run=args.scenario == "hand-run")
    try:
        outcomes = [run_check(mode, args.workdir) for mode in ("root", "root-no-capabilities", "nobody")]
    finally:
        # The managed instance first: while its manager lives, it is the manager's unreaped child.
        os.kill(started["managed_instance"], signal.SIGKILL)
        for popen in started.pop("popen"):
            if popen.poll() is None:
                os.kill(popen.pid, signal.SIGKILL)  # an unreaped child of this process
            popen.wait(timeout=10)
    print(json.dumps({"started": started, "outcomes": outcomes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
