"""The NAS reproduction's verdicts are pure functions of the two runs' records: feed
records where a finding fails and its verdict flips; too few records are inconclusive."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from frugalml import StopInfo, TrialRecord, TrialStatus, Window
from frugalml.reproduce import NasDesign, Verdict, in_range_budget, nas_findings, run_nas
from frugalml.workloads import network_features

FEATURES = network_features("mlp", 784, 10)
GRID = list(itertools.product((32, 128, 512, 2048), (1, 2, 4), (32, 256)))


def trial(width, depth, batch, *, memory=None, step=None, status=TrialStatus.COMPLETED, stop=None, steps=40):
    """A trial whose costs follow the network's physics: memory = 300 MB + weights + 2 x
    activations, step = 1 ms + 30 ms per GFLOP; the wider, the lower its validation loss."""
    params = {"width": width, "depth": depth, "batch_size": batch}
    f = FEATURES(params)
    memory = 300 + f["weights_mb"] + 2 * f["activations_mb"] if memory is None else memory
    step = 1 + 30 * f["gflops"] if step is None else step
    windows = tuple(Window(10 * i, {"mean_step_ms": step, "memory_mb": memory, "wall_s": i * step / 100,
                                    "val_loss": 1 / width + depth / 1e4 + batch / 1e7})
                    for i in range(1, steps // 10 + 1))
    key = f"batch_size={batch},depth={depth},width={width}"
    return TrialRecord(trial_id=f"mnist_784-mlp/{key}/r0", number=0, workload="mnist_784-mlp", config_id=key,
                       repeat=0, params=params, status=status, steps_done=10 * len(windows), steps_planned=40,
                       cpu_s=step * 10 * len(windows) / 1000 + 0.05, windows=windows, stop=stop)


def exhaustive(**costs):
    return [trial(*config, **costs) for config in GRID]


def budgeted(records, budget, *, stop_fitting=()):
    """What a working budgeted search records: trials over budget stopped after one window."""
    out = []
    for record in records:
        w, d, b = (record.params[p] for p in ("width", "depth", "batch_size"))
        over = record.peak("memory_mb") > budget["max_memory_mb"] or record.mean("mean_step_ms") > budget["max_mean_step_ms"]
        if over or (w, d, b) in stop_fitting:
            stop = StopInfo("predicted_max_memory_mb", "system", 10, 1.0, 0.5, "predicted over budget")
            out.append(trial(w, d, b, status=TrialStatus.STOPPED, stop=stop, steps=10,
                             memory=record.peak("memory_mb"), step=record.mean("mean_step_ms")))
        else:
            out.append(record)
    return out


def verdicts(findings):
    return {f.key: f.verdict for f in findings}


def test_every_finding_holds_on_records_that_follow_the_physics():
    first = exhaustive()
    budget = {"max_memory_mb": 400.0, "max_mean_step_ms": 10.0}  # the big half is over: most compute is saved
    result = verdicts(nas_findings(first, budgeted(first, budget), budget))
    assert set(result.values()) == {Verdict.HOLDS}, result


def test_each_finding_flips_when_its_records_say_otherwise():
    first = exhaustive()
    budget = in_range_budget(first)
    best = max((c for c in GRID if trial(*c).peak("memory_mb") <= budget["max_memory_mb"]
                and trial(*c).mean("mean_step_ms") <= budget["max_mean_step_ms"]), key=lambda c: (c[0], -c[1], -c[2]))
    wrong = verdicts(nas_findings(first, budgeted(first, budget, stop_fitting={best}), budget))
    assert wrong["nas_no_false_stop"] is Verdict.DOES_NOT_HOLD and wrong["nas_same_best"] is Verdict.DOES_NOT_HOLD
    assert verdicts(nas_findings(first, first, budget))["nas_compute_saved"] is Verdict.DOES_NOT_HOLD  # all in full

    rng = np.random.default_rng(0)
    noisy = [trial(*c, memory=rng.uniform(300, 900), step=rng.uniform(1, 500)) for c in GRID]
    result = verdicts(nas_findings(noisy, noisy, in_range_budget(noisy)))
    assert result["nas_predict_before_run"] is Verdict.DOES_NOT_HOLD
    assert result["nas_step_drivers"] is Verdict.DOES_NOT_HOLD
    by_batch = [trial(*c, memory=300 + c[2]) for c in GRID]
    assert verdicts(nas_findings(by_batch, by_batch, budget))["nas_memory_drivers"] is Verdict.DOES_NOT_HOLD


def test_too_few_records_are_inconclusive_not_a_verdict():
    budget = {"max_memory_mb": 500.0, "max_mean_step_ms": 10.0}
    assert set(verdicts(nas_findings([], [], budget)).values()) == {Verdict.INCONCLUSIVE}
    with pytest.raises(ValueError, match="fewer than two completed trials"):
        in_range_budget([])


def test_a_tiny_nas_reproduction_runs_end_to_end_and_resumes(tmp_path):
    """Real MLP trials on mnist_784: a 2 x 1 x 2 grid, exhaustive then budgeted."""
    plan = NasDesign(True, (16, 256), (1,), (32, 512), 6, 3, 2)
    lines: list[str] = []
    run = run_nas(tmp_path / "nas", plan=plan, echo=lines.append)
    assert {f.key for f in run.findings} >= {"nas_compute_saved", "nas_same_best", "nas_no_false_stop"}
    assert run.budget["max_memory_mb"] > 0 and (tmp_path / "nas" / "FINDINGS.md").read_text().count("| **") == 7
    assert any("budgeted" in line for line in lines)
    again: list[str] = []
    rerun = run_nas(tmp_path / "nas", plan=plan, resume=True, echo=again.append)
    assert rerun.budget == run.budget and not any(": completed" in line for line in again)  # nothing re-run
    assert rerun.seconds == pytest.approx(run.seconds)  # only the report again: the run took no longer
