"""``frugalml serve MODEL --backend ray``: replicas on a Ray cluster, one monitoring state.

Three parts, each reusing what ``--workers N`` runs:

- the **driver** (this process, :func:`run_replicas`): checks the cluster can place the replicas,
  starts the hub actor, deploys the app with Ray Serve (one HTTP proxy, on the head node), and
  polls a ``models:/NAME@ALIAS`` model's alias; when it moves, it points the hub at the new
  version and redeploys: Ray Serve replaces the replicas one at a time, each old one answering
  until it has drained, so no request fails. On SIGTERM or Ctrl-C it deletes the app.
- the **hub actor** (:class:`HubActor`): the one :class:`~frugalml.serve._hub.Hub` (drift, quality,
  alerts, prediction ids, summed counters), served on a TCP listener of its node with a random
  key, since replicas may run on other machines.
- each **replica** (:class:`Replica`): loads the exact version (``models:/NAME/VERSION``, so every
  replica and the hub agree while the alias moves), links to the hub with a
  :class:`~frugalml.serve._remote.HubLink` and serves :func:`~frugalml.serve._app.create_app`'s
  routes (frugalml, Open Inference Protocol v2, MLflow scoring) through Ray Serve's ingress.

Ray is imported only here, lazily: a missing extra is a one-line error with the install command.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import signal
import threading
from dataclasses import dataclass, replace
from multiprocessing.connection import Listener
from typing import Any, Callable

from frugalml.exceptions import ConfigError, one_line
from frugalml.serve._config import MonitoringConfig
from frugalml.serve._hub import Hub, serve_hub
from frugalml.serve._model import ServedModel, load_model, release
from frugalml.serve._reference import Reference
from frugalml.serve._settings import ServerSettings, registry_alias

logger = logging.getLogger("frugalml.serve")
APP_NAME = "frugalml"  # the Ray Serve application; one frugalml server per cluster (the proxy's port is the cluster's)
REPLICA_CPUS = 1.0  # a replica answers on one event loop: one core is what it can use
_INSTALL = "pip install 'frugalml[ray]'"


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide ``--backend ray`` serves.

    Args:
        address: the Ray cluster (``HOST:PORT`` of its head, ``auto``); None: start a local Ray.
        replicas: replicas to start with (each takes ``REPLICA_CPUS`` CPUs).
        max_replicas: with it, Ray Serve scales between ``replicas`` and this on load (None: fixed).
    """

    address: str | None
    replicas: int = 1
    max_replicas: int | None = None


def ray_settings(backend: str, address: str | None, replicas: int | None, max_replicas: int | None,
                 workers: int | None = None, challenger: Any = None) -> RaySettings | None:
    """The one place ``--backend``, ``--address``, ``--replicas`` and ``--max-replicas`` become settings
    (None: not on Ray); a one-line :class:`ConfigError` for a combination that cannot work."""
    if backend != "ray":
        given = [flag for flag, value in (("--address", address), ("--replicas", replicas),
                                          ("--max-replicas", max_replicas)) if value is not None]
        if given:
            raise ConfigError(f"{given[0]} is for --backend ray; add --backend ray (or --workers N for local "
                              "worker processes).")
        return None
    if workers is not None:
        raise ConfigError("--workers and --backend ray exclude each other: on Ray, ask for --replicas N.")
    if challenger is not None:
        raise ConfigError("--challenger is not supported with --backend ray yet; serve the comparison from one process.")
    replicas = 1 if replicas is None else replicas
    if max_replicas is not None and max_replicas < replicas:
        raise ConfigError(f"--max-replicas must be at least --replicas ({replicas}). Got {max_replicas} instead.")
    return RaySettings(address, replicas, max_replicas)


def import_serve() -> Any:
    """``ray.serve``, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        return importlib.import_module("ray.serve")
    except ImportError:
        raise ConfigError(f"--backend ray needs Ray Serve; install it with: {_INSTALL}") from None


def connect_cluster(settings: RaySettings) -> bool:
    """Connect to the cluster (or start a local Ray) and check it can place the replicas, before
    anything starts; returns True when this call started Ray."""
    import_serve()
    # the Ray executor's connection: the same fast refusal of an unreachable address, the same hints
    from frugalml.executors import connect_ray

    started = connect_ray(settings.address, num_cpus=int(settings.max_replicas or settings.replicas))
    import ray

    check_placement(ray.nodes(), ray.available_resources(), settings.replicas)
    return started


def check_placement(nodes: list[dict], available: dict[str, float], replicas: int,
                    cpus: float = REPLICA_CPUS) -> None:
    """A one-line :class:`ConfigError` when ``replicas`` replicas of ``cpus`` CPUs each cannot all be
    placed: by the nodes' sizes (``ray.nodes()``), or by what is free now (``ray.available_resources()``)."""
    alive = [node for node in nodes if node.get("Alive")]
    fits = sum(int(node.get("Resources", {}).get("CPU", 0.0) // cpus) for node in alive)
    if replicas > fits:
        raise ConfigError(f"--replicas {replicas} needs {replicas} replicas of {cpus:g} CPU each, but the cluster's "
                          f"{len(alive)} node{'s' * (len(alive) != 1)} can place {fits}; ask for fewer replicas or "
                          "add nodes.")
    free = available.get("CPU", 0.0)
    if replicas * cpus > free:
        raise ConfigError(f"--replicas {replicas} needs {replicas * cpus:g} free CPUs, but only {free:g} of the "
                          "cluster's are free now (other work holds the rest); ask for fewer replicas or wait.")


def pinned_uri(served: ServedModel) -> str:
    """The URI of exactly the version ``served`` is: ``models:/NAME/VERSION`` for an alias."""
    alias = registry_alias(served.uri)
    return f"models:/{alias[0]}/{served.version}" if alias and served.version else served.uri


def _load_pinned(uri: str, shown: str, settings: ServerSettings, reference: Reference | None = None) -> ServedModel:
    """``reference``: the driver's fingerprint (of a ``--reference`` table too: no replica reads the table
    and predicts on it again, nor gets another fingerprint from a table changed since), as a worker of
    ``--workers N`` takes its parent's."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return replace(load_model(uri, settings.tracking_uri, reference or settings.reference), uri=shown)


class HubActor:
    """The :class:`Hub` in a Ray actor, answering replicas on a TCP listener of its node.

    Args:
        uri: the exact version to monitor (:func:`pinned_uri`); ``shown`` the URI served (its alias).
        authkey: the key replicas present (handed to them with the deployment).
    """

    def __init__(self, uri: str, shown: str, settings: ServerSettings, config: MonitoringConfig,
                 authkey: bytes, reference: Reference | None = None) -> None:
        import ray

        from frugalml.serve._server import configure_logging

        configure_logging("warning", " [hub]", force=True)  # a flavour's import may have configured it already
        self.settings, self.shown = settings, shown
        self.hub = Hub(_load_pinned(uri, shown, settings, reference), config, settings.max_feature_series)
        self.listener = Listener((ray.util.get_node_ip_address(), 0), family="AF_INET", authkey=authkey)
        self.stopped = threading.Event()
        serve_hub(self.hub, self.listener, self.stopped)

    def address(self) -> tuple[str, int]:
        return self.listener.address

    def follow(self, uri: str, reference: Reference | None = None) -> str:
        """Monitor the version at ``uri`` from now on; returns that version."""
        served, replaced = _load_pinned(uri, self.shown, self.settings, reference), self.hub.served
        self.hub.follow(served)
        release(replaced)  # a remote model's copy on this node: the hub keeps what it needs in memory
        return served.version

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.hub.stop()
        release(self.hub.served)  # here: the driver's ray.kill that follows runs no exit hook


class Replica:
    """One Ray Serve replica: the model, a link to the hub actor, and the app's routes.

    Ray Serve builds the app with :meth:`__serve_build_asgi_app__` after the constructor and runs its
    lifespan (which ships what the replica saw to the hub every ``FLUSH_S``); when the replica is
    stopped (a redeploy, a scale-down, the server's end), Ray Serve lets its requests finish first,
    then :meth:`__del__` ships the last counters, so the summed totals stay exact.
    """

    def __init__(self, uri: str, shown: str, settings: ServerSettings, config: MonitoringConfig,
                 address: tuple[str, int], authkey: bytes, reference: Reference | None = None) -> None:
        import ray
        from ray import serve

        from frugalml.serve._remote import HubLink

        self.served = _load_pinned(uri, shown, settings, reference)
        self.settings, self.config = settings, config
        rank = serve.get_replica_context().rank
        self.link = HubLink(int(getattr(rank, "rank", rank) or 0), address, authkey,
                            monitored=config.enabled and self.served.reference.has_statistics,
                            node=ray.get_runtime_context().get_node_id())

    def __serve_build_asgi_app__(self) -> Any:
        from frugalml.serve._app import create_app

        return create_app(self.served, self.settings, self.config, hub=self.link)

    def __del__(self) -> None:
        link = getattr(self, "link", None)
        if link is not None:
            link.process()
            link.stop()


def _deployment(serve: Any, settings: RaySettings) -> Any:
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": REPLICA_CPUS}, "graceful_shutdown_timeout_s": 10}
    if settings.max_replicas is None:
        options["num_replicas"] = settings.replicas
    else:
        options["autoscaling_config"] = {"min_replicas": settings.replicas, "initial_replicas": settings.replicas,
                                         "max_replicas": settings.max_replicas}
    return serve.deployment(serve.ingress()(Replica), name="frugalml-model", **options)


def _moved_to(served: ServedModel, settings: ServerSettings, reported: list[str | None]) -> ServedModel | None:
    """The version the served alias points at now, loaded, when it moved; None when it did not (or
    cannot be read: logged once per distinct error, and the current version keeps serving)."""
    from frugalml.serve._app import _alias_version

    alias = registry_alias(served.uri)
    assert alias is not None
    try:
        version = _alias_version(settings.tracking_uri, *alias)
        if version == served.version:
            reported[0] = None
            return None
        new = _load_pinned(f"models:/{alias[0]}/{version}", served.uri, settings)
        release(new)  # loaded to check it loads; the driver serves nothing, the replicas load their own
    except Exception as error:  # noqa: BLE001 - the registry's or the model's: keep serving the old one
        message = one_line(error, typed=True)
        if message != reported[0]:
            logger.warning("cannot follow %s (still serving version %s): %s", served.uri, served.version or "-",
                           message)
            reported[0] = message
        return None
    reported[0] = None
    return new


def run_replicas(served: ServedModel, config: MonitoringConfig, ray_settings: RaySettings, *, host: str, port: int,
                 settings: ServerSettings, started: Callable[[], None] | None = None,
                 started_ray: bool = False) -> None:
    """Serve ``served`` (loaded, to fail early) with Ray Serve replicas until SIGTERM or Ctrl-C; Ray is
    connected (:func:`connect_cluster`). ``started()`` is called once every replica answers."""
    import ray

    serve = import_serve()
    worker_settings = replace(settings, poll_registry_s=0)  # the driver follows the alias for every replica
    authkey = secrets.token_bytes(32)
    uri = pinned_uri(served)  # every replica and the hub load exactly this version
    hub = ray.remote(num_cpus=0, max_restarts=0)(HubActor).remote(uri, served.uri, worker_settings, config, authkey,
                                                                  served.reference)
    address = ray.get(hub.address.remote())
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    deployment = _deployment(serve, ray_settings)
    deployed = False
    try:
        serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
        serve.run(deployment.bind(uri, served.uri, worker_settings, config, address, authkey,
                                  served.reference), name=APP_NAME, route_prefix="/")
        deployed = True
        if started is not None:
            started()
        interval = settings.poll_interval(served.uri)
        reported: list[str | None] = [None]
        while not stop.wait(interval or 3600):
            new = _moved_to(served, settings, reported) if interval else None
            if new is None:
                continue
            try:  # a rolling update: one replica at a time, each old one drained first
                serve.run(deployment.bind(pinned_uri(new), served.uri, worker_settings, config, address, authkey,
                                          new.reference), name=APP_NAME, route_prefix="/")
                ray.get(hub.follow.remote(pinned_uri(new), new.reference))
            except Exception as error:  # noqa: BLE001 - Ray's: keep the driver (and what still serves) up
                logger.error("could not move %s to version %s: %s", served.uri, new.version, error)
                continue
            logger.info("%s moved: now serving version %s (was %s)", served.uri, new.version, served.version or "-")
            served = new
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        try:
            if deployed:
                serve.delete(APP_NAME)
            ray.get(hub.close.remote(), timeout=10)
        except Exception as error:  # noqa: BLE001 - the cluster may be gone already; nothing left to stop then
            logger.warning("could not stop the Ray Serve app cleanly: %s", error)
        ray.kill(hub)
        if started_ray:
            ray.shutdown()

