"""Successive halving (ASHA) and Hyperband among the trials that fit the budgets.

Promotion is Optuna's :class:`~optuna.pruners.SuccessiveHalvingPruner`, asked on an
in-memory Optuna study built at each check from the workload's finished *feasible*
peers: a trial stopped for breaking a budget never occupies a rung, so it neither
takes a promotion slot nor raises the bar for the trials that fit. The peers are its
state (it remembers only each running trial's last window decided on, so windows that
arrive together are each decided), so it decides the same way in the driver, on a Ray
node, and after a resume.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Mapping, Sequence

from frugalml.exceptions import ConfigError
from frugalml.metrics import MAXIMISED, VAL_LOSS
from frugalml.records import StopInfo, TrialRecord
from frugalml.stopping._base import ML, StoppingRule, TrialView
from frugalml.validation import positive


def _rung_key(rung: int) -> str:
    return f"completed_rung_{rung}"  # SuccessiveHalvingPruner's own key (tests pin it)


def rung_values(values: Sequence[tuple[int, float]], first_rung: int, reduction_factor: int) -> dict[str, float]:
    """The value each rung recorded, as the pruner records it when asked at every window:
    rung ``k`` (at ``first_rung * reduction_factor**k`` steps) takes the value of the
    first window at or past it."""
    attrs: dict[str, float] = {}
    rung = 0
    for step, value in values:
        while step >= first_rung * reduction_factor**rung:
            attrs[_rung_key(rung)] = value
            rung += 1
    return attrs


class SuccessiveHalving(StoppingRule):
    """Asynchronous successive halving (ASHA; Li et al. 2020), or Hyperband with ``brackets > 1``.

    At each rung, ``min_steps * reduction_factor**(rate + k)`` steps into training, a
    trial goes on only if its ``metric`` is in the best ``1 / reduction_factor`` of the
    feasible trials that reached the rung. With ``brackets = B`` each configuration
    (all its repeats) is assigned to one of B brackets with early-stopping rates
    0..B-1, in Hyperband's proportions, and competes only inside it.

    Args:
        min_steps: steps to the first rung (default: the first evaluation window).
        reduction_factor: keep 1 in this many at each rung (η).
        brackets: 1 for ASHA, more for Hyperband.
        min_early_stopping_rate: skip this many rungs in every bracket.
        metric: the ML metric promoted on (``accuracy`` is maximised, others minimised).
    """

    name = "halving"
    kind = ML
    per_sample = False
    MEMO_SIZE = 4096

    def __init__(self, *, min_steps: int | None = None, reduction_factor: int = 3, brackets: int = 1,
                 min_early_stopping_rate: int = 0, metric: str = VAL_LOSS) -> None:
        if min_steps is not None:
            min_steps = int(positive("SuccessiveHalving", "min_steps", min_steps, integer=True))
        self.min_steps = min_steps
        if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, int) or reduction_factor < 2:
            raise ConfigError("The 'reduction_factor' parameter of SuccessiveHalving must be an int in the range "
                              f"[2, inf). Got {reduction_factor!r} instead.")
        self.reduction_factor = reduction_factor
        self.brackets = int(positive("SuccessiveHalving", "brackets", brackets, integer=True))
        if isinstance(min_early_stopping_rate, bool) or not isinstance(min_early_stopping_rate, int) \
                or min_early_stopping_rate < 0:
            raise ConfigError("The 'min_early_stopping_rate' parameter of SuccessiveHalving must be an int in the "
                              f"range [0, inf). Got {min_early_stopping_rate!r} instead.")
        self.min_early_stopping_rate = min_early_stopping_rate
        if not isinstance(metric, str) or not metric:
            raise ConfigError(f"The 'metric' parameter of SuccessiveHalving must be a metric name. Got {metric!r} instead.")
        self.metric = metric
        self.direction = "maximize" if metric in MAXIMISED else "minimize"
        self._frozen: dict[tuple[str, int], Any] = {}  # (trial id, first rung) -> FrozenTrial; peers are final
        self._decided: dict[str, int] = {}  # running trial id -> the last window step decided on

    @classmethod
    def from_config(cls, value: Any) -> SuccessiveHalving | None:
        """``halving = true`` or ``halving = {min_steps = 100, reduction_factor = 3, brackets = 1}``."""
        if value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, Mapping):
            return cls(**value)
        raise ConfigError(f"[stopping] halving must be true, false or a table of settings. Got {value!r} instead.")

    # -- brackets -----------------------------------------------------------------------

    def bracket(self, trial_id: str) -> int:
        """The bracket of a trial's configuration (its repeats share it), in Hyperband's
        proportions: bracket ``i`` gets ``ceil(B * η**s / (s + 1))`` shares, ``s = B - 1 - i``."""
        if self.brackets == 1:
            return 0
        shares = [math.ceil(self.brackets * self.reduction_factor ** (self.brackets - 1 - i) / (self.brackets - i))
                  for i in range(self.brackets)]
        position = zlib.crc32(trial_id.rsplit("/", 1)[0].encode()) % sum(shares)
        for bracket, share in enumerate(shares):
            if position < share:
                return bracket
            position -= share
        return self.brackets - 1

    def first_rung(self, trial_id: str, eval_every: int) -> int:
        """Steps to the first rung of the trial's bracket."""
        rate = self.min_early_stopping_rate + self.bracket(trial_id)
        return (self.min_steps or eval_every) * self.reduction_factor**rate

    # -- the decision -------------------------------------------------------------------

    def _values(self, windows: Sequence[Any]) -> list[tuple[int, float]]:
        return [(w.step, float(w.values[self.metric])) for w in windows
                if self.metric in w.values and math.isfinite(w.values[self.metric])]

    def _peer(self, peer: TrialRecord, first_rung: int) -> Any:
        import optuna

        key = (peer.trial_id, first_rung)
        frozen = self._frozen.get(key)
        if frozen is None:
            if len(self._frozen) >= self.MEMO_SIZE:
                self._frozen.clear()
            values = self._values(peer.windows)
            frozen = self._frozen[key] = optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED, intermediate_values=dict(values),
                system_attrs=rung_values(values, first_rung, self.reduction_factor),
            )
        return frozen

    def competitors(self, view: TrialView) -> list[TrialRecord]:
        """Finished peers that compete with ``view``'s trial: feasible ones of its bracket."""
        bracket = self.bracket(view.trial_id)
        return [p for p in view.peers if p.feasible and p.trial_id != view.trial_id
                and self.bracket(p.trial_id) == bracket]

    def check(self, view: TrialView) -> StopInfo | None:
        values = self._values(view.windows)
        if not values or not view.windows or values[-1][0] != view.windows[-1].step:
            return None  # no metric yet, or the latest one is not finite (Divergence's business)
        # windows can arrive together on a busy machine: decide at each one not yet seen, in
        # order, so no rung is skipped (the only per-trial memory: the last window decided)
        if len(self._decided) >= self.MEMO_SIZE:
            self._decided.clear()
        last = self._decided.get(view.trial_id, 0)
        self._decided[view.trial_id] = values[-1][0]
        for end, (step, _) in enumerate(values, start=1):
            if step > last and (stop := self._decide(view, values[:end])) is not None:
                return stop
        return None

    def _decide(self, view: TrialView, values: list[tuple[int, float]]) -> StopInfo | None:
        first_rung = self.first_rung(view.trial_id, view.eval_every)
        if values[-1][0] < first_rung:
            return None
        import optuna

        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line per check
        try:
            study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction=self.direction,
                                        sampler=optuna.samplers.RandomSampler())
        finally:
            optuna.logging.set_verbosity(level)
        peers = self.competitors(view)
        study.add_trials([self._peer(p, first_rung) for p in peers])
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, intermediate_values=dict(values),
            system_attrs=rung_values(values[:-1], first_rung, self.reduction_factor),
        ))
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first_rung, reduction_factor=self.reduction_factor, min_early_stopping_rate=0,
        )
        if not pruner.prune(study, study.get_trials(deepcopy=False)[-1]):
            return None
        mine = study.get_trials(deepcopy=False)[-1].system_attrs
        rung = max(int(k.rsplit("_", 1)[1]) for k in mine if k.startswith("completed_rung_"))
        at_rung = sorted(t.system_attrs[_rung_key(rung)] for t in study.get_trials(deepcopy=False)
                         if _rung_key(rung) in t.system_attrs)
        keep = max(1, len(at_rung) // self.reduction_factor)
        cutoff = at_rung[keep - 1] if self.direction == "minimize" else at_rung[-keep]
        value = mine[_rung_key(rung)]
        return self._stop(
            view, value, cutoff,
            f"{self.metric} {value:.4g} at rung {rung} ({first_rung * self.reduction_factor**rung} steps) is not in "
            f"the best {keep} of {len(at_rung)} feasible trials there (cutoff {cutoff:.4g})",
        )

    def __repr__(self) -> str:
        return (f"SuccessiveHalving(min_steps={self.min_steps!r}, reduction_factor={self.reduction_factor}, "
                f"brackets={self.brackets}, min_early_stopping_rate={self.min_early_stopping_rate}, "
                f"metric={self.metric!r})")
