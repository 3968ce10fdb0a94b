"""systemd readiness and watchdog notifications (sd_notify(3)).

`Notifier` sends `READY=1`, `STATUS=...`, `WATCHDOG=1` and `STOPPING=1` to
the socket named by `NOTIFY_SOCKET`. It uses `systemd.daemon.notify` from
systemd-python when that is importable, and otherwise sends the datagram
itself: the protocol is one AF_UNIX SOCK_DGRAM datagram of newline-separated
assignments, so the fallback is a few lines. Outside systemd (`NOTIFY_SOCKET`
unset) every call is a no-op that returns False.

`Notifier` catches the OSError of a failed send and returns False, because a
daemon must keep working when the notification socket is gone (for example
when a test socket was closed). The first failure is logged.
"""

from __future__ import annotations

import os
import socket
import threading

from bpm_doctor import log

# STATUS= is shown in one line of `systemctl status`; longer text is cut.
MAX_STATUS_CHARACTERS = 200


def _load_systemd_notify():
    """Return `systemd.daemon.notify` from systemd-python, or None.

    The PyPI projects `systemd` and `cysystemd` also install a top-level
    `systemd` package, with another API; only a module with a callable
    `daemon.notify` is used.
    """
    try:
        from systemd import daemon  # type: ignore[import-not-found]
    except ImportError:
        return None
    notify = getattr(daemon, "notify", None)
    return notify if callable(notify) else None


def send_datagram(message: str, address: str | None = None) -> bool:
    """Send one notification datagram to NOTIFY_SOCKET without systemd-python.

    `address` defaults to `$NOTIFY_SOCKET`. A leading `@` names an abstract
    socket, as in sd_notify(3). Returns False when no socket is set or the
    address is not an AF_UNIX path (systemd 254 added `vsock:` addresses,
    which this fallback does not support). Raises OSError when sending fails.
    """
    address = os.environ.get("NOTIFY_SOCKET") if address is None else address
    if not address:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(target)
        sock.sendall(message.encode("utf-8"))
    return True


def watchdog_interval_seconds(environ: dict[str, str] | None = None) -> float | None:
    """Return how often to send WATCHDOG=1: half of `$WATCHDOG_USEC`, in seconds.

    Returns None when no watchdog is configured, when the value is invalid,
    or when `$WATCHDOG_PID` names another process (the variables were
    inherited, as sd_watchdog_enabled(3) describes).
    """
    environ = os.environ if environ is None else environ
    text = environ.get("WATCHDOG_USEC")
    if not text:
        return None
    pid_text = environ.get("WATCHDOG_PID")
    if pid_text and pid_text.strip() != str(os.getpid()):
        return None
    try:
        microseconds = int(text)
    except ValueError:
        return None
    if microseconds <= 0:
        return None
    return microseconds / 2_000_000


def one_line(text: str) -> str:
    """Return `text` as a single line for STATUS=, cut to MAX_STATUS_CHARACTERS."""
    line = " ".join(text.split())
    if len(line) > MAX_STATUS_CHARACTERS:
        line = line[: MAX_STATUS_CHARACTERS - 3] + "..."
    return line


class Notifier:
    """Send sd_notify messages through systemd-python or the stdlib fallback.

    `backend` replaces the sender (a callable taking the message and
    returning a bool, called even without NOTIFY_SOCKET), for tests. Thread-safe: the scan loop and the signal
    path may both send.
    """

    def __init__(self, backend=None):
        self._lock = threading.Lock()
        self._failure_logged = False
        self._custom = backend is not None
        if backend is not None:
            self._send, self.backend_name = backend, "custom"
            return
        systemd_notify = _load_systemd_notify()
        if systemd_notify is not None:
            self._send, self.backend_name = systemd_notify, "systemd-python"
        else:
            self._send, self.backend_name = send_datagram, "socket"

    @property
    def enabled(self) -> bool:
        """Return True when messages go somewhere: NOTIFY_SOCKET is set, or a custom backend was given."""
        return self._custom or bool(os.environ.get("NOTIFY_SOCKET"))

    def notify(self, *assignments: str) -> bool:
        """Send assignments such as "READY=1" in one datagram; return True when sent."""
        if not self.enabled:
            return False
        message = "\n".join(assignments)
        with self._lock:
            try:
                return bool(self._send(message))
            except OSError as error:
                if not self._failure_logged:
                    self._failure_logged = True
                    log.get_logger().warning(
                        "sd_notify_failed", error=f"{type(error).__name__}: {error.strerror or error}",
                        backend=self.backend_name,
                    )
                return False

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={one_line(status)}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={one_line(status)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={one_line(status)}")
