"""A request the HTTP layer cannot parse gets the API's JSON error body, over a raw socket to a real server."""

from __future__ import annotations

import json
import socket

import pytest
from serve_helpers import ServerProcess


def _exchange(server: ServerProcess, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send ``raw`` and read until the server closes: status line, headers (lower-case names), body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(raw)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize("raw", [
    b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}",
    b"GET /health HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",  # the app
    # has the request (and would answer without reading the body) when its framing turns out broken
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32) + b"\r\n\r\n",  # TLS spoken to the HTTP port
], ids=["bad-content-length", "bad-chunk", "garbage-request-line", "tls-hello"])
def test_an_unparsable_request_gets_a_json_400_and_the_server_keeps_serving(server, raw):
    status, headers, body = _exchange(server, raw)
    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)
    assert set(error) == {"error", "kind"} and error["kind"] == "bad_request"
    assert "not valid HTTP/1.1" in error["error"] and "\n" not in error["error"]
    assert server.client.get("/health").status_code == 200
    log = server.log()
    assert "internal error" not in log and "without completing response" not in log  # nor a second answer
