"""`bpm-doctor serve`: scan on an interval and serve the latest result to Prometheus.

The main thread scans every `interval_seconds` (at least 5 s) and sends
systemd notifications. An HTTP thread serves `/metrics` and `/healthz` from
the latest scan, so a scrape never starts a scan. Under systemd use
`Type=notify`: READY=1 is sent after the first scan, STATUS= after each scan,
WATCHDOG=1 from the scan loop at half of `WatchdogSec=`, and STOPPING=1 on
SIGTERM or SIGINT, after which the process exits 0.

Log events (JSON lines on stderr when not on a terminal): `serve_started`,
`finding_appeared`, `finding_cleared`, `scan_failed`, `scan_recovered`,
`serve_stopping`.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable

from bpm_doctor import __version__, log
from bpm_doctor.config import MIN_INTERVAL_SECONDS, Config
from bpm_doctor.daemon import http
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
    if not value >= MIN_INTERVAL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"invalid interval {text!r}: scans must be at least {MIN_INTERVAL_SECONDS:g} seconds apart")
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


class Daemon:
    """The scan loop plus the HTTP server; `run()` returns when `stop` is set.

    `notifier` defaults to a real sd_notify Notifier; `collect` to a host
    scan. Call `start()` first: it binds the listen address, so an address in
    use fails before anything is announced to systemd.
    """

    def __init__(self, config: Config, listen: str, interval_seconds: float,
                 notifier: Notifier | None = None,
                 collect: Callable[[Config], Snapshot] | None = None,
                 watchdog_seconds: float | None = None):
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
        self._logger.info(
            "serve_started", listen=self.address, interval_seconds=self.interval_seconds,
            watchdog_seconds=self.watchdog_seconds, version=__version__, notify=self.notifier.enabled,
        )
        try:
            self._loop(stop)
            self._logger.info("serve_stopping", reason=self.stop_reason)
            self.notifier.stopping(f"stopping ({self.stop_reason})")
        finally:
            self.close()
        return 0

    def _loop(self, stop: threading.Event) -> None:
        if self.watchdog_seconds:
            self.notifier.watchdog()
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
                state = self.scanner.scan()
                self.notifier.status(status_line(state))
                # Keep the schedule; after a scan longer than the interval, start the next one a full interval later.
                next_scan += self.interval_seconds
                if next_scan <= time.monotonic():
                    next_scan = time.monotonic() + self.interval_seconds
            wake = next_scan if next_watchdog is None else min(next_scan, next_watchdog)
            stop.wait(max(0.0, wake - time.monotonic()))

    def close(self) -> None:
        """Stop the HTTP server and close its socket; safe to call twice."""
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
    daemon = Daemon(config, listen, interval, watchdog_seconds=watchdog_interval_seconds())
    stop = threading.Event()

    def request_stop(signum, _frame):
        daemon.stop_reason = signal.Signals(signum).name
        stop.set()

    # Handlers first: a SIGTERM that arrives during the first scan still ends in a clean stop.
    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon.start()
        return daemon.run(stop)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
