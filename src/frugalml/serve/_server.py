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
from frugalml.processes import stop_forkserver
from frugalml.serve._config import as_monitoring_config
from frugalml.serve._model import load_model, release, resolve_model
from frugalml.serve._settings import ServerSettings


def configure_logging(log_level: str, who: str = "", *, force: bool = False) -> None:
    """The server's log lines at ``log_level``. Called before the model loads: MLflow's PyTorch flavour
    calls ``logging.basicConfig(level=ERROR)`` when imported (``mlflow.pytorch._lightning_autolog``),
    which, first, left a torch model's server printing no warning at all (a worker that died, a
    server open to anyone). ``force``: in a worker, which inherits what the forkserver's imports set."""
    logging.basicConfig(level=log_level.upper(), format=f"%(asctime)s %(levelname)s %(name)s{who}: %(message)s",
                        force=force)


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


def _declared_chunk_bytes(conn: Any) -> int:
    """Bytes h11 still expects in the chunk it is reading (0 when not reading a chunked body).

    h11 has no public API for it: this reads ``Connection._reader._bytes_in_chunk``; should a
    later h11 rename them, the guard falls back to the app's body timeout
    (``tests/serve/test_transport_errors.py`` checks it still answers at once)."""
    return getattr(getattr(conn, "_reader", None), "_bytes_in_chunk", 0)


@functools.cache
def json_errors_protocol(max_body_bytes: int = 1 << 20) -> type:
    """uvicorn's h11 protocol (what ``http="auto"`` is without httptools, pinned so the answer does not
    depend on what else is installed), with three guards that each answer with the app's JSON error body:
    a request it cannot parse (400 ``bad_request``), a chunk declaring more than ``max_body_bytes``
    (413 ``too_large`` at once, not after the body timeout), and a client that half-closes the
    connection mid-request (400; one that half-closes after a whole request still gets its answer)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from frugalml.serve._app import error_body

    class JSONErrorsProtocol(H11Protocol):
        def answer(self, status: int, reason: bytes, kind: str, message: str) -> None:
            """Answer with a JSON error and close, whatever state the request is in."""
            body = json.dumps(error_body(kind, message), separators=(",", ":")).encode("utf-8")
            headers = [*self.server_state.default_headers, (b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
            try:  # h11 refuses a response where HTTP allows none (the bad bytes came after the answer began)
                output = self.conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
                output += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
            except h11.LocalProtocolError:
                output = b""
            self.transport.write(output)
            self.transport.close()
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True  # the app's own answer to this request would break h11's state
                self.cycle.message_event.set()

        def send_400_response(self, msg: str) -> None:
            self.answer(400, b"Bad Request", "bad_request", _BAD_HTTP)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            declared = _declared_chunk_bytes(self.conn)
            if declared > max_body_bytes and not self.transport.is_closing():
                self.answer(413, b"Content Too Large", "too_large", f"a chunk of the body declares more than the limit "
                                                                    f"of {max_body_bytes} bytes ({declared} still to come).")

        def eof_received(self) -> bool | None:
            state = self.conn.their_state
            if state is h11.SEND_BODY or (state is h11.IDLE and self.conn.trailing_data[0]):
                self.answer(400, b"Bad Request", "client_disconnected", "the client closed its side of the "
                                                                        "connection before the request was complete.")
                return None
            # a client that half-closes after a whole request (printf ... | nc) still reads the answer
            return True if state is h11.DONE and self.cycle is not None and not self.cycle.response_complete else None

    return JSONErrorsProtocol


def run_server(model_uri: str, *, host: str = "127.0.0.1", port: int = 8000, settings: ServerSettings | None = None,
               config: Any = None, log_level: str = "info", access_log: bool = False,
               workers: int | None = None, challenger: Any = None, ray: Any = None) -> None:
    """Load ``model_uri`` and serve it until interrupted: in this process, with ``workers``
    worker processes sharing one monitoring state (:mod:`frugalml.serve._supervisor`), or with Ray Serve
    replicas sharing one (``ray``, a :class:`~frugalml.serve._ray.RaySettings`). ``challenger``
    (:class:`~frugalml.serve._challenger.ChallengerSettings`): a second version in shadow or canary.
    With ``workers``, as with any :mod:`multiprocessing` use, a script calls it under
    ``if __name__ == "__main__":`` (each worker imports the script it was started from)."""
    import uvicorn

    from frugalml.serve._app import create_app

    settings = settings or ServerSettings()
    configure_logging(log_level)  # before the model: its flavour's import may configure logging its own way
    if ray is not None and settings.max_batch_size is not None:
        raise ConfigError("--max-batch-size works in one process or with --workers N, not yet with --backend ray; "
                          "leave it out there.")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    started_ray = False
    if ray is not None:  # the cluster is reachable and has room, before the model is even loaded
        from frugalml.serve._ray import connect_cluster

        started_ray = connect_cluster(ray)
    location, flavors = None, []
    if workers is not None:  # the workers' forkserver imports the serving stack while this process loads the model
        from frugalml.serve._supervisor import start_forkserver_for

        location = resolve_model(model_uri, settings.tracking_uri)
        flavors = start_forkserver_for(location.path)
    try:
        served = load_model(model_uri, settings.tracking_uri, settings.reference, location=location)
        config = as_monitoring_config(config if config is not None else served.monitoring)
        contender = None
        if challenger is not None:  # loaded and checked against the champion before anything listens
            from frugalml.serve._challenger import Challenger

            contender = Challenger(served, load_model(challenger.uri, settings.tracking_uri, settings.reference),
                                   challenger, settings.reference, config.quality_window)
        if ray is None:  # on Ray the proxy listens on the head node, maybe another machine
            _check_port(host, port)
    except BaseException:
        if workers is not None:
            stop_forkserver()
        raise
    if host not in ("127.0.0.1", "localhost", "::1") and settings.predict_token is None:
        logging.getLogger("frugalml.serve").warning(
            "serving on %s without --predict-token: anyone who can reach it can predict", host)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    entry = {"pid": os.getpid(), "url": url, "model_uri": served.uri, "name": served.name, "version": served.version}
    record = servers_dir() / f"{os.getpid()}.json"
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(entry))
    except OSError:
        record = None
    interval = 0 if workers is not None else settings.poll_interval(served.uri)
    following = f", following its alias every {interval:g} s" if interval else ""
    if workers is not None and settings.poll_interval(served.uri):
        following = " (not following its alias: --workers serves one version; restart to move)"
    processes = f" with {workers} worker{'s' * (workers != 1)}" if workers is not None else ""
    if ray is not None:
        processes = (f" with {ray.replicas}" + (f" to {ray.max_replicas}" if ray.max_replicas else "")
                     + f" Ray Serve replica{'s' * (ray.replicas != 1 or bool(ray.max_replicas))} on "
                     + (ray.address or "a local Ray"))

    def announce() -> None:
        print(f"frugalml: serving {served.uri} (version {served.version or '-'}) on {url}{processes}{following}",
              file=sys.stderr, flush=True)

    try:
        if ray is not None:
            from frugalml.serve._ray import run_replicas

            run_replicas(served, config, ray, host=host, port=port, settings=settings, started=announce,
                         started_ray=started_ray)
            return
        if workers is not None:
            from frugalml.serve._supervisor import run_workers

            run_workers(served, config, workers, host=host, port=port, settings=settings, flavors=flavors,
                        log_level=log_level, access_log=access_log, started=announce)
            return
        if contender is not None:
            contender.start()
            processes = (f", challenger {contender.settings.uri} (version {contender.version}) in "
                         f"{contender.settings.mode} mode" + (f" answering {contender.settings.share:g} of requests"
                                                              if contender.settings.mode == "canary" else ""))
        app = create_app(served, settings, config, challenger=contender)

        class Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started and not self.should_exit:
                    announce()  # once the socket listens: a client that waits for the line can connect

        server = Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                                       server_header=False, log_config=None, loop="asyncio",  # as workers
                                       http=json_errors_protocol(settings.max_body_bytes)))
        server.run()
        if not server.started:
            raise FrugalError(f"the server did not start on {url}; see the log above.")
    finally:
        release(served)  # a single process's app did at its shutdown; the workers' parent and Ray's driver here
        if record is not None:
            record.unlink(missing_ok=True)
