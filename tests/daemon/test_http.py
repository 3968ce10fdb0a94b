"""The HTTP endpoint on loopback: routes, content negotiation and bounded requests."""

from __future__ import annotations

import gzip
import json
import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from bpm_doctor.daemon import http
from tests.daemon import client


class _OneGauge:
    def collect(self):
        family = GaugeMetricFamily("bpm_doctor_scan_success", "test gauge")
        family.add_metric([], 1)
        yield family


@pytest.fixture
def health_state():
    return {"code": 200, "body": {"status": "ok"}}


@pytest.fixture
def server(health_state):
    registry = CollectorRegistry()
    registry.register(_OneGauge())
    app = http.make_app(registry, lambda: (health_state["code"], health_state["body"]))
    server, thread = http.start_server("127.0.0.1:0", app)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def url(server, path: str) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}{path}"


def get(server, path: str, headers: dict | None = None, method: str = "GET"):
    request = urllib.request.Request(url(server, path), headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def raw_request(server, data: bytes, timeout: float = 5) -> bytes:
    return client.exchange(server.server_address[:2], data, timeout)


def assert_still_serving(server):
    status, _headers, body = get(server, "/metrics")
    assert status == 200
    assert b"bpm_doctor_scan_success 1.0" in body


def test_metrics_text_format(server):
    status, headers, body = get(server, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert b"# TYPE bpm_doctor_scan_success gauge" in body


def test_metrics_openmetrics_when_accepted(server):
    status, headers, body = get(server, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_metrics_gzip_when_accepted(server):
    status, headers, body = get(server, "/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert b"bpm_doctor_scan_success" in gzip.decompress(body)


def test_healthz_codes_and_json(server, health_state):
    status, headers, body = get(server, "/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok"}
    assert body.count(b"\n") == 1
    health_state["code"], health_state["body"] = 503, {"status": "stale"}
    status, _headers, body = get(server, "/healthz")
    assert status == 503
    assert json.loads(body) == {"status": "stale"}


def test_unknown_path_and_method(server):
    assert get(server, "/nope")[0] == 404
    status, headers, _body = get(server, "/metrics", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET"
    assert get(server, "/")[0] == 200


def test_request_line_too_long(server):
    response = raw_request(server, b"GET /" + b"a" * (http.MAX_REQUEST_LINE_BYTES + 10) + b" HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.0 414")
    assert_still_serving(server)


def test_header_block_too_large(server):
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (index, b"b" * 1000) for index in range(40))
    response = raw_request(server, b"GET /metrics HTTP/1.0\r\n" + headers + b"\r\n")
    assert response.startswith(b"HTTP/1.0 431")
    assert_still_serving(server)


def test_garbage_request(server):
    response = raw_request(server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    # http.server responds to an unparsable request line HTTP/0.9-style: a body without a status line.
    assert b"Error code: 400" in response
    assert_still_serving(server)


def test_silent_client_is_dropped(server, monkeypatch):
    monkeypatch.setattr(http.RequestHandler, "timeout", 0.5)
    with socket.create_connection(server.server_address[:2], timeout=5) as idle:
        assert_still_serving(server)
        started = time.monotonic()
        assert idle.recv(100) == b""
        assert time.monotonic() - started < 3


def test_connection_cap_answers_503(health_state, monkeypatch):
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(http.RequestHandler, "timeout", 3)
    registry = CollectorRegistry()
    registry.register(_OneGauge())
    server, thread = http.start_server("127.0.0.1:0", http.make_app(registry, lambda: (200, {})))
    idle = [socket.create_connection(server.server_address[:2], timeout=5) for _ in range(2)]
    try:
        time.sleep(0.3)
        assert raw_request(server, b"GET /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 503")
    finally:
        for connection in idle:
            connection.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9737", ("127.0.0.1", 9737)),
    ("[::1]:9737", ("::1", 9737)),
    ("localhost:0", ("localhost", 0)),
])
def test_parse_listen(text, expected):
    assert http.parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9737", "127.0.0.1", "127.0.0.1:70000", "[zz::1]:80", "::1:9737", "host:port"])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError, match="invalid listen address"):
        http.parse_listen(text)


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this kernel")
    registry = CollectorRegistry()
    registry.register(_OneGauge())
    try:
        server, thread = http.start_server("[::1]:0", http.make_app(registry, lambda: (200, {})))
    except OSError as error:
        pytest.skip(f"cannot bind ::1: {error}")
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as response:
            assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
