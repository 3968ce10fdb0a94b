"""The daemon's HTTP endpoint: /metrics and /healthz on a small threaded WSGI server.

prometheus-client 0.16's `start_http_server` returns no handle, so its server
cannot be shut down. This module builds the server from the standard
library's wsgiref instead. It serves `/metrics` with
`prometheus_client.make_wsgi_app`, which chooses OpenMetrics or text format
0.0.4 from the Accept header and gzips when asked.

Each connection carries one request (HTTP/1.0). A request line longer than
MAX_REQUEST_LINE_BYTES gets 414, and a header block larger than
MAX_HEADER_BYTES gets 431. A client is disconnected when it stays silent for
SOCKET_TIMEOUT_SECONDS, or when its request line and headers are not all in
after REQUEST_DEADLINE_SECONDS, however slowly the bytes trickle in. Past MAX_CONNECTIONS concurrent connections, new ones get 503.
Request bodies are never read.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import json
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from bpm_doctor import log, redact

MAX_REQUEST_LINE_BYTES = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
SOCKET_TIMEOUT_SECONDS = 10.0
REQUEST_DEADLINE_SECONDS = 10.0
MAX_CONNECTIONS = 32

_LISTEN = re.compile(r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[0-9A-Za-z.-]+)):(?P<port>[0-9]{1,5})$")

HealthProbe = Callable[[], tuple[int, dict]]


def parse_listen(text: str) -> tuple[str, int]:
    """Split HOST:PORT or [IPV6]:PORT into (host, port); port 0 binds any free port.

    Raises ValueError when the text is not such an address.
    """
    match = _LISTEN.match(text.strip())
    port = int(match.group("port")) if match else 0
    if match is None or not 0 <= port < 65536:
        raise ValueError(f"invalid listen address {text!r}: expected HOST:PORT such as 127.0.0.1:9737 "
                         "or [::1]:9737, with a port from 0 (any free port) to 65535")
    host = match.group("ipv6") or match.group("host")
    if match.group("ipv6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid listen address {text!r}: {host!r} is not an IPv6 address") from None
    return host, port


class _LimitedReader:
    """A request's input stream that caps the bytes and the time spent reading headers.

    `http.server` reads headers with `readline`. Once the budget is spent,
    this raises `http.client.LineTooLong`, and `parse_request` responds with
    431.
    """

    def __init__(self, raw, max_bytes: int, deadline: float):
        self._raw = raw
        self._remaining = max_bytes
        self._deadline = deadline

    def readline(self, size: int = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise TimeoutError("request headers took too long")
        if self._remaining <= 0:
            raise http.client.LineTooLong("header block")
        limit = self._remaining + 1 if size is None or size < 0 else min(size, self._remaining + 1)
        line = self._raw.readline(limit)
        self._remaining -= len(line)
        if self._remaining < 0:
            raise http.client.LineTooLong("header block")
        return line

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _DeadlineReader(io.RawIOBase):
    """The read side of a connection, raising TimeoutError once the request deadline has passed.

    A socket timeout starts again with every byte received, so a client that
    sends one byte every few seconds would otherwise keep its connection, and
    one of MAX_CONNECTIONS slots, for as long as it likes. Each read here
    waits at most until the deadline.
    """

    def __init__(self, connection: socket.socket, deadline: float, timeout_seconds: float):
        super().__init__()
        self._connection = connection
        self._deadline = deadline
        self._timeout_seconds = timeout_seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received within REQUEST_DEADLINE_SECONDS")
        self._connection.settimeout(min(remaining, self._timeout_seconds))
        return self._connection.recv_into(buffer)


class _LoggingServerHandler(ServerHandler):
    """wsgiref's handler, with application errors logged as events instead of tracebacks on stderr."""

    def log_exception(self, exc_info):
        error = exc_info[1]
        log.get_logger().error(
            "http_request_failed",
            path=self.environ.get("PATH_INFO", "")[:200],
            error=f"{type(error).__name__}: {redact.redact_free_text(str(error))[:300]}",
        )


class RequestHandler(WSGIRequestHandler):
    """One bounded request per connection; access is not logged."""

    timeout = SOCKET_TIMEOUT_SECONDS

    def setup(self):
        super().setup()
        self._deadline = time.monotonic() + REQUEST_DEADLINE_SECONDS
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self._deadline, self.timeout))

    def handle(self):
        deadline = self._deadline
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE_BYTES + 1)
            if len(self.raw_requestline) > MAX_REQUEST_LINE_BYTES:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline.strip():
                return
            self.rfile = _LimitedReader(self.rfile, MAX_HEADER_BYTES, deadline)
            if not self.parse_request():
                return
            # The request is in; the response gets the plain per-operation timeout.
            self.connection.settimeout(self.timeout)
            handler = _LoggingServerHandler(
                self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True,
            )
            handler.request_handler = self
            handler.run(self.server.get_app())
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def log_message(self, format, *args):  # noqa: A002 - the signature of BaseHTTPRequestHandler
        """Log nothing: scrapes every few seconds would flood the journal."""


class MetricsServer(socketserver.ThreadingMixIn, WSGIServer):
    """A threaded WSGI server with a cap on concurrent connections and no DNS lookups."""

    daemon_threads = True
    # Do not wait for slow clients at shutdown; their threads are daemons.
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], family: int):
        self.address_family = family
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, RequestHandler)

    def server_bind(self):
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup
        # of the listen address. The WSGI environment needs no fully
        # qualified name, so the address is recorded as given.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port
        self.setup_environ()

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self._reject_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _reject_busy(self, request) -> None:
        try:
            request.settimeout(1.0)
            request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def handle_error(self, request, client_address):
        log.get_logger().debug("http_connection_failed", client=str(client_address[0]))


def _plain(start_response, status: str, text: str, extra_headers: list | None = None) -> list[bytes]:
    body = text.encode("utf-8")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, headers + (extra_headers or []))
    return [body]


_STATUS_LINES = {200: "200 OK", 503: "503 Service Unavailable"}


def make_app(registry: CollectorRegistry, health: HealthProbe) -> Callable:
    """Return the WSGI application: /metrics from `registry`, /healthz from `health`.

    `health` returns (HTTP status code, JSON-serialisable body); it must be
    cheap, because probes may call it often.
    """
    metrics_app = make_wsgi_app(registry)

    def application(environ, start_response):
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        if method != "GET":
            return _plain(start_response, "405 Method Not Allowed", "only GET is supported\n", [("Allow", "GET")])
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            code, body = health()
            data = (json.dumps(body, sort_keys=True) + "\n").encode("utf-8")
            start_response(_STATUS_LINES.get(code, f"{code} Unknown"), [
                ("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store"),
            ])
            return [data]
        if path == "/":
            return _plain(start_response, "200 OK", "bpm-doctor: metrics at /metrics, health at /healthz\n")
        return _plain(start_response, "404 Not Found", "not found: use /metrics or /healthz\n")

    return application


def _address_family(host: str, port: int) -> int:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]


def start_server(listen: str, app: Callable) -> tuple[MetricsServer, threading.Thread]:
    """Bind `listen` (HOST:PORT) and serve `app` in a daemon thread.

    Returns the server, whose `server_address` contains the bound port (useful
    with port 0), and its thread. Stop it with `server.shutdown()` and
    `server.server_close()`. Raises ValueError for an invalid address and
    OSError when the address cannot be bound.
    """
    host, port = parse_listen(listen)
    server = MetricsServer((host, port), _address_family(host, port))
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.25},
                              name="bpm-doctor-http", daemon=True)
    thread.start()
    return server, thread
