"""`bpm-doctor serve`: scan on an interval and serve the latest result to Prometheus.

The main thread scans every `interval_seconds` (at least 5 s) and sends
systemd notifications. An HTTP thread serves `/metrics` and `/healthz` from
the latest scan, so a scrape never starts a scan. Under systemd use
`Type=notify`: READY=1 is sent after the first scan, STATUS= after each scan,
WATCHDOG=1 from the scan loop at half of `WatchdogSec=`, and STOPPING=1 on
SIGTERM or SIGINT, after which the process exits 0.

Exec events: unless `--no-exec-events` is given, the daemon also subscribes
to the kernel's process events (bpm_doctor.daemon.exec_events). It scans
about 0.2 s after a process execs, at most once a second beyond the
interval scans, so a hand-run instance shows in /metrics within about a
second. That needs CAP_NET_ADMIN and the initial user and pid namespaces.
Without them the daemon logs `exec_events_unavailable` with the reason once
and finds new processes at the next interval scan only.

Log events (JSON lines on stderr when not on a terminal): `serve_started`,
`finding_appeared`, `finding_cleared`, `scan_failed`, `scan_recovered`,
`exec_events_unavailable`, `exec_events_failed`, `serve_stopping`.
"""

from __future__ import annotations

import argparse
import math
import signal
import threading
import time
from collections.abc import Callable

from bpm_doctor import __version__, log
from bpm_doctor.config import MAX_INTERVAL_SECONDS, MIN_INTERVAL_SECONDS, Config
from bpm_doctor.daemon import exec_events, http
from bpm_doctor.daemon.scanner import Scanner, status_line
from bpm_doctor.errors import DoctorError
from bpm_doctor.model import Snapshot
from bpm_doctor.report import prometheus
from bpm_doctor.sdnotify import Notifier, watchdog_interval_seconds


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid interval {text!r}: expected a number of seconds") from None
    if not math.isfinite(value) or not MIN_INTERVAL_SECONDS <= value <= MAX_INTERVAL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"invalid interval {text!r}: expected {MIN_INTERVAL_SECONDS:g} to {MAX_INTERVAL_SECONDS:g} seconds")
    return value


def _listen(text: str) -> str:
    try:
        http.parse_listen(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `bpm-doctor serve` to its subcommand parser."""
    parser.add_argument(
        "--listen", metavar="HOST:PORT", type=_listen,
        help="address for /metrics and /healthz (default: [serve] listen from the configuration, "
             "else 127.0.0.1:9737); port 0 picks a free port, logged in serve_started",
    )
    parser.add_argument(
        "--interval", metavar="SECONDS", type=_interval,
        help=f"seconds between scans, at least {MIN_INTERVAL_SECONDS:g} (default: [serve] interval_seconds "
             "from the configuration, else 30)",
    )
    parser.add_argument(
        "--no-exec-events", action="store_true",
        help="do not subscribe to kernel process events (needs CAP_NET_ADMIN); find new processes "
             "at the interval scans only",
    )


class Daemon:
    """The scan loop plus the HTTP server; `run()` returns when `stop` is set.

    `notifier` defaults to a real sd_notify Notifier; `collect` to a host
    scan. With `exec_events`, `run()` also scans soon after a process execs
    (module docstring). Call `start()` first: it binds the listen address, so
    an address in use fails before anything is announced to systemd.
    """

    def __init__(self, config: Config, listen: str, interval_seconds: float,
                 notifier: Notifier | None = None,
                 collect: Callable[[Config], Snapshot] | None = None,
                 watchdog_seconds: float | None = None,
                 exec_events: bool = False):
        self.config = config
        self.listen = listen
        self.interval_seconds = interval_seconds
        self.notifier = notifier or Notifier()
        self.scanner = Scanner(config, interval_seconds, collect)
        self.watchdog_seconds = watchdog_seconds
        self.registry = prometheus.registry_for(lambda: self.scanner.state, config)
        self.server: http.MetricsServer | None = None
        self._thread: threading.Thread | None = None
        self.stop_reason = "stop requested"
        self.exec_events = exec_events
        self.exec_watcher: exec_events.ExecWatcher | None = None
        # Interval scans run in the main thread and exec-triggered ones in the
        # watcher thread; the lock keeps them from overlapping.
        self._scan_lock = threading.Lock()
        # Set under the scan lock once the loop ends, so that no exec-triggered
        # scan logs or sends STATUS= after serve_stopping and STOPPING=1.
        self._stopping = threading.Event()
        self._logger = log.get_logger()

    @property
    def address(self) -> str:
        """Return the bound address as HOST:PORT, with the real port when 0 was requested."""
        host, port = self.server.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        """Bind the listen address and start serving. Raises DoctorError when binding fails."""
        app = http.make_app(self.registry, self.scanner.health)
        try:
            self.server, self._thread = http.start_server(self.listen, app)
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise DoctorError(f"cannot listen on {self.listen}: {reason}") from error

    def run(self, stop: threading.Event) -> int:
        """Scan until `stop` is set, then announce the stop and close the server; returns 0.

        Set `stop_reason` (such as "SIGTERM") before setting `stop` to have it logged.
        """
        unavailable = self._start_exec_events() if self.exec_events else None
        self.scanner.exec_events_status = self._exec_events_status
        self._logger.info(
            "serve_started", listen=self.address, interval_seconds=self.interval_seconds,
            watchdog_seconds=self.watchdog_seconds, version=__version__, notify=self.notifier.enabled,
            exec_events=self.exec_watcher is not None,
        )
        if unavailable is not None:
            self._logger.info("exec_events_unavailable", reason=unavailable, fallback="interval scans only")
        try:
            self._loop(stop)
            with self._scan_lock:
                self._stopping.set()
            self._logger.info("serve_stopping", reason=self.stop_reason)
            self.notifier.stopping(f"stopping ({self.stop_reason})")
        finally:
            self.close()
        return 0

    def _start_exec_events(self) -> str | None:
        """Subscribe to process events and start the watcher; returns why that failed, or None."""
        try:
            sock = exec_events.open_listener()
        except exec_events.Unavailable as error:
            return str(error)
        self.exec_watcher = exec_events.ExecWatcher(
            sock, self._scan_after_event, watched_pids=self.scanner.watched_pids,
            on_exec=self.scanner.process_cache.forget, matters=self.scanner.exec_matters,
        )
        # From now on a scan reads only the processes that the events report changed.
        self.scanner.process_cache.change_feed = self.exec_watcher
        self.exec_watcher.start()
        return None

    def _exec_events_status(self) -> tuple[str, int]:
        """Return the state of process events for the metrics (on, unverified or off) and the overflows."""
        watcher = self.exec_watcher
        if watcher is None:
            return "off", 0
        if watcher.failed:
            state = "off"
        elif watcher.changes.distrusted is not None:
            state = "unverified"
        else:
            state = "on"
        return state, watcher.lost_event_bursts

    def _scan(self):
        """Scan once under the scan lock and send STATUS=; returns the new state."""
        with self._scan_lock:
            state = self.scanner.scan()
            self.notifier.status(status_line(state))
        return state

    def _scan_after_event(self) -> None:
        """Scan for the exec watcher, unless the daemon is stopping."""
        with self._scan_lock:
            if self._stopping.is_set():
                return
            state = self.scanner.scan()
            self.notifier.status(status_line(state))

    def _loop(self, stop: threading.Event) -> None:
        if self.watchdog_seconds:
            self.notifier.watchdog()
        with self._scan_lock:
            state = self.scanner.scan()
            self.notifier.ready(status_line(state))
        now = time.monotonic()
        next_scan = now + self.interval_seconds
        next_watchdog = now + self.watchdog_seconds if self.watchdog_seconds else None
        while not stop.is_set():
            now = time.monotonic()
            if next_watchdog is not None and now >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = now + self.watchdog_seconds
            if now >= next_scan:
                self._scan()
                # Keep the schedule; after a scan longer than the interval, start the next one a full interval later.
                next_scan += self.interval_seconds
                if next_scan <= time.monotonic():
                    next_scan = time.monotonic() + self.interval_seconds
            wake = next_scan if next_watchdog is None else min(next_scan, next_watchdog)
            stop.wait(max(0.0, wake - time.monotonic()))

    def close(self) -> None:
        """Stop the exec event thread and the HTTP server, and close their sockets; safe to call twice."""
        watcher, self.exec_watcher = self.exec_watcher, None
        if watcher is not None:
            self.scanner.process_cache.change_feed = None
            watcher.stop()
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def run(args, config: Config) -> int:
    """Run the daemon until SIGTERM or SIGINT; returns 0 after a clean stop.

    Raises DoctorError when the listen address cannot be bound.
    """
    log.configure(max(getattr(args, "verbose", 0), 1))
    listen = args.listen or config.listen
    interval = args.interval if args.interval is not None else config.interval_seconds
    daemon = Daemon(config, listen, interval, watchdog_seconds=watchdog_interval_seconds(),
                    exec_events=not getattr(args, "no_exec_events", False))
    stop = threading.Event()

    def request_stop(signum, _frame):
        daemon.stop_reason = signal.Signals(signum).name
        # Event.set() takes the lock that Event.wait() in this same main
        # thread may hold when the signal arrives, so setting it here could
        # deadlock. A short-lived thread sets it once the lock is free.
        threading.Thread(target=stop.set, name="stop-request", daemon=True).start()

    # Handlers first: a SIGTERM that arrives during the first scan still ends in a clean stop.
    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon.start()
        return daemon.run(stop)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
