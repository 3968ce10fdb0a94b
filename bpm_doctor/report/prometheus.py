"""Prometheus metrics from a check result: the daemon's /metrics and `check --textfile`.

`DoctorCollector` builds fresh metric families from the latest `ScanState`
on every `collect()`, so concurrent scrapes never see a half-updated scan
and series of things that went away disappear. It never scans: the daemon
scans on its own interval and scrapes read the cached result.

Labels are bounded. Finding ids, severities, stale kinds and read-error
reasons are fixed sets, and per-unit series stop at MAX_MANAGER_UNITS manager
units. Instance series are capped at `Config.max_services` (blueprint,
service) pairs plus an `other` overflow. No label carries a pid, argv,
environment value or path.

Sample output (text format 0.0.4, abridged):

    bpm_doctor_build_info{version="0.1.0"} 1.0
    bpm_doctor_findings{id="hand-run-instance",severity="critical"} 1.0
    bpm_doctor_instances{blueprint_id="9777",launcher="shell",service_id="1"} 1.0
    bpm_doctor_scan_success 1.0
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# prometheus-client before 0.18 reads this variable once, when its metrics
# module is first imported, and has no other switch; 0.18 added
# disable_created_metrics(). Counter objects would otherwise export an extra
# `<name>_created` gauge per series. The families below never set `created`,
# so this only matters for Counter objects other code may register.
os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")

import prometheus_client  # noqa: E402
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily  # noqa: E402
from prometheus_client.registry import CollectorRegistry  # noqa: E402

from bpm_doctor import __version__, catalogue  # noqa: E402
from bpm_doctor.config import Config  # noqa: E402
from bpm_doctor.errors import DoctorError
from bpm_doctor.readfile import write_text_atomically  # noqa: E402
from bpm_doctor.model import Finding, Severity  # noqa: E402
from bpm_doctor.report import CheckResult, printable  # noqa: E402

if hasattr(prometheus_client, "disable_created_metrics"):
    prometheus_client.disable_created_metrics()

PREFIX = "bpm_doctor_"
TEXTFILE_SUFFIX = ".prom"

# node_exporter's systemd collector uses the same five ActiveState values;
# other states (reloading, maintenance, or unknown without a running
# systemd) leave all five at 0.
UNIT_STATES = ("active", "activating", "deactivating", "inactive", "failed")

# Findings about leftovers, exported by object count in bpm_doctor_stale_references.
STALE_KINDS = (
    "stale-unit", "exec-missing", "stale-socket", "stale-service-dir",
    "stale-cached-binary", "secret-file-permissions", "settings-service-id",
)

LAUNCHERS = (
    "manager", "orphan", "systemd-unit", "shell", "tmux", "screen", "cron",
    "container", "manager-command", "unknown",
)

# Reasons the collectors record in Snapshot.read_errors; exported at 0 when
# absent so the series exist before the first error.
KNOWN_READ_ERROR_REASONS = (
    "vanished",
    "permission-denied:cmdline", "permission-denied:exe", "permission-denied:cwd",
    "permission-denied:environ", "permission-denied:fd", "permission-denied:path",
    "permission-denied:settings", "permission-denied:unit-file",
    "unreadable:unit-file", "systemctl-failed",
)
_REASON_LABEL = re.compile(r"^[a-z0-9][a-z0-9:_-]{0,63}$")
MAX_READ_ERROR_REASONS = 32
OVERFLOW_REASON = "other"

# More manager units than this is already a multiple-managers finding; the
# per-unit series stop there so a broken host cannot flood the TSDB.
MAX_MANAGER_UNITS = 10

OVERFLOW_LABEL = "other"
UNKNOWN_LABEL = "unknown"


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: name without the `_total`/`_info` suffix, type, help and label names."""

    name: str
    kind: str
    documentation: str
    labels: tuple[str, ...] = ()


_CACHED = " From the latest scan; scrapes read a cached result."

METRICS = (
    MetricSpec("build", "info", "Version of bpm-doctor.", ("version",)),
    MetricSpec("operator", "info", "Operator address from the configuration, for joins in fleet rules.",
               ("operator_address",)),
    MetricSpec("scans", "counter", "Scans started since the process started."),
    MetricSpec("scan_failures", "counter", "Scans that raised an error; the previous result is kept."),
    MetricSpec("check_failures", "counter", "Checks that raised an error during a scan (check-failed findings)."),
    MetricSpec("scan_success", "gauge",
               "1 when the last scan and every check completed without an error, else 0."),
    MetricSpec("scan_duration_seconds", "gauge", "Wall time of the last scan, collection and diagnosis."),
    MetricSpec("last_scan_success_timestamp_seconds", "gauge",
               "Unix time of the last scan with scan_success 1; 0 before the first."),
    MetricSpec("scan_complete", "gauge",
               "0 when read errors could hide a problem (the check is UNKNOWN short of a critical finding)."
               + _CACHED),
    MetricSpec("read_errors", "gauge",
               "Objects the last scan could not read, by reason." + _CACHED, ("reason",)),
    MetricSpec("findings", "gauge",
               "Findings by catalogue id, not counting allowed ones. The severity label is the catalogue "
               "default or the configured override; a finding raised at another severity in context is "
               "counted here too." + _CACHED, ("id", "severity")),
    MetricSpec("findings_by_severity", "gauge",
               "Findings by the severity they were reported with, allowed ones as info." + _CACHED,
               ("severity",)),
    MetricSpec("findings_allowed", "gauge",
               "Findings lowered to info by an [[allow]] entry of the configuration." + _CACHED),
    MetricSpec("manager_processes", "gauge", "Manager daemon processes running." + _CACHED),
    MetricSpec("manager_units_enabled", "gauge", "Enabled systemd units that start a manager daemon." + _CACHED),
    MetricSpec("manager_unit_state", "gauge",
               "ActiveState of each manager unit, one series per state set to 1." + _CACHED, ("unit", "state")),
    MetricSpec("manager_unit_restarts", "gauge",
               "NRestarts of each manager unit; systemd resets it when the unit is started by hand." + _CACHED,
               ("unit",)),
    MetricSpec("instances", "gauge",
               "Instance processes by blueprint, service and launcher (manager, orphan, or what started a "
               "hand-run instance). Pairs past max_services are summed under blueprint_id and service_id "
               '"other".' + _CACHED, ("blueprint_id", "service_id", "launcher")),
    MetricSpec("stale_references", "gauge",
               "Leftover units, files, sockets and directories named by stale-reference findings, by "
               "finding id." + _CACHED, ("kind",)),
    MetricSpec("exec_events", "gauge",
               "Kernel process events in the daemon, one series per state set to 1: on (a scan follows an "
               "exec that could matter, and scans may skip processes that did not change), unverified "
               "(processes appeared without fork events, so every scan reads every process), off (not "
               "subscribed: no CAP_NET_ADMIN, --no-exec-events, or the listener failed).", ("state",)),
    MetricSpec("exec_events_lost", "counter",
               "Overflows of the process event socket; events were lost and the next scan read every process."),
    MetricSpec("scan_processes_unread", "gauge",
               "Processes the last scan took from its cache without reading them, because process events "
               "showed no change."),
)

# The states of bpm_doctor_exec_events.
EXEC_EVENT_STATES = ("on", "unverified", "off")


@dataclass(frozen=True)
class ScanState:
    """Input of the collector: the latest usable result and the scan counters.

    `result` is the last result that diagnosis produced; after a failed scan
    it is the previous one. The daemon replaces the whole object after each
    scan, so a scrape reads one consistent state without locking.
    """

    result: CheckResult | None = None
    success: bool = False
    duration_seconds: float | None = None
    last_success_timestamp_seconds: float | None = None
    scans_total: int = 0
    scan_failures_total: int = 0
    check_failures_total: int = 0
    # Set by the daemon only: a state of EXEC_EVENT_STATES, the overflow
    # count and the processes the last scan did not read.
    exec_events: str | None = None
    exec_events_lost_total: int = 0
    processes_unread: int = 0


def check_failures(result: CheckResult) -> int:
    """Return how many checks raised during the diagnosis of `result`."""
    return sum(1 for finding in result.findings if finding.id == "check-failed")


def state_from_result(result: CheckResult, duration_seconds: float | None = None,
                      now: float | None = None) -> ScanState:
    """Return the state of a one-shot check: one scan, successful unless a check raised."""
    failures = check_failures(result)
    success = failures == 0
    timestamp = None
    if success:
        timestamp = time.time() if now is None else now
    return ScanState(
        result=result,
        success=success,
        duration_seconds=duration_seconds,
        last_success_timestamp_seconds=timestamp,
        scans_total=1,
        check_failures_total=failures,
    )


class DoctorCollector:
    """Prometheus collector that exports the latest scan.

    `state` returns the current ScanState and is called once per scrape.
    """

    def __init__(self, state: Callable[[], ScanState], config: Config):
        self._state = state
        self._config = config

    def describe(self) -> Iterator:
        for spec in METRICS:
            yield _new_family(spec)

    def collect(self) -> Iterator:
        state = self._state()
        families = {spec.name: _new_family(spec) for spec in METRICS}
        self._add_self_metrics(families, state)
        if state.result is not None:
            self._add_host_metrics(families, state.result)
        for spec in METRICS:
            family = families[spec.name]
            if family.samples:
                yield family

    def _add_self_metrics(self, families: dict, state: ScanState) -> None:
        families["build"].add_metric([], {"version": __version__})
        if self._config.operator_address:
            families["operator"].add_metric([], {"operator_address": self._config.operator_address})
        families["scans"].add_metric([], state.scans_total)
        families["scan_failures"].add_metric([], state.scan_failures_total)
        families["check_failures"].add_metric([], state.check_failures_total)
        families["scan_success"].add_metric([], 1 if state.success else 0)
        if state.duration_seconds is not None:
            families["scan_duration_seconds"].add_metric([], state.duration_seconds)
        families["last_scan_success_timestamp_seconds"].add_metric([], state.last_success_timestamp_seconds or 0)
        if state.exec_events is not None:
            for name in EXEC_EVENT_STATES:
                families["exec_events"].add_metric([name], 1 if state.exec_events == name else 0)
            families["exec_events_lost"].add_metric([], state.exec_events_lost_total)
            families["scan_processes_unread"].add_metric([], state.processes_unread)

    def _add_host_metrics(self, families: dict, result: CheckResult) -> None:
        config = self._config
        view = result.view
        families["scan_complete"].add_metric([], 0 if result.blind_spots else 1)
        for reason, count in read_error_series(result.snapshot.read_errors):
            families["read_errors"].add_metric([reason], count)

        counted = Tally(finding.id for finding in result.findings if not finding.allowed_reason)
        for entry in catalogue.ENTRIES:
            severity = config.severity_overrides.get(entry.id, entry.severity)
            families["findings"].add_metric([entry.id, severity.label], counted.get(entry.id, 0))
        for severity in Severity:
            families["findings_by_severity"].add_metric([severity.label], result.count(severity))
        families["findings_allowed"].add_metric(
            [], sum(1 for finding in result.findings if finding.allowed_reason))

        manager_units = sorted(view.manager_units(), key=lambda info: info.name)
        families["manager_processes"].add_metric([], len(view.managers))
        families["manager_units_enabled"].add_metric([], sum(1 for info in manager_units if info.state.enabled))
        for info in manager_units[:MAX_MANAGER_UNITS]:
            # A unit file name is host bytes; exposition encodes strict UTF-8.
            unit_label = printable(info.name)
            for state in UNIT_STATES:
                families["manager_unit_state"].add_metric(
                    [unit_label, state], 1 if info.state.active_state == state else 0)
            if info.state.restarts is not None:
                families["manager_unit_restarts"].add_metric([unit_label], info.state.restarts)

        for labels, count in instance_series(view, config.max_services):
            families["instances"].add_metric(list(labels), count)

        stale = stale_reference_counts(result.findings)
        for kind in STALE_KINDS:
            families["stale_references"].add_metric([kind], stale[kind])


def _new_family(spec: MetricSpec):
    name = PREFIX + spec.name
    if spec.kind == "info":
        return InfoMetricFamily(name, spec.documentation, labels=[])
    if spec.kind == "counter":
        return CounterMetricFamily(name, spec.documentation, labels=list(spec.labels))
    return GaugeMetricFamily(name, spec.documentation, labels=list(spec.labels))


def read_error_series(read_errors: dict[str, int]) -> list[tuple[str, int]]:
    """Return (reason, count) pairs: every known reason, then others, bounded.

    Reasons come from code, but a snapshot file can carry any text, so a
    reason that is not a short lower-case token, or one past
    MAX_READ_ERROR_REASONS, is summed under "other".
    """
    counts = {reason: 0 for reason in KNOWN_READ_ERROR_REASONS}
    overflow = 0
    for reason, count in sorted(read_errors.items()):
        if reason in counts:
            counts[reason] += count
        elif _REASON_LABEL.match(reason) and len(counts) < MAX_READ_ERROR_REASONS:
            counts[reason] = count
        else:
            overflow += count
    series = list(counts.items())
    if overflow:
        series.append((OVERFLOW_REASON, overflow))
    return series


def _launcher_label(info) -> str:
    if info.managed:
        return "manager"
    if info.orphan:
        return "orphan"
    launcher = info.launcher or UNKNOWN_LABEL
    return launcher if launcher in LAUNCHERS else UNKNOWN_LABEL


def _id_label(value: int | None) -> str:
    return UNKNOWN_LABEL if value is None else str(value)


def instance_series(view, max_services: int) -> list[tuple[tuple[str, str, str], int]]:
    """Return ((blueprint_id, service_id, launcher), count) for every instance series.

    The first `max_services` (blueprint, service) pairs in numeric order keep
    their ids; the rest are summed under "other", per launcher. Unknown ids
    sort last and are labelled "unknown".
    """
    pairs = sorted(
        {(info.blueprint_id, info.service_id) for info in view.instances.values()},
        key=lambda pair: (pair[0] is None, pair[0] or 0, pair[1] is None, pair[1] or 0),
    )
    named = set(pairs[:max_services])
    counts: Tally = Tally()
    for info in view.instances.values():
        pair = (info.blueprint_id, info.service_id)
        if pair in named:
            labels = (_id_label(pair[0]), _id_label(pair[1]))
        else:
            labels = (OVERFLOW_LABEL, OVERFLOW_LABEL)
        counts[labels + (_launcher_label(info),)] += 1
    return sorted(counts.items())


def stale_reference_counts(findings: list[Finding]) -> Tally:
    """Count the objects each stale-reference finding names: its paths, else its units, else 1."""
    counts: Tally = Tally({kind: 0 for kind in STALE_KINDS})
    for finding in findings:
        if finding.id not in STALE_KINDS or finding.allowed_reason:
            continue
        counts[finding.id] += len(finding.field_values("path")) or len(finding.field_values("unit")) or 1
    return counts


def registry_for(state: Callable[[], ScanState], config: Config) -> CollectorRegistry:
    """Return a private registry holding only a DoctorCollector over `state`."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DoctorCollector(state, config))
    return registry


def render_text(state: ScanState, config: Config) -> bytes:
    """Return the text exposition (format 0.0.4) of one state."""
    return prometheus_client.generate_latest(registry_for(lambda: state, config))


# --- check --textfile -----------------------------------------------------


def textfile_path(text: str) -> str:
    """Validate a `--textfile` argument: node_exporter reads only `*.prom` files."""
    if not text.endswith(TEXTFILE_SUFFIX) or os.path.basename(text) == TEXTFILE_SUFFIX:
        raise argparse.ArgumentTypeError(
            f"invalid textfile path {text!r}: node_exporter's textfile collector reads only "
            f"files ending in {TEXTFILE_SUFFIX}, such as /var/lib/prometheus/node-exporter/bpm-doctor.prom")
    return text


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--textfile PATH` to the `check` subcommand's parser."""
    parser.add_argument(
        "--textfile", metavar="PATH", type=textfile_path,
        help="also write Prometheus metrics to PATH (must end in .prom) for node_exporter's textfile "
             "collector; the file is replaced atomically",
    )


def write_textfile(path: str, result: CheckResult, config: Config,
                   scan_duration_seconds: float | None = None) -> None:
    """Write the metrics of one check to `path` through a temporary file and rename.

    The temporary file is in the same directory, so the rename is atomic,
    and its name does not end in `.prom`, so node_exporter never reads a
    partial file. The file is made world-readable (0644) because node_exporter
    usually runs as another user and the daemon's umask may be 0077.
    Raises DoctorError when the path is invalid or the file cannot be written.
    """
    try:
        textfile_path(path)
    except argparse.ArgumentTypeError as error:
        raise DoctorError(str(error)) from None
    data = render_text(state_from_result(result, scan_duration_seconds), config)
    try:
        write_text_atomically(path, data.decode("utf-8"), mode=0o644)
    except OSError as error:
        raise DoctorError(f"cannot write textfile {path}: {error.strerror or error}") from error


