"""Measuring on a Ray node that offers the envelope's resources (the device class a model ships to).

Training runs wherever Ray places it; a measurement asks for ``[deploy] resources`` (a
custom resource such as ``edge``, which only the target nodes offer) and the envelope's
cores, so it runs on such a node. The model's files go with the task, so the node needs
nothing of the trial's folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from frugalml.deploy._envelope import Deploy
from frugalml.deploy._measure import MeasurementError, run_probe
from frugalml.exceptions import ConfigError, one_line


def check_resources(deploy: Deploy) -> None:
    """A one-line ConfigError when no node of the connected cluster offers ``deploy.resources``."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    offering = [n for n in nodes if all(n.get("Resources", {}).get(k, 0) >= v for k, v in deploy.resources.items())]
    if not offering:
        wanted = ", ".join(f"{k} = {v:g}" for k, v in deploy.resources.items())
        raise ConfigError(f"[deploy] resources ({wanted}) are offered by none of the cluster's {len(nodes)} nodes; "
                          "start the target node with `ray start --address ... --resources '{\"NAME\": 1}'`, "
                          "or drop resources to measure on this machine.")


def _files(spec: Mapping[str, Any]) -> dict[str, bytes]:
    if spec.get("kind") != "saved":
        return {}
    return {f.name: f.read_bytes() for f in Path(spec["model_dir"]).iterdir() if f.is_file()}


def _measure_on_node(spec: dict[str, Any], deploy: Deploy, rows: Any, files: dict[str, bytes]) -> Any:
    import socket

    import ray

    with tempfile.TemporaryDirectory(prefix="frugalml-model-") as tmp:
        if files:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            spec = {**spec, "model_dir": tmp}
        cost = run_probe(spec, deploy, rows=rows)
    where = {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}
    return [{**c, **where} for c in cost] if isinstance(cost, list) else {**cost, **where}


def on_ray(deploy: Deploy) -> Callable[..., dict[str, Any]]:
    """A :func:`~frugalml.deploy.run_probe` that runs on a node offering ``deploy.resources``."""
    import ray

    check_resources(deploy)
    remote = ray.remote(_measure_on_node).options(resources=dict(deploy.resources), num_cpus=deploy.cores,
                                                  max_retries=0)

    def run(spec: Mapping[str, Any], envelope: Deploy, *, rows: Any = None) -> Any:
        ref = remote.remote(dict(spec), envelope, rows, _files(spec))
        try:
            return ray.get(ref, timeout=envelope.timeout_s + 60)  # + placement and the node's start-up
        except MeasurementError:
            raise
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            raise MeasurementError(f"no measurement from a node with {dict(envelope.resources)} within "
                                   f"{envelope.timeout_s + 60:g} s") from None
        except ray.exceptions.RayTaskError as error:
            cause = error.as_instanceof_cause()
            if isinstance(cause, MeasurementError):
                raise MeasurementError(one_line(cause, last=True)) from None
            raise MeasurementError(f"measuring on the Ray node failed: {one_line(error, last=True)}") from None

    return run
