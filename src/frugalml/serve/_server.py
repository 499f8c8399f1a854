"""Run the app with uvicorn, and note running servers so ``frugalml monitor NAME`` finds them.

Each server writes ``<cache>/servers/<pid>.json`` (its URL and model) while it runs.
A request uvicorn cannot parse gets the app's JSON error body (:func:`json_errors_protocol`).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import psutil

from frugalml.exceptions import ConfigError, FrugalError
from frugalml.files import cache_root
from frugalml.serve._config import as_monitoring_config
from frugalml.serve._model import load_model
from frugalml.serve._settings import ServerSettings


def servers_dir() -> Path:

    return cache_root() / "servers"


def running_servers() -> list[dict[str, Any]]:
    """Servers started by ``frugalml serve`` on this machine that are still alive."""
    found = []
    for file in sorted(servers_dir().glob("*.json")) if servers_dir().is_dir() else []:
        try:
            entry = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(int(entry.get("pid", -1))):
            found.append(entry)
        else:
            file.unlink(missing_ok=True)
    return found


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            hint = "pick another --port" if error.errno == errno.EADDRINUSE else "check --host (an address of this machine)"
            raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}; {hint}.") from None


_BAD_HTTP = ("the request is not valid HTTP/1.1 (a malformed request line, header or body framing, or headers "
             "over the size limit); the connection is closed.")


@functools.cache
def json_errors_protocol() -> type:
    """uvicorn's h11 protocol (what ``http="auto"`` is without httptools, pinned so the answer does not
    depend on what else is installed), answering a request it cannot parse with the app's JSON error body."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from frugalml.serve._app import error_body

    class JSONErrorsProtocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps(error_body("bad_request", _BAD_HTTP), separators=(",", ":")).encode("utf-8")
            headers = [*self.server_state.default_headers, (b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
            try:  # h11 refuses a response where HTTP allows none (the bad bytes came after the answer began)
                output = self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
                output += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
            except h11.LocalProtocolError:
                output = b""
            self.transport.write(output)
            self.transport.close()
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True  # the app's own answer to this request would break h11's state
                self.cycle.message_event.set()

    return JSONErrorsProtocol


def run_server(model_uri: str, *, host: str = "127.0.0.1", port: int = 8000, settings: ServerSettings | None = None,
               config: Any = None, log_level: str = "info", access_log: bool = False) -> None:
    """Load ``model_uri`` and serve it until interrupted."""
    import uvicorn

    from frugalml.serve._app import create_app

    settings = settings or ServerSettings()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    served = load_model(model_uri, settings.tracking_uri, settings.reference)
    config = as_monitoring_config(config if config is not None else served.monitoring)
    _check_port(host, port)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1") and settings.predict_token is None:
        logging.getLogger("frugalml.serve").warning(
            "serving on %s without --predict-token: anyone who can reach it can predict", host)
    app = create_app(served, settings, config)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    entry = {"pid": os.getpid(), "url": url, "model_uri": served.uri, "name": served.name, "version": served.version}
    record = servers_dir() / f"{os.getpid()}.json"
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(entry))
    except OSError:
        record = None
    interval = settings.poll_interval(served.uri)
    following = f", following its alias every {interval:g} s" if interval else ""
    print(f"frugalml: serving {served.uri} (version {served.version or '-'}) on {url}{following}", file=sys.stderr,
          flush=True)
    try:
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                                               server_header=False, log_config=None, http=json_errors_protocol()))
        server.run()
        if not server.started:
            raise FrugalError(f"the server did not start on {url}; see the log above.")
    finally:
        if record is not None:
            record.unlink(missing_ok=True)
