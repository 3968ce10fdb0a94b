"""A raw HTTP client for the metrics server tests: bytes in, bytes out."""

from __future__ import annotations

import socket


def exchange(address: tuple[str, int], data: bytes, timeout: float) -> bytes:
    """Send `data`, then read until the server closes the connection; return what it sent back.

    A server that closes early (a request too large, say) may reset the
    connection while `data` is still being sent, so that counts as the end.
    """
    with socket.create_connection(address, timeout=timeout) as connection:
        try:
            connection.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        while True:
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
