"""Successive halving / Hyperband among feasible trials: Optuna's promotion rule, budgets kept out of rungs."""

from __future__ import annotations

import collections
import itertools

import optuna
import pytest

import trainers
from frugalml import ConfigError, tune
from frugalml.records import StopInfo, TrialRecord, TrialStatus, Window
from frugalml.stopping import SuccessiveHalving, TrialView, rules_from_config
from frugalml.stopping._halving import rung_values
from helpers import halving_study


def record(name: str, values: list[float], *, every: int = 10, feasible: bool = True) -> TrialRecord:
    windows = tuple(Window((i + 1) * every, {"val_loss": v}) for i, v in enumerate(values))
    stop = None if feasible else StopInfo("max_memory_mb", "system", len(values) * every, 300.0, 150.0, "memory")
    return TrialRecord(trial_id=f"w/{name}/r0", number=0, workload="w", config_id=name, repeat=0, params={},
                       status=TrialStatus.COMPLETED if feasible else TrialStatus.STOPPED, stop=stop,
                       steps_done=len(values) * every, windows=windows)


_names = itertools.count()


def view(values: list[float], peers: list[TrialRecord], *, every: int = 10, name: str | None = None) -> TrialView:
    """A running trial's snapshot; a new trial each time unless ``name`` says which."""
    name = name or f"me{next(_names)}"
    windows = tuple(Window((i + 1) * every, {"val_loss": v}) for i, v in enumerate(values))
    return TrialView(trial_id=f"w/{name}/r0", workload="w", eval_every=every, steps_done=len(values) * every,
                     windows=windows, peers=tuple(peers), steps_planned=1000)


def test_rung_values_are_what_optunas_pruner_records_when_asked_at_every_window():
    values = [(10, 0.9), (20, 0.8), (30, 0.7), (40, 0.6), (90, 0.5)]
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=10, reduction_factor=2)
    trial = study.ask()
    for step, value in values:
        trial.report(value, step)
        pruner.prune(study, study.get_trials(deepcopy=False)[-1])
    assert rung_values(values, 10, 2) == study.get_trials(deepcopy=False)[-1].system_attrs


def test_a_trial_outside_the_best_third_at_a_rung_is_stopped_and_the_best_goes_on():
    peers = [record(f"p{i}", [v]) for i, v in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])]
    rule = SuccessiveHalving(reduction_factor=3)
    assert rule.check(view([0.15], peers)) is None  # 2nd of 6: the best 2 go on
    stop = rule.check(view([0.35], peers))
    assert (stop.rule, stop.kind, stop.value, stop.threshold) == ("halving", "ml", 0.35, 0.2)
    assert "best 2 of 6 feasible trials" in stop.message
    assert rule.check(view([0.35], peers[:1])) is not None  # 2 at the rung: only the best goes on
    assert rule.check(view([0.05], peers[:1])) is None


def test_windows_that_arrive_together_are_each_decided_in_order():
    peers = [record(f"p{i}", [0.1, 0.1]) for i in range(3)]
    rule = SuccessiveHalving(min_steps=10, reduction_factor=2)
    stop = rule.check(view([0.9, 0.05], peers))  # rung 10 lost (0.9), though rung 20 would have passed
    assert stop is not None and stop.value == 0.9 and "rung 0" in stop.message
    assert rule.check(view([0.05], peers, name="same")) is None
    assert rule.check(view([0.05, 0.9], peers, name="same")) is not None  # only the new window: rung 20


def test_budget_stopped_trials_never_occupy_a_rung():
    fits = record("fits", [0.5])
    over = [record(f"over{i}", [0.01 * i], feasible=False) for i in range(4)]
    rule = SuccessiveHalving(reduction_factor=2)
    assert rule.check(view([0.4], [fits, *over])) is None  # beats the one feasible peer
    assert rule.competitors(view([0.4], [fits, *over])) == [fits]
    stop = rule.check(view([0.6], [fits, *over]))
    assert stop.threshold == 0.5 and "of 2 feasible" in stop.message


def test_rungs_grow_by_the_reduction_factor_and_only_trials_that_reached_a_rung_compete_there():
    rule = SuccessiveHalving(min_steps=10, reduction_factor=2)
    short = [record(f"s{i}", [0.1, 0.1]) for i in range(3)]  # 20 steps: rungs 10 and 20 only
    long = record("long", [0.9, 0.9, 0.9, 0.5])  # 40 steps: rung 40 too
    assert rule.check(view([0.15], [long], name="t")) is None  # rung 10: beats the only one there
    assert rule.check(view([0.15, 0.2], [*short, long], name="t")) is not None  # rung 20: 3 of 5 beat 0.2
    assert rule.check(view([0.15], [long], name="u")) is None
    assert rule.check(view([0.15, 0.2, 0.2], [long], name="u")) is None  # rung 20 passed; 30 steps: no rung
    assert rule.check(view([0.9, 0.9, 0.9, 0.4], [long])) is None  # rung 40: beats the only one there
    assert rule.check(view([0.05, 0.05, 0.05, 0.6], [*short, long])) is not None  # 0.6 > 0.5 at rung 40


def test_hyperband_brackets_are_in_hyperbands_proportions_and_compete_apart():
    rule = SuccessiveHalving(brackets=3, reduction_factor=3)
    counts = collections.Counter(rule.bracket(f"w/c{i}/r0") for i in range(3400))
    # shares ceil(3 * 3**s / (s + 1)) for s = 2, 1, 0: 9, 5, 3 of 17
    assert [round(counts[b] / 3400, 2) for b in range(3)] == pytest.approx([9 / 17, 5 / 17, 3 / 17], abs=0.03)
    assert rule.bracket("w/c7/r0") == rule.bracket("w/c7/r2")  # repeats share their configuration's bracket
    assert {rule.first_rung(f"w/c{i}/r0", 10) for i in range(50)} == {10, 30, 90}
    me = view([0.9], [], name="c0")
    others = [record(f"c{i}", [0.1]) for i in range(1, 40)]
    assert {p.trial_id for p in rule.competitors(view([0.9], others, name="c0"))} == {
        p.trial_id for p in others if rule.bracket(p.trial_id) == rule.bracket(me.trial_id)}


@pytest.mark.parametrize("table, message", [
    ({"halving": {"reduction_factor": 1}}, "'reduction_factor' parameter of SuccessiveHalving must be an int in the range [2, inf). Got 1"),
    ({"halving": {"min_steps": 0}}, "min_steps"),
    ({"halving": {"brackets": 0}}, "brackets"),
    ({"halving": "yes"}, "halving must be true, false or a table"),
    ({"halving": {"rungs": 3}}, "Bad settings for [stopping] halving"),
])
def test_bad_halving_settings_are_one_line_errors(table, message):
    with pytest.raises(ConfigError) as error:
        rules_from_config({}, table)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_halving_is_switched_on_from_the_stopping_table():
    (rule,) = rules_from_config({}, {"halving": {"min_steps": 10, "reduction_factor": 2}})
    assert isinstance(rule, SuccessiveHalving) and (rule.min_steps, rule.reduction_factor) == (10, 2)
    assert rules_from_config({}, {"halving": False}) == []


# -- a real study ---------------------------------------------------------------------------

POINTS = trainers.RANKED_POINTS


def reference_asha(records: list[TrialRecord], eta: int, first: int, *, with_infeasible: bool) -> dict[str, float]:
    """Trial id -> cutoff it lost to, from the stored records in the order they ran (one worker)."""
    reached: dict[int, list[float]] = collections.defaultdict(list)  # rung -> values of earlier trials
    halved = {}
    for r in sorted(records, key=lambda r: r.number):
        counts = r.feasible or with_infeasible
        rung, values = 0, [(w.step, w.values["val_loss"]) for w in r.windows if "val_loss" in w.values]
        for step, value in values:
            while step >= first * eta**rung and step < (r.steps_planned or 80):
                pool = sorted(reached[rung] + [value])
                cutoff = pool[max(1, len(pool) // eta) - 1]
                if counts:
                    reached[rung].append(value)
                if value > cutoff:
                    halved[r.trial_id] = cutoff
                    break
                rung += 1
            if r.trial_id in halved:
                break
    return halved


def test_a_real_study_halves_among_feasible_trials_and_resumes_mid_rung_without_losing_or_repeating(study_dir):
    study = halving_study(study_dir)
    ended = []

    def interrupt_after_four(event, payload):
        if event == "end":
            ended.append(payload.trial_id)
            if len(ended) == 4:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune(study, progress=interrupt_after_four)
    resumed = []
    result = tune(study, resume=True, progress=lambda e, p: resumed.append(p.trial_id) if e == "end" else None)
    records = list(result.records)
    assert len(ended) == 4 and not set(ended) & set(resumed)  # nothing finished is run again
    assert sorted(r.trial_id for r in records) == sorted(set(ended) | set(resumed)) and len(records) == len(POINTS)

    by_quality = {r.params["quality"]: r for r in records}
    assert all(by_quality[q].stop.rule == "max_memory_mb" for q, m in POINTS if m)
    halved = {r.trial_id: r.stop.threshold for r in records if r.stop is not None and r.stop.rule == "halving"}
    assert halved == pytest.approx(reference_asha(records, 2, 10, with_infeasible=False))
    assert set(halved) == {by_quality[q].trial_id for q in (0.9, 0.4, 0.7)}
    # had the over-budget trials occupied rungs, the first feasible one (0.5) would have been halved too
    assert by_quality[0.5].trial_id in reference_asha(records, 2, 10, with_infeasible=True)
    assert by_quality[0.5].status is TrialStatus.COMPLETED and by_quality[0.2].status is TrialStatus.COMPLETED
