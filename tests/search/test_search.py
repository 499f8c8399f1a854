"""frugalml.search on its own: what each sampler proposes, in which order, and what it proposes
after a resume; the space's one-line errors. Real Optuna samplers; no trial runs, no process starts."""

from __future__ import annotations

import math

import pytest

from frugalml.exceptions import ConfigError
from frugalml.records import TrialRecord, TrialStatus, Window
from frugalml.search import Config, Search, config_id, grid_size


def _asked(sampler) -> list[Config]:
    proposals = []
    while (config := sampler.ask()) is not None:
        proposals.append(config)
    return proposals


def _finished(config: Config, val_loss: float) -> TrialRecord:
    return TrialRecord(trial_id=f"w/{config.config_id}/r0", number=0, workload="w", config_id=config.config_id,
                       repeat=0, params=dict(config.params), status=TrialStatus.COMPLETED, steps_planned=4,
                       steps_done=4, windows=[Window(step=4, values={"val_loss": val_loss})])


def test_grid_runs_every_combination_first_parameter_outermost_with_fixed_values_in_each():
    search = Search(space={"batch_size": [30, 300], "learning_rate": [0.1, 0.01, 0.001], "alpha": 0.5})
    proposals = _asked(search.sampler())
    assert grid_size(search.space) == len(proposals) == 6
    assert [(c.params["batch_size"], c.params["learning_rate"]) for c in proposals] == [
        (30, 0.1), (30, 0.01), (30, 0.001), (300, 0.1), (300, 0.01), (300, 0.001)]
    assert all(c.params["alpha"] == 0.5 for c in proposals)
    assert len({c.config_id for c in proposals}) == 6 and "alpha" not in proposals[0].config_id


def test_grid_points_run_in_their_order_and_a_resume_skips_finished_and_running_ones():
    points = [{"batch_size": 300, "learning_rate": 0.01}, {"batch_size": 30, "learning_rate": 0.1},
              {"batch_size": 30, "learning_rate": 0.01}]
    search = Search(space={"batch_size": [30, 300], "learning_rate": [0.1, 0.01]}, points=points)
    first = _asked(search.sampler())
    assert [dict(c.params) for c in first] == points
    resumed = search.sampler()
    resumed.restore([(first[0], [_finished(first[0], 1.0)])], [first[2]])
    assert _asked(resumed) == [first[1]]


def test_a_configuration_id_is_the_same_whatever_the_order_and_quotes_text():
    assert config_id({"b": 2, "a": 0.1}) == config_id({"a": 0.1, "b": 2}) == "a=0.1,b=2"
    assert config_id({"optimizer": "adam", "batch_size": 30}) == "batch_size=30,optimizer='adam'"


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_optuna_samplers_stay_in_the_space_ask_n_trials_and_repeat_with_the_seed(method):
    space = {"batch_size": {"low": 16, "high": 4096, "log": True, "int": True},
             "learning_rate": {"low": 1e-4, "high": 0.5, "log": True}, "depth": [1, 2, 3], "alpha": 0.0}
    search = Search(method=method, space=space, n_trials=12, seed=3)
    sampler = search.sampler()
    proposals = []
    while (config := sampler.ask()) is not None:
        proposals.append(config)
        sampler.tell(config, [_finished(config, math.log(config.params["batch_size"]))])
    assert len(proposals) == 12 and len({c.config_id for c in proposals}) == 12
    for params in (c.params for c in proposals):
        assert isinstance(params["batch_size"], int) and 16 <= params["batch_size"] <= 4096
        assert 1e-4 <= params["learning_rate"] <= 0.5 and params["depth"] in (1, 2, 3) and params["alpha"] == 0.0
    again = Search(method=method, space=space, n_trials=12, seed=3).sampler()
    replay = []
    while (config := again.ask()) is not None:
        replay.append(config)
        again.tell(config, [_finished(config, math.log(config.params["batch_size"]))])
    assert [c.params for c in replay] == [c.params for c in proposals]


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_a_resumed_optuna_sampler_asks_only_the_trials_left_and_none_it_ran_before(method):
    """Resumed after Ctrl-C, a sampler seeded as at the start drew its first configurations again."""
    search = Search(method=method, space={"learning_rate": {"low": 1e-4, "high": 0.5, "log": True}}, n_trials=8,
                    seed=1)
    sampler = search.sampler()
    first = [sampler.ask() for _ in range(4)]
    for config in first[:3]:
        sampler.tell(config, [_finished(config, config.params["learning_rate"])])

    def resume():
        resumed = search.sampler()
        resumed.restore([(c, [_finished(c, c.params["learning_rate"])]) for c in first[:3]], [first[3]])
        return _asked(resumed)

    rest = resume()
    assert len(rest) == 4 and not {c.config_id for c in rest} & {c.config_id for c in first}
    assert not {c.params["learning_rate"] for c in rest} & {c.params["learning_rate"] for c in first}
    assert [c.params for c in resume()] == [c.params for c in rest]  # a resume from here is reproducible


@pytest.mark.parametrize(("search", "says"), [
    (dict(space={"batch_size": {"low": 16, "high": 64}}), "Grid search needs a list"),
    (dict(space={"batch_size": [30, 30.0]}), "more than once"),
    (dict(method="random", space={"learning_rate": {"low": 0, "high": 1, "log": True}}, n_trials=3), "low > 0"),
    (dict(method="random", space={"learning_rate": {"low": 1, "high": 0.1}}, n_trials=3), "low < high"),
    (dict(method="tpe", space={"batch_size": [30]}), "needs 'n_trials' >= 1"),
    (dict(space={"batch_size": [30]}, n_trials=4), "'n_trials' does not apply"),
    (dict(space={"batch_size": [30], "learning_rate": [0.1]}, points=[{"depth": 2}]), "does not have"),
    (dict(method="grid", space={"batch_size": [30]}, cost_aware=True), "cost_aware weighs"),
    (dict(space={"batch_size": [30]}, objectives=["speed"]), "Unknown objective metric 'speed'"),
])
def test_an_unusable_search_is_one_line_naming_what_to_change(search, says):
    with pytest.raises(ConfigError, match=says) as error:
        Search(**search)
    assert "\n" not in str(error.value)
