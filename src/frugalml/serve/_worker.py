"""One worker process of ``frugalml serve --workers N``: loads the model and serves HTTP.

Started by :mod:`frugalml.serve._supervisor` with :mod:`multiprocessing` (:func:`run` and a
:class:`WorkerSpec`), forked from a forkserver that imported the serving stack once. It never
outlives its parent: on Linux the kernel sends it SIGKILL when the forkserver dies, which dies
with the parent (``prctl(PR_SET_PDEATHSIG)``), and everywhere a thread waiting on the parent's
sentinel ends it once the parent is gone. Every worker listens on the same port with
``SO_REUSEPORT``, so the kernel spreads connections over them.
"""

from __future__ import annotations

import signal
import socket

from frugalml.processes import die_with_parent, exit_with_parent
from frugalml.serve._messages import WorkerSpec


def _listen(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle off (TCP_NODELAY) only on connections accepted from a
    # socket whose proto says TCP; with it on, a response's second write waited for the client's delayed ACK
    # (~40 ms a keep-alive request: 21 req/s on one connection against 330 for the one-process server)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def run(spec: WorkerSpec) -> None:
    """The worker's life: load the model, serve until SIGTERM (or SIGINT)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the forkserver ignores it; a worker stops on it
    die_with_parent(spec.parent_pid)
    exit_with_parent()
    import uvicorn

    from frugalml.serve._app import create_app
    from frugalml.serve._model import load_model
    from frugalml.serve._remote import HubLink
    from frugalml.serve._server import configure_logging, json_errors_protocol

    configure_logging(spec.log_level, f"[worker {spec.index}]", force=True)

    settings, config = spec.settings, spec.config
    # the parent's version, from where it found it: no registry to open again (~1.1 CPU-s), nor an alias that moved
    # and the parent's fingerprint (of a --reference table: not read and predicted again, nor changed since)
    served = load_model(spec.model_uri, settings.tracking_uri, spec.reference, location=spec.location)
    sock = _listen(spec.host, spec.port)
    hub = HubLink(spec.index, spec.address, spec.authkey,
                  monitored=config.enabled and served.reference.has_statistics)
    app = create_app(served, settings, config, hub=hub)
    # loop pinned as http is, so a server runs the one tested path whether or not uvloop is installed
    # (ray[serve] brings it); "auto" would pick it
    server = uvicorn.Server(uvicorn.Config(app, log_level=spec.log_level, access_log=spec.access_log,
                                           server_header=False, log_config=None, loop="asyncio",
                                           http=json_errors_protocol(settings.max_body_bytes)))
    try:
        server.run(sockets=[sock])
    finally:
        hub.stop()
