"""A bound AF_UNIX datagram socket that plays systemd's side of sd_notify."""

from __future__ import annotations

import os
import socket
import time


class NotifySocket:
    """Receive sd_notify datagrams on a path; `address` is the NOTIFY_SOCKET value."""

    def __init__(self, directory: str, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"bpm-doctor-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = os.path.join(directory, "notify.sock")
            self.sock.bind(path)
            self.address = path
        self.messages: list[bytes] = []

    def receive(self, timeout: float) -> bytes | None:
        """Return the next datagram, or None when none arrives within `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            return None
        self.messages.append(data)
        return data

    def wait_for(self, assignment: bytes, timeout: float) -> bytes:
        """Return the first datagram containing the line `assignment`; raise AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {assignment!r} within {timeout} s; received {self.messages!r}")
            data = self.receive(remaining)
            if data is not None and assignment in data.split(b"\n"):
                return data

    def close(self) -> None:
        self.sock.close()
