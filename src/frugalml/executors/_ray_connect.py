"""Connecting to a Ray cluster (or starting a local Ray), failing fast on an address that is none."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from typing import Any, Iterator, Mapping

import psutil

from frugalml.exceptions import ConfigError, one_line

_INSTALL = "pip install 'frugalml[ray]'"
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS frame


def import_ray() -> Any:
    """``ray``, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"The Ray backend needs Ray; install it with: {_INSTALL}") from None
    return ray


def connect(address: str | None, num_cpus: int, runtime_env: Mapping[str, Any] | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray with ``num_cpus`` CPUs.

    An already initialised Ray is reused as it is, unless ``address`` names another cluster
    (a one-line :class:`ConfigError`, not a study on the wrong cluster). Returns True when
    this call initialised Ray.
    """
    ray = import_ray()
    if ray.is_initialized():
        _check_same_cluster(address, ray.get_runtime_context().gcs_address)
        return False
    options: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.WARNING)
    if runtime_env:
        options["runtime_env"] = dict(runtime_env)
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **options)
        return True
    _check_reachable(address)
    try:
        ray.init(address=address, **options)
    except Exception as error:  # noqa: BLE001 - ray.init raises many kinds; each means a bad address or set-up
        causes = f"{error} {error.__cause__}"
        hint = (
            "the cluster uses token authentication: set RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN)"
            if "Authentication" in causes or "AuthToken" in causes
            else "check --address (see `ray status` on the head node)"
        )
        raise ConfigError(f"Cannot connect to the Ray cluster at {address!r}: {one_line(error)}; {hint}.") from None
    return True


@contextlib.contextmanager
def shared_connection(backend: str, address: str | None, num_cpus: int) -> Iterator[None]:
    """For studies run in turn on ``backend``, what they can share: on Ray, one connection, which
    each reuses as it would a Ray its caller initialised, so they run in the same Ray job (its
    workers stay up between studies) and a local Ray starts once, not once a study; closed at the
    end if this call made it. Nothing on the local backend."""
    if backend != "ray":
        yield
        return
    started = connect(address, num_cpus)
    try:
        yield
    finally:
        if started:
            import_ray().shutdown()


def _check_same_cluster(address: str | None, current: str | None) -> None:
    """Refuse ``address`` (``host:port``) when the Ray this process initialised is another cluster's."""
    given, now = _host_port(address or ""), _host_port(current or "")
    if given is None or now is None or address.startswith("ray://"):
        return  # none, "auto", "local" or Ray Client: whatever Ray this process has is the one meant
    if given[1] == now[1] and _machine(given[0]) == _machine(now[0]):
        return
    raise ConfigError(f"Ray is already initialised in this process, connected to the cluster at {current}, not "
                      f"{address!r}: call ray.shutdown() first, or leave the address out to use that cluster.")


def _machine(host: str) -> str:
    """``host``'s address, or "this machine" for any of its own, IPv4 or IPv6 (Ray reports a local
    head node by its interface address where the user wrote 127.0.0.1, localhost or [::1])."""
    def unscoped(address: str) -> str:
        return address.split("%")[0]  # fe80::1%eth0

    try:
        addresses = {unscoped(info[4][0])
                     for info in socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)}
    except OSError:
        return host
    own = {unscoped(a.address) for nic in psutil.net_if_addrs().values() for a in nic}
    if any(ipaddress.ip_address(a).is_loopback or a in own for a in addresses):
        return "this machine"
    return min(addresses)


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``[ray://]HOST:PORT``, or None for anything else ("auto", "local")."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _check_reachable(address: str) -> None:
    """Fail fast on an unreachable ``host:port``: ``ray.init`` would retry for a minute."""
    if (parsed := _host_port(address)) is None:
        if address in ("auto", "local"):
            return
        raise ConfigError(f"Ray address must look like 'HOST:PORT' (or 'auto'). Got {address!r} instead.")
    host, port = parsed
    why = _grpc_answer(host.strip("[]"), port)
    if why is not None:
        raise ConfigError(
            f"Cannot reach a Ray cluster at {address!r} ({why}); start one with `ray start --head` or fix --address."
        )


def _grpc_answer(host: str, port: int, timeout_s: float = 5.0) -> str | None:
    """Why ``host:port`` is not a gRPC server (Ray's GCS and Ray Client are), or None.

    A gRPC server answers the HTTP/2 preface with a SETTINGS frame at once; a port that
    accepts and never answers (a firewall, a stopped process) or speaks another protocol
    (the dashboard's HTTP port) would keep ``ray.init`` retrying for minutes.
    """
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")  # then only the connection is checked
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            if tls:
                return None
            connection.settimeout(timeout_s)
            connection.sendall(_HTTP2_PREFACE)
            header = connection.recv(9)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as error:
        return error.strerror or str(error)
    if len(header) >= 4 and header[3] == 4:  # frame type 4: SETTINGS
        return None
    if not header:
        return "it closed the connection"
    return "it answers, but not as a Ray cluster: the dashboard's port? use the one `ray start --head` printed"
