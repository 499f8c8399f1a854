"""Drop-ins that bring frugalml's system budgets to code already using Ray Tune or Optuna.

* :mod:`frugalml.integrations.ray_tune`: ``SystemBudgetStopper`` (a ``ray.tune.Stopper``)
  and ``with_system_metrics(trainable)``, which adds ``memory_mb``, ``mean_step_ms``,
  ``cpu_percent``... to whatever a trainable reports.
* :mod:`frugalml.integrations.optuna`: ``SystemBudgetPruner`` (an Optuna pruner) and
  ``SystemMetrics`` / ``instrument`` to measure an objective.

Neither needs a frugalml study; both sample the trial's process from a separate
sidecar process (:class:`Sidecar`), so the training process pays nothing per step.

Framework adapters, thin layers over ``trial.step``/``trial.report``/``trial.plan`` for a
training function run by :func:`frugalml.tune`: :mod:`~frugalml.integrations.torch`
(``Batches`` for a plain loop), :mod:`~frugalml.integrations.lightning`,
:mod:`~frugalml.integrations.keras`, :mod:`~frugalml.integrations.transformers`,
:mod:`~frugalml.integrations.xgboost` and :mod:`~frugalml.integrations.lightgbm`
(``FrugalmlCallback``), and :mod:`~frugalml.integrations.sklearn` (``fit`` for
estimators without ``partial_fit``). This package imports none of the frameworks:
import the submodule you need.
"""

from frugalml.integrations._sidecar import Sidecar, SystemSampler

__all__ = ["Sidecar", "SystemSampler"]
