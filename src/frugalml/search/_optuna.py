"""Optuna's samplers (random, TPE, GP, NSGA-II) behind :class:`~frugalml.search.Sampler`; imported only when a study uses one."""

from __future__ import annotations

import contextlib
import math
import random
import re
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import optuna

from frugalml.budgets import per_config
from frugalml.prediction import constraint_values
from frugalml.records import TrialRecord, TrialStatus
from frugalml.search._samplers import Config, Cost, Sampler, Screen, Search, objective_values
from frugalml.search._space import config_id, fixed_values, to_distributions

#: Trial.set_constraint is Optuna >= 5; older Optuna gets plain search
CONSTRAINED = hasattr(optuna.trial.Trial, "set_constraint")


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The GP's fitting on one thread: the driver shares the machine with the trials' workers,
    and a second intra-op thread spins on a busy core (a 30-trial study beside two busy
    processes: 104 s and 33 CPU-s of proposals against 20 s and 18 CPU-s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _another_stream(seed: int) -> int:
    """A seed for a random stream independent of the one ``seed`` starts."""
    return int(np.random.SeedSequence(seed).spawn(1)[0].generate_state(1)[0])


def _squash(values: Sequence[float] | None) -> list[float] | None:
    """What Optuna is told: ``sign(v) * log(1 + |v|)``. The ranking is the same, so TPE, NSGA-II and
    random search propose as before; but a loss that spans orders of magnitude (a diverged
    learning rate's 25 beside the good region's 0.65) no longer flattens the GP's model of the
    good region, which it fits on standardised values."""
    return None if values is None else [math.copysign(math.log1p(abs(v)), v) for v in values]


class OptunaSampler(Sampler):
    """Random, TPE, GP or NSGA-II proposals through Optuna's ask-and-tell interface.

    With a ``screen`` (the cost model's a-priori constraint, as in HyperPower), a
    candidate predicted over a budget is never proposed, and is told to Optuna as infeasible,
    with the predicted violation (TPE and the rest: the first of each proposal; the others as
    failed); at most ``MAX_SCREENED`` in a row
    (``MAX_SCREENED_GP`` for the GP, whose draws are dear), then
    the next candidate is proposed anyway (the tuner's skip still catches what is predicted
    over budget). A candidate the screen does not know to fit (a NaN violation: past the
    measured region before the model predicts) is told as failed, and the draws after it are
    random.
    ``screened`` counts the rejected candidates. With a ``cost``, candidates are also
    weighed by predicted cost (see ``Search.cost_aware``); ``deferred`` counts those not
    proposed, which are told to Optuna as failed so that its model ignores them.
    """

    MAX_SCREENED = 50
    #: a GP draw is a model fit and an acquisition search: seconds with integer parameters and
    #: running trials (the built-in MLP's 4-parameter space kept the driver busy for minutes)
    MAX_SCREENED_GP = 5
    GP_CAP = 3.0

    def __init__(self, search: Search, budget: Mapping[str, Any] | None = None, screen: Screen | None = None,
                 cost: Cost | None = None, spent: Callable[[], float] | None = None) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.search = search
        self.budget = per_config(budget)
        self.distributions = to_distributions(search.space)
        self.fixed = fixed_values(search.space)
        multi = len(search.objectives) > 1
        self.study = optuna.create_study(directions=search.directions, sampler=self._sampler(search.seed))
        self._asked: dict[str, optuna.trial.Trial] = {}
        self._remaining = search.n_trials or 0
        self.multi = multi
        # The GP differs from the rest in four decided-once ways: an infeasible trial is told the best
        # objective values seen, not the worst (see _placeholder); a positive loss is capped (see _told);
        # a draw is dear; and it is told every candidate the screen rejects, where the rest are told the
        # first of each proposal (see _ask).
        self._gp = gp = search.method == "gp"
        self._placeholder_values: list[float] | None = None
        self._best_raw: list[float | None] | None = [None] * len(search.objectives) if gp else None  # see _told
        self._max_screened = self.MAX_SCREENED_GP if gp else self.MAX_SCREENED
        self._drawing = _one_torch_thread if gp else contextlib.nullcontext
        self._offset = 0  # after a resume: stored ids went past Optuna's numbers (screened, deferred)
        self.screen = screen
        self.screened = 0
        self.cost = cost
        self.spent = spent or (lambda: 0.0)
        self.deferred = 0
        self._coin = random.Random(search.seed)
        # a stream of its own: Optuna's samplers start up with RandomSampler(seed=seed), and on that
        # same stream each redrawn candidate came back later as a start-up draw (3 of 8 proposals)
        self._random = optuna.samplers.RandomSampler(seed=_another_stream(search.seed))

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return {
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
            "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
            "gp": lambda: optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False),
            "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        }[self.search.method]()

    def ask(self) -> Config | None:
        if self._remaining <= 0:
            return None
        self._remaining -= 1
        with self._drawing():
            return self._ask()

    def _ask(self) -> Config:
        unknown = told_infeasible = False
        for _ in range(self._max_screened):
            trial = self._draw(at_random=unknown)
            params = {**self.fixed, **trial.params}
            violations = self.screen(params) if self.screen is not None else None
            if violations and any(math.isnan(v) for v in violations.values()):
                # not known to fit: told as failed so that no model learns from it, and drawn again at
                # random (a model's draw would repeat: a failed trial changes none of its data)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                self.screened += 1
                unknown = True
                continue
            if not violations:
                if not self._defer(params):
                    break
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                self.deferred += 1
                continue
            if not self.budget:
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif self._gp or not told_infeasible:  # by how much: the constraints rank it below every feasible trial
                for key in self.budget:
                    trial.set_constraint(key, float(violations.get(key, 0.0)))
                self.study.tell(trial, self._placeholder(()))
                told_infeasible = True
            else:
                # Told as infeasible, each rejection counts in TPE's split into good and bad trials (the best
                # 10 % of all it was told, infeasible ones last): with tens a proposal, the good group was every
                # feasible trial, whatever its loss, and the search stayed where the first trials fitted
                # (docs/search.md, "Screening and TPE's good group"). The first still steers it off the
                # budget's edge; told none, it kept proposing past the edge until a proposal ran out of draws.
                # Failed trials it ignores. The GP models feasibility apart from the objective: it gets each.
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.screened += 1
        else:
            trial = self._draw(at_random=unknown)
        params = {**self.fixed, **trial.params}
        config = Config(f"t{trial.number + self._offset:04d}:" + config_id(trial.params), params)
        self._asked[config.config_id] = trial
        return config

    def _draw(self, at_random: bool) -> optuna.trial.Trial:
        """The sampler's next trial, or one drawn by Optuna's random sampler in the same study."""
        if not at_random:
            return self.study.ask(self.distributions)
        sampler, self.study.sampler = self.study.sampler, self._random
        try:
            return self.study.ask(self.distributions)
        finally:
            self.study.sampler = sampler

    def _defer(self, params: Mapping[str, Any]) -> bool:
        """Cost cooling: leave a candidate predicted dearer than the median trial for later,
        with a chance that shrinks to nothing as the search's budget is spent."""
        estimate = self.cost(params) if self.cost is not None else None
        if estimate is None or estimate[0] <= estimate[1]:
            return False
        n_trials = self.search.n_trials or 1
        progress = min(1.0, max((n_trials - self._remaining - 1) / n_trials, self.spent()))
        return self._coin.random() > (estimate[1] / estimate[0]) ** (1.0 - progress)

    def tell(self, config: Config, records: Sequence[TrialRecord]) -> None:
        trial = self._asked.pop(config.config_id, None)
        if trial is None:
            return
        values = self._told(records)
        constraints = self._constraints(records)
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        if values is None and any(v > 0 for v in constraints.values()):
            # infeasible: complete, so NSGA-II sees it too; the values are placeholders,
            # ranked below every feasible trial by the constraints
            self.study.tell(trial, self._placeholder(records))
        elif values is None:
            state = (
                optuna.trial.TrialState.FAIL
                if all(r.status is TrialStatus.FAILED for r in records)
                else optuna.trial.TrialState.PRUNED
            )
            self.study.tell(trial, state=state)
        else:
            self._note(values)
            self.study.tell(trial, values if self.multi else values[0])

    def _constraints(self, records: Sequence[TrialRecord]) -> dict[str, float]:
        if not self.budget:
            return {}
        return constraint_values(records, self.budget)

    def _told(self, records: Sequence[TrialRecord]) -> list[float] | None:
        """The objective values Optuna is told for ``records`` (squashed; None if unmeasured). The
        GP is told a positive loss at most ``GP_CAP`` times the best seen so far: a diverged
        learning rate's 25 and 1,000 are both just bad, and left as they are they set the scale
        of its standardised values, on which the good region's 1 % differences vanish."""
        values = objective_values(records, self.search.objectives)
        if values is not None and self._best_raw is not None:
            self._best_raw = [v if b is None else min(b, v) for b, v in zip(self._best_raw, values)]
            values = [min(v, self.GP_CAP * b) if d == "minimize" and b > 0 else v
                      for v, b, d in zip(values, self._best_raw, self.search.directions)]
        return _squash(values)

    def _note(self, values: Sequence[float]) -> None:
        """Keep the best (GP) or worst (the rest) objective values seen, per objective."""
        kept = self._placeholder_values or list(values)
        keep_min = [(d == "minimize") == self._gp for d in self.search.directions]
        self._placeholder_values = [min(k, v) if low else max(k, v) for k, v, low in zip(kept, values, keep_min)]

    def _placeholder(self, records: Sequence[TrialRecord]) -> float | list[float]:
        """Objective values for an infeasible trial (what it measured if nothing feasible was).

        TPE and NSGA-II get the worst seen; the constraints rank it below every feasible
        trial anyway. The GP gets the best seen: its objective model is smooth over every
        point, and a bad value at an infeasible one would teach it that the region beside a
        budget's edge, where a budget-bound optimum lies, is bad; its feasibility model keeps
        proposals off the far side.
        """
        if self._placeholder_values:
            values = list(self._placeholder_values)
        else:
            values = _squash([
                next((v for r in records if (v := r.last(o)) is not None and math.isfinite(v)), 0.0)
                for o in self.search.objectives
            ])
        return values if self.multi else values[0]

    def restore(self, finished, incomplete) -> None:
        for config, records in finished:
            params = {k: v for k, v in config.params.items() if k in self.distributions}
            values = self._told(records)
            constraints = self._constraints(records)
            if values is not None:
                self._note(values)
            elif any(v > 0 for v in constraints.values()):
                placeholder = self._placeholder(records)
                values = placeholder if self.multi else [placeholder]
            state = optuna.trial.TrialState.COMPLETE if values is not None else optuna.trial.TrialState.PRUNED
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions=self.distributions, state=state,
                    **({"values": values} if values is not None else {}),
                    **({"constraints": constraints} if constraints else {}),
                )
            )
        self._remaining = max(0, (self.search.n_trials or 0) - len(finished) - len(incomplete))
        numbers = [int(m.group(1)) for c in [*(c for c, _ in finished), *incomplete]
                   if (m := re.match(r"t(\d+):", c.config_id))]
        self._offset = max(0, max(numbers, default=-1) + 1 - len(finished))
        # Seeded as at the start, each random stream would draw again what it drew before the interruption: the
        # first configurations, finished already (a random or TPE study resumed after Ctrl-C re-ran them). Streams
        # of their own for this point of the search, the same at every resume from here.
        drawn = max(max(numbers, default=-1) + 1, len(finished) + len(incomplete))
        if drawn:
            seed = int(np.random.SeedSequence([self.search.seed, drawn]).generate_state(1)[0])
            self.study.sampler = self._sampler(seed)
            self._random = optuna.samplers.RandomSampler(seed=_another_stream(seed))
            self._coin = random.Random(seed)
        for config in incomplete:
            self.study.enqueue_trial({k: v for k, v in config.params.items() if k in self.distributions})
            self._asked[config.config_id] = self.study.ask(self.distributions)
