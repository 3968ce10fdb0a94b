"""The metrics endpoint against hostile clients on loopback: malformed, oversized, slow and many at once.

Every request has a socket timeout and every loop a deadline, so a server
that stopped responding fails a test instead of hanging it. The server runs
while a thread keeps scanning this host, as the daemon does.
"""

from __future__ import annotations

import collections
import random
import socket
import threading
import time

import pytest

from bpm_doctor import config as config_module, serve
from bpm_doctor.daemon import http
from bpm_doctor.sdnotify import Notifier
from tests.daemon import client

CLIENT_TIMEOUT_SECONDS = 10


@pytest.fixture
def daemon():
    """A Daemon on 127.0.0.1 with a real scan result, scanning the host in a loop while the test runs."""
    daemon = serve.Daemon(config_module.Config(), "127.0.0.1:0", 5.0, notifier=Notifier(backend=lambda _m: True))
    daemon.start()
    daemon.scanner.scan()
    done = threading.Event()

    def scan_loop():
        while not done.is_set():
            daemon.scanner.scan()

    scanner = threading.Thread(target=scan_loop, daemon=True)
    scanner.start()
    yield daemon
    done.set()
    scanner.join(timeout=30)
    daemon.close()


def address(daemon) -> tuple[str, int]:
    return daemon.server.server_address[:2]


def exchange(daemon, data: bytes, timeout: float = CLIENT_TIMEOUT_SECONDS) -> bytes:
    return client.exchange(address(daemon), data, timeout)


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/"):
        return None
    return int(response.split(b" ", 2)[1])


def assert_serving(daemon) -> None:
    response = exchange(daemon, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert status_of(response) == 200
    assert b"bpm_doctor_scans_total" in response


def test_listens_on_loopback_only(daemon):
    assert config_module.DEFAULT_LISTEN.startswith("127.0.0.1:")
    assert daemon.server.socket.getsockname()[0] == "127.0.0.1"


@pytest.mark.parametrize(("request_bytes", "expected"), [
    (b"GET /metrics HTTP/1.0\r\nX-Big: " + b"a" * (http.MAX_HEADER_BYTES + 1) + b"\r\n\r\n", 431),
    (b"GET /metrics HTTP/1.0\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(150)) + b"\r\n", 431),
    (b"GET /metrics HTTP/1.0\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"GET /" + b"p" * (http.MAX_REQUEST_LINE_BYTES + 1) + b" HTTP/1.0\r\n\r\n", 414),
    (b"GET /" + b"p" * (http.MAX_REQUEST_LINE_BYTES - 100) + b" HTTP/1.0\r\n\r\n", 404),
    (b"GET /metrics%00/../healthz HTTP/1.0\r\n\r\n", 404),
    (b"GET /metrics\xff\xfe HTTP/1.0\r\n\r\n", 404),
    (b"FOO /metrics HTTP/1.0\r\n\r\n", 405),
    (b"get /metrics HTTP/1.0\r\n\r\n", 405),
    (b"BREW" * 500 + b" /metrics HTTP/1.0\r\n\r\n", 405),
    (b"POST /metrics HTTP/1.0\r\nContent-Length: 1000000000\r\n\r\npartial", 405),
    (b"TRACE / HTTP/1.0\r\n\r\n", 405),
    (b"CONNECT 127.0.0.1:22 HTTP/1.0\r\n\r\n", 405),
    (b"GET /metrics HTTP/9.9\r\n\r\n", b"Error code: 505"),
    (b"GET /metrics HTTP/1.0\r\nNo colon here\r\n\r\n", 200),
    (b"GET /metrics HTTP/1.0 extra words\r\n\r\n", b"Error code: 400"),
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200),
])
def test_malformed_request_gets_a_status(daemon, request_bytes, expected):
    """`expected` is a status code, or the body of an error that http.server sends without a status line.

    http.server responds to a request line it rejects before reading the
    version (HTTP/9.9, too many words) HTTP/0.9-style: the error page alone.
    """
    response = exchange(daemon, request_bytes)
    if isinstance(expected, bytes):
        assert expected in response, response[:200]
    else:
        assert status_of(response) == expected, response[:200]
        assert response.count(b"HTTP/1.") == 1, "one request per connection"
    assert_serving(daemon)


@pytest.mark.parametrize("path", [b"/metrics", b"/healthz"])
def test_http_09_request(daemon, path):
    """HTTP/0.9 has no status line or headers: the body comes back alone."""
    response = exchange(daemon, b"GET " + path + b"\r\n\r\n")
    assert not response.startswith(b"HTTP/")
    assert b"bpm_doctor" in response or b'"status"' in response
    assert_serving(daemon)


@pytest.fixture
def short_deadline(monkeypatch):
    """A 2 s request deadline and 1 s socket timeout, for clients that never finish their request."""
    monkeypatch.setattr(http, "REQUEST_DEADLINE_SECONDS", 2.0)
    monkeypatch.setattr(http.RequestHandler, "timeout", 1.0)


def test_http_09_without_blank_line_is_cut(short_deadline, daemon):
    """http.server reads a header block even for HTTP/0.9, so a bare `GET /path` line waits for one, up to the deadline."""
    started = time.monotonic()
    response = exchange(daemon, b"GET /metrics\r\n")
    assert time.monotonic() - started < 2.0 + 1.0
    assert response == b""
    assert_serving(daemon)


def test_garbage_bytes(short_deadline, daemon):
    rng = random.Random(5)
    for size in (1, 17, 4096, 65_536, 300_000):
        payload = bytes(rng.randrange(256) for _ in range(size))
        started = time.monotonic()
        response = exchange(daemon, payload)
        assert time.monotonic() - started < 2.0 + 1.0
        assert status_of(response) in (None, 400, 405, 414, 431, 505), response[:120]
    assert_serving(daemon)


def test_empty_and_closed_connections(daemon):
    for _ in range(50):
        with socket.create_connection(address(daemon), timeout=CLIENT_TIMEOUT_SECONDS):
            pass
        assert exchange(daemon, b"\r\n") == b""
    assert_serving(daemon)


def test_slowloris_is_cut_at_the_deadline(monkeypatch):
    """Clients that trickle a byte every 0.3 s hold every slot, then all are cut at the request deadline."""
    monkeypatch.setattr(http, "REQUEST_DEADLINE_SECONDS", 2.0)
    monkeypatch.setattr(http.RequestHandler, "timeout", 1.0)
    daemon = serve.Daemon(config_module.Config(), "127.0.0.1:0", 5.0, notifier=Notifier(backend=lambda _m: True))
    daemon.start()
    daemon.scanner.scan()
    connections = []
    try:
        for index in range(http.MAX_CONNECTIONS + 8):
            connection = socket.create_connection(address(daemon), timeout=CLIENT_TIMEOUT_SECONDS)
            connection.sendall(b"GET /metr" if index % 2 else b"GET /metrics HTTP/1.0\r\nX-Slow: ")
            connections.append(connection)
        time.sleep(0.3)
        busy = exchange(daemon, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert status_of(busy) == 503, "all slots should be held by the slow clients"

        started = time.monotonic()
        open_connections = list(connections)
        while open_connections and time.monotonic() - started < 10:
            for connection in list(open_connections):
                try:
                    connection.sendall(b"a")
                    connection.settimeout(0.01)
                    if connection.recv(4096) == b"":
                        open_connections.remove(connection)
                except (BlockingIOError, TimeoutError):
                    pass
                except OSError:
                    open_connections.remove(connection)
            time.sleep(0.3)
        cut_after = time.monotonic() - started
        assert open_connections == [], f"{len(open_connections)} slow clients still connected after {cut_after:.1f} s"
        assert cut_after < 2.0 + 2.0
        assert_serving(daemon)
    finally:
        for connection in connections:
            connection.close()
        daemon.close()


def test_partial_request_then_silence(monkeypatch):
    monkeypatch.setattr(http.RequestHandler, "timeout", 1.0)
    daemon = serve.Daemon(config_module.Config(), "127.0.0.1:0", 5.0, notifier=Notifier(backend=lambda _m: True))
    daemon.start()
    daemon.scanner.scan()
    try:
        started = time.monotonic()
        response = exchange(daemon, b"GET /metrics HTTP/1.0\r\nHost: x\r\n")
        assert time.monotonic() - started < 3
        assert status_of(response) is None
        assert_serving(daemon)
    finally:
        daemon.close()


@pytest.mark.live
def test_hundreds_of_concurrent_scrapes_while_scanning(daemon):
    """400 clients connect at once while the host is being scanned: each gets a whole response, and none hangs.

    Marked live for its run time and thread count.
    """
    clients = 400
    results: collections.Counter = collections.Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Event()

    def scrape():
        start.wait()
        began = time.monotonic()
        try:
            response = exchange(daemon, b"GET /metrics HTTP/1.0\r\n\r\n", timeout=20)
            outcome = status_of(response)
            if outcome == 200 and not response.rstrip().endswith(b"1.0") and b"bpm_doctor_build_info" not in response:
                outcome = "truncated"
        except OSError as error:
            outcome = type(error).__name__
        with lock:
            results[outcome] += 1
            latencies.append(time.monotonic() - began)

    threads = [threading.Thread(target=scrape, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.set()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not [thread for thread in threads if thread.is_alive()], "a scrape hung"
    latencies.sort()
    print(dict(results), "p50", latencies[len(latencies) // 2], "p99", latencies[int(len(latencies) * 0.99)])
    assert set(results) <= {200, 503}, results
    assert sum(results.values()) == clients
    assert results[200] >= clients * 0.9
    assert_serving(daemon)
