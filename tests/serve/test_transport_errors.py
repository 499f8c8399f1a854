"""A request the HTTP layer cannot parse gets the API's JSON error body, over a raw socket to a real server."""

from __future__ import annotations

import json
import socket
import time

import pytest
from serve_helpers import ServerProcess


def _exchange(server: ServerProcess, raw: bytes, half_close: bool = False) -> tuple[str, dict[str, str], bytes]:
    """Send ``raw`` (then half-close, if asked) and read until the server closes: status line,
    headers (lower-case names), body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(raw)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
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


_CHUNKED = (b"POST /v2/models/model/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")


@pytest.mark.parametrize("half_close", [False, True], ids=["socket-open", "half-closed"])
def test_an_absurd_chunk_size_gets_a_json_413_at_once(server, half_close):
    """A chunk declaring 2**64 - 1 bytes is refused when its size line arrives, not after the body
    timeout; a client that then half-closes (``printf ... | nc``) still reads the answer."""
    started = time.monotonic()
    status, headers, body = _exchange(server, _CHUNKED + b"FFFFFFFFFFFFFFFF\r\n{}", half_close=half_close)
    assert time.monotonic() - started < 1.5  # the session server's body timeout is 2 s
    assert status == "HTTP/1.1 413 Content Too Large", (status, body)
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)
    assert error["kind"] == "too_large" and "limit of 65536 bytes" in error["error"]
    assert server.client.get("/health").status_code == 200


def test_a_client_that_half_closes_gets_its_answer_or_a_json_400(server):
    csv = b"preg,plas,pres,skin,insu,mass,pedi,age\n1,2,3,4,5,6,7,8\n"
    whole = b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n%s" % (
        len(csv), csv)
    status, _, body = _exchange(server, whole, half_close=True)
    assert status == "HTTP/1.1 200 OK", body
    assert len(json.loads(body)["predictions"]) == 1
    status, headers, body = _exchange(server, _CHUNKED + b"5\r\n{\"in", half_close=True)
    assert status == "HTTP/1.1 400 Bad Request" and json.loads(body)["kind"] == "client_disconnected"
