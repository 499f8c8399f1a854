"""What a model will cost to serve: latency, throughput, size and inference memory.

A study's serving budgets (``max_predict_ms``, ``min_throughput_rows_s``,
``max_model_mb``, ``max_predict_memory_mb`` in ``[budget]``) are measured in a fresh
process under its ``[deploy]`` envelope (cores, threads, batch size, quantile, calls):
before training for built-in models, whose serving cost does not depend on their
weights (a configuration that cannot ship costs a second, not a training run), and on
the model a user's trial keeps with ``trial.log_model`` once it has trained.

Example::

    deploy = Deploy.from_config({"cores": 1, "batch_size": 1, "quantile": 0.99})
    cost = run_probe({"kind": "saved", "model_dir": "studies/s/artifacts/trial-00003/model"}, deploy)
    cost["predict_ms"], cost["model_mb"]
"""

from frugalml.deploy._envelope import Deploy, machine_cores
from frugalml.deploy._judge import ARCHITECTURE, LOG_MODEL_HINT, ServingJudge
from frugalml.deploy._measure import MeasurementError, run_probe, verdict
from frugalml.deploy._slo import SLO_TAG, Slo, SloCheck


def on_ray(deploy: Deploy):  # noqa: ANN201 - lazy: Ray is imported only for a study that measures on it
    """A measuring function that runs on a Ray node offering ``deploy.resources``."""
    from frugalml.deploy._ray import on_ray as on_ray_node

    return on_ray_node(deploy)

__all__ = ["ARCHITECTURE", "Deploy", "LOG_MODEL_HINT", "MeasurementError", "SLO_TAG", "ServingJudge", "Slo", "SloCheck",
           "machine_cores", "on_ray", "run_probe", "verdict"]
