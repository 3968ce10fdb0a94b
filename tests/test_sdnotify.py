"""sd_notify against a real bound datagram socket, and the choice of backend."""

from __future__ import annotations

import os
import sys
import types

import pytest
import structlog

from bpm_doctor import sdnotify
from tests.support.notify import NotifySocket


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    server = NotifySocket(str(tmp_path))
    monkeypatch.setenv("NOTIFY_SOCKET", server.address)
    yield server
    server.close()


@pytest.fixture
def socket_notifier(monkeypatch):
    monkeypatch.setattr(sdnotify, "_load_systemd_notify", lambda: None)
    return sdnotify.Notifier()


def test_ready_sends_ready_and_status_in_one_datagram(notify_socket, socket_notifier):
    assert socket_notifier.backend_name == "socket"
    assert socket_notifier.ready("OK: 1 manager daemon(s)") is True
    assert notify_socket.receive(2) == b"READY=1\nSTATUS=OK: 1 manager daemon(s)"


def test_status_watchdog_stopping_bytes(notify_socket, socket_notifier):
    socket_notifier.status("CRITICAL: 2 instance(s)")
    socket_notifier.watchdog()
    socket_notifier.stopping("stopping (SIGTERM)")
    assert notify_socket.receive(2) == b"STATUS=CRITICAL: 2 instance(s)"
    assert notify_socket.receive(2) == b"WATCHDOG=1"
    assert notify_socket.receive(2) == b"STOPPING=1\nSTATUS=stopping (SIGTERM)"


def test_abstract_socket_address(tmp_path, monkeypatch, socket_notifier):
    server = NotifySocket(str(tmp_path), abstract=True)
    monkeypatch.setenv("NOTIFY_SOCKET", server.address)
    try:
        assert server.address.startswith("@")
        assert socket_notifier.watchdog() is True
        assert server.receive(2) == b"WATCHDOG=1"
    finally:
        server.close()


def test_status_is_one_line(notify_socket, socket_notifier):
    socket_notifier.status("first line\nsecond line\tand more")
    assert notify_socket.receive(2) == b"STATUS=first line second line and more"


def test_long_status_is_cut():
    line = sdnotify.one_line("x" * 500)
    assert len(line) == sdnotify.MAX_STATUS_CHARACTERS
    assert line.endswith("...")


def test_without_notify_socket_nothing_is_sent(monkeypatch, socket_notifier):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert socket_notifier.enabled is False
    assert socket_notifier.ready("ok") is False


def test_unsupported_address_is_not_sent(monkeypatch):
    assert sdnotify.send_datagram("READY=1", "vsock:2:1234") is False


def test_missing_socket_path_logs_once_and_returns_false(tmp_path, monkeypatch, socket_notifier):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    with structlog.testing.capture_logs() as logs:
        assert socket_notifier.watchdog() is False
        assert socket_notifier.watchdog() is False
    failures = [entry for entry in logs if entry["event"] == "sd_notify_failed"]
    assert len(failures) == 1
    assert failures[0]["backend"] == "socket"


def test_systemd_python_is_preferred(monkeypatch):
    sent = []
    daemon = types.ModuleType("systemd.daemon")
    daemon.notify = lambda message: sent.append(message) or True
    package = types.ModuleType("systemd")
    package.daemon = daemon
    monkeypatch.setitem(sys.modules, "systemd", package)
    monkeypatch.setitem(sys.modules, "systemd.daemon", daemon)
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    notifier = sdnotify.Notifier()
    assert notifier.backend_name == "systemd-python"
    assert notifier.ready("OK") is True
    assert sent == ["READY=1\nSTATUS=OK"]


def test_other_systemd_package_falls_back_to_socket(monkeypatch):
    package = types.ModuleType("systemd")
    daemon = types.ModuleType("systemd.daemon")
    package.daemon = daemon
    monkeypatch.setitem(sys.modules, "systemd", package)
    monkeypatch.setitem(sys.modules, "systemd.daemon", daemon)
    assert sdnotify.Notifier().backend_name == "socket"


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "20000000"}, 10.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "abc"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
])
def test_watchdog_interval(environ, expected):
    assert sdnotify.watchdog_interval_seconds(environ) == expected


def test_watchdog_interval_for_own_pid():
    environ = {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert sdnotify.watchdog_interval_seconds(environ) == 1.5
