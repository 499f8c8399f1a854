"""Drop-ins that bring frugalml's system budgets to code already using Ray Tune or Optuna.

* :mod:`frugalml.integrations.ray_tune`: ``SystemBudgetStopper`` (a ``ray.tune.Stopper``)
  and ``with_system_metrics(trainable)``, which adds ``memory_mb``, ``mean_step_ms``,
  ``cpu_percent``... to whatever a trainable reports.
* :mod:`frugalml.integrations.optuna`: ``SystemBudgetPruner`` (an Optuna pruner) and
  ``SystemMetrics`` / ``instrument`` to measure an objective.

Neither needs a frugalml study; both sample the trial's process from a separate
sidecar process (:class:`Sidecar`), so the training process pays nothing per step.
This package imports neither Ray nor Optuna: import the submodule you need.
"""

from frugalml.integrations._sidecar import Sidecar, SystemSampler

__all__ = ["Sidecar", "SystemSampler"]
