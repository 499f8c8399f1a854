"""A registered model's service-level objective: the serving budgets it was tuned under.

The budgets a study held its trials to (``max_predict_ms = 2`` under ``[deploy]``) travel
with the model it registers, as the version's ``frugalml.slo`` tag; ``frugalml check``
fails a candidate that breaks them, and ``frugalml serve`` exposes them and alerts when
live traffic does.

Example:
    >>> slo = Slo.of_study({"max_predict_ms": 2, "max_memory_mb": 500}, {"quantile": 0.95})
    >>> slo.limits, slo.quantile
    ({'max_predict_ms': 2.0}, 0.95)
    >>> [c.broken for c in slo.check({"predict_ms": 3.1})]
    [True]
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from typing import Any, Mapping

from frugalml.budgets import BUDGETS, serving
from frugalml.deploy._envelope import Deploy
from frugalml.exceptions import ConfigError

SLO_TAG = "frugalml.slo"


@dataclass(frozen=True)
class SloCheck:
    """One serving budget against what was measured (``value`` None: not measured there)."""

    key: str
    limit: float
    value: float | None

    @property
    def broken(self) -> bool:
        return self.value is not None and BUDGETS[self.key].breaks(self.value, self.limit)

    @property
    def line(self) -> str:
        b = BUDGETS[self.key]
        if self.value is None:
            return f"{self.key}: {b.what} not measured here (SLO {self.limit:g} {b.unit})"
        side = ("<" if b.floor else ">") if self.broken else ("≥" if b.floor else "≤")
        return f"{self.key}: {b.what} {self.value:.4g} {b.unit} {side} SLO {self.limit:g} {b.unit}"

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.key, "limit": self.limit, "value": self.value, "broken": self.broken}


@dataclass(frozen=True)
class Slo:
    """Serving budgets (``limits``, by budget key) and the envelope they were measured under
    (``deploy``, as recorded: a :class:`Deploy`'s fields, defaults filled in)."""

    limits: Mapping[str, float]
    deploy: Mapping[str, Any]

    @classmethod
    def of_study(cls, budget: Mapping[str, Any] | None, deploy: Mapping[str, Any] | None) -> Slo | None:
        """The SLO of a study's ``[budget]`` and ``[deploy]`` tables; None without serving budgets."""
        limits = serving(dict(budget or {}))
        if not limits:
            return None
        recorded = {f.name: f.default for f in fields(Deploy) if f.default is not MISSING}
        return cls(limits, {**recorded, **dict(deploy or {})})

    @property
    def quantile(self) -> float:
        """The latency quantile ``max_predict_ms`` limits."""
        return float(self.deploy.get("quantile", 0.99))

    @classmethod
    def from_json(cls, text: str | None) -> Slo | None:
        """The SLO a model version's tag holds; None for none (or a tag this version cannot read)."""
        try:
            data = json.loads(text) if text else None
            return cls.of_study(data.get("budget"), data.get("deploy")) if isinstance(data, dict) else None
        except (ValueError, ConfigError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps({"budget": dict(self.limits), "deploy": dict(self.deploy)}, sort_keys=True, default=str)

    def check(self, measured: Mapping[str, float | None]) -> list[SloCheck]:
        """Each budget against ``measured`` (keyed by metric: ``predict_ms``, ``model_mb``, ...)."""
        return [SloCheck(key, float(limit), None if (v := measured.get(BUDGETS[key].metric)) is None else float(v))
                for key, limit in self.limits.items()]
