"""One scan of the daemon: collect, diagnose, record the state and log what changed.

`Scanner.scan()` catches every Exception from collection and diagnosis. It
keeps the previous result for /metrics with scan_success 0, counts the
failure, and logs `scan_failed` once per run of consecutive failures (then
`scan_recovered`), so a broken host does not log the same error every
interval.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import replace

from bpm_doctor import identify, log, redact
from bpm_doctor.collect.processes import ProcessCache, read_process
from bpm_doctor.collect.units import UnitFileCache
from bpm_doctor.config import Config
from bpm_doctor.daemon import events
from bpm_doctor.model import Severity, Snapshot
from bpm_doctor.report import CheckResult, verdict
from bpm_doctor.report.prometheus import ScanState, check_failures

# /healthz fails once the last successful scan is older than this many intervals.
HEALTHY_INTERVALS = 3


def _collect_host(config: Config, process_cache: ProcessCache, unit_file_cache) -> Snapshot:
    from bpm_doctor.collect import collect_host

    return collect_host(config, process_cache=process_cache, unit_file_cache=unit_file_cache)


def describe_error(error: BaseException) -> str:
    """Return "Type at file:line: message", with the message redacted and cut to 300 characters."""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    message = redact.redact_free_text(str(error))[:300]
    return f"{type(error).__name__}{where}: {message}" if message else f"{type(error).__name__}{where}"


def status_line(state: ScanState) -> str:
    """Return the one-line STATUS= text for systemd: the verdict and counts, or why the scan failed."""
    result = state.result
    if result is None:
        return "first scan failed; no result yet" if state.scan_failures_total else "starting"
    counts = ", ".join(f"{result.count(severity)} {severity.label}"
                       for severity in (Severity.CRITICAL, Severity.WARNING, Severity.INFO))
    line = (f"{result.status}: {len(result.view.managers)} manager daemon(s), "
            f"{len(result.view.instances)} instance(s); {counts}")
    if not state.success:
        line = "last scan failed, showing an older result; " + line
    return line


class Scanner:
    """Run scans and keep the state that /metrics, /healthz and STATUS= report.

    `collect` reads the host. The default is `collect_host` with
    `process_cache` and `unit_file_cache`, which this scanner keeps between
    scans so that a scan reads only new processes and changed unit files in
    full. Tests pass a function that returns a
    fixture snapshot. `clock` gives Unix time for the exported timestamps;
    `monotonic` measures durations and ages.
    """

    def __init__(self, config: Config, interval_seconds: float,
                 collect: Callable[[Config], Snapshot] | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.config = config
        self.interval_seconds = interval_seconds
        self.state = ScanState()
        self.process_cache = ProcessCache()
        self.unit_file_cache = UnitFileCache()
        self._collect = collect or (lambda config: _collect_host(config, self.process_cache, self.unit_file_cache))
        self._clock = clock
        self._monotonic = monotonic
        self._started = monotonic()
        self._last_success_monotonic: float | None = None
        self._previous: dict | None = None
        self._consecutive_failures = 0
        self._event_budget = events.EventBudget(monotonic=monotonic)
        self._logger = log.get_logger()
        # Set by the daemon: returns (state, overflows) of its process events for the exported state.
        self.exec_events_status: Callable[[], tuple[str, int]] | None = None

    def scan(self) -> ScanState:
        """Scan once and return the new state; the state is replaced in one assignment."""
        from bpm_doctor.diagnose import diagnose

        started = self._monotonic()
        try:
            snapshot = self._collect(self.config)
            findings, view = diagnose(snapshot, self.config)
            result = verdict(findings, snapshot, view)
        except Exception as error:  # noqa: BLE001 - a daemon keeps serving the last result whatever failed
            self._record_failure(error, self._monotonic() - started)
        else:
            self._record_result(result, self._monotonic() - started)
        return self.state

    def _record_failure(self, error: Exception, duration: float) -> None:
        self._consecutive_failures += 1
        self.state = replace(
            self.state,
            success=False,
            duration_seconds=duration,
            scans_total=self.state.scans_total + 1,
            scan_failures_total=self.state.scan_failures_total + 1,
            **self._exec_events_fields(),
        )
        if self._consecutive_failures == 1:
            self._logger.error("scan_failed", error=describe_error(error),
                               serving="previous result" if self.state.result else "no result yet")
        else:
            self._logger.debug("scan_failed_again", error=describe_error(error),
                               consecutive_failures=self._consecutive_failures)

    def _record_result(self, result: CheckResult, duration: float) -> None:
        failures = check_failures(result)
        success = failures == 0
        if self._consecutive_failures:
            self._logger.info("scan_recovered", failed_scans=self._consecutive_failures)
            self._consecutive_failures = 0
        current = events.index(result.findings)
        appeared, cleared = events.changes(self._previous or {}, current)
        events.log_changes(self._logger, appeared, cleared, self._event_budget)
        self._previous = current
        if success:
            self._last_success_monotonic = self._monotonic()
        self.state = ScanState(
            result=result,
            success=success,
            duration_seconds=duration,
            last_success_timestamp_seconds=(
                self._clock() if success else self.state.last_success_timestamp_seconds),
            scans_total=self.state.scans_total + 1,
            scan_failures_total=self.state.scan_failures_total,
            check_failures_total=self.state.check_failures_total + failures,
            **self._exec_events_fields(),
        )

    def _exec_events_fields(self) -> dict:
        """Return the ScanState fields about process events; none without a daemon to report them."""
        if self.exec_events_status is None:
            return {}
        state, overflows = self.exec_events_status()
        return {"exec_events": state, "exec_events_lost_total": overflows,
                "processes_unread": self.process_cache.unread}

    def exec_matters(self, pid: int) -> bool:
        """Return True when a process that just exec'd could change the findings; safe from any thread.

        A process whose environment cannot be read counts, because its
        coordinates cannot be ruled out.
        """
        process = read_process(pid)
        if process is None:
            return False
        if "environ" in process.unreadable:
            return True
        executable = process.exe or (process.argv[0] if process.argv else "")
        return identify.may_be_blueprint_process(executable, process.argv, process.env,
                                                 self.config.instance_binaries)

    def watched_pids(self) -> set[int]:
        """Return the pids of the instances and managers in the last result; safe from any thread."""
        result = self.state.result
        if result is None:
            return set()
        return set(result.view.instances) | set(result.view.managers)

    def health(self) -> tuple[int, dict]:
        """Return (HTTP status, body) for /healthz.

        200 while the last successful scan is at most HEALTHY_INTERVALS
        intervals old, or while the daemon is younger than that and has not
        completed one yet ("starting"); 503 otherwise.
        """
        state = self.state
        limit = HEALTHY_INTERVALS * self.interval_seconds
        now = self._monotonic()
        if self._last_success_monotonic is None:
            age = None
            healthy = now - self._started <= limit
            status = "starting" if healthy else "stale"
        else:
            age = now - self._last_success_monotonic
            healthy = age <= limit
            status = "ok" if healthy else "stale"
        body = {
            "status": status,
            "scan_success": state.success,
            "last_scan_success_age_seconds": None if age is None else round(age, 3),
            "interval_seconds": self.interval_seconds,
            "check_status": state.result.status if state.result else None,
        }
        return (200 if healthy else 503), body
