"""Joules per trial: estimated on this VM (no RAPL, no GPU) in real studies; RAPL and NVML
through fakes (a powercap tree on disk, a fake pynvml module), named so."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest

import trainers
from frugalml import Search, Study, TrialStatus, Workload, tune
from frugalml.cli._format import compute_line
from frugalml.exceptions import ConfigError
from frugalml.monitors import EnergyMonitor, energy_estimate_warning
from frugalml.monitors._energy import counter_delta, rapl_packages
from frugalml.stopping import budget_rule
from helpers import FakeNvml

MAX_UJ = 262_143_328_850  # a real package's max_energy_range_uj


def fake_powercap(root: Path, package_uj: int = 1_000_000) -> Path:
    """A powercap tree: package 0, its core sub-zone and a psys zone (both must be ignored)."""
    for zone, name, uj in (("intel-rapl:0", "package-0", package_uj), ("intel-rapl:0:0", "core", 5),
                           ("intel-rapl:1", "psys", 7)):
        (root / zone).mkdir(parents=True)
        (root / zone / "name").write_text(name + "\n")
        (root / zone / "energy_uj").write_text(f"{uj}\n")
        (root / zone / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    return root


def set_uj(root: Path, uj: int) -> None:
    (root / "intel-rapl:0" / "energy_uj").write_text(f"{uj}\n")


class Clock:
    """A CPU-seconds counter a test moves by hand."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def test_fake_rapl_package_is_found_and_subzones_and_psys_are_not(tmp_path):
    root = fake_powercap(tmp_path)
    assert rapl_packages(root) == [root / "intel-rapl:0"]
    assert rapl_packages(tmp_path / "absent") == []
    assert energy_estimate_warning({"max_trial_joules": 5}, powercap_root=root) is None


def test_counter_delta_wraps_at_max_energy_range():
    assert counter_delta(100, 350, MAX_UJ) == 250
    assert counter_delta(MAX_UJ - 10, 40, MAX_UJ) == 50
    assert counter_delta(MAX_UJ // 3, 40, MAX_UJ) == 40  # a reset, not two thirds of the range in one sample


def test_fake_rapl_energy_is_shared_by_cpu_time_between_two_concurrent_trials_across_a_wrap(tmp_path):
    root = fake_powercap(tmp_path, package_uj=MAX_UJ - 30_000_000)  # 30 J before the counter wraps
    busy, tree_a, tree_b = Clock(100.0), Clock(0.0), Clock(0.0)
    a = EnergyMonitor(tree_a, powercap_root=root, busy_cpu_s=busy)
    b = EnergyMonitor(tree_b, powercap_root=root, busy_cpu_s=busy)
    assert (a.source, a.estimated, a.assumption) == ("rapl", False, None)
    set_uj(root, 70_000_000)  # wrapped: 100 J since the monitors started
    busy.value, tree_a.value, tree_b.value = 102.0, 1.5, 0.5  # A had 3/4 of the busy CPU time, B 1/4
    assert a.sample()["energy_j"] == pytest.approx(75.0)
    assert b.sample()["energy_j"] == pytest.approx(25.0)
    set_uj(root, 90_000_000)  # 20 J more while only A ran, and other work on the machine as much
    busy.value, tree_a.value = 104.0, 2.5
    assert a.sample()["energy_j"] == pytest.approx(85.0)
    assert b.sample()["energy_j"] == pytest.approx(25.0)
    assert a.labels() == {"energy_source": "rapl"}


def test_fake_nvml_energy_goes_to_the_devices_the_trial_is_on(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGALML_WATTS_PER_CORE", "10")
    nvml = FakeNvml([{"compute": [], "util": 0, "energy_mj": 1_000}, {"compute": [], "util": 0, "energy_mj": 5_000},
                     {"compute": [], "util": 0}])  # the third has no energy counter
    on = [0]
    tree = Clock(1.0)
    monitor = EnergyMonitor(tree, lambda: on, nvml=nvml, powercap_root=tmp_path / "none")
    assert monitor.source == "estimate" and "10 W per core" in monitor.assumption  # no GPU joules charged yet
    nvml.devices[0]["energy_mj"], nvml.devices[1]["energy_mj"] = 4_000, 9_000  # +3 J on ours, +4 J elsewhere
    tree.value = 2.0  # one CPU-second since the monitor started (the one before it is not the trial's to count)
    assert monitor.sample()["energy_j"] == pytest.approx(10.0 + 3.0)
    assert monitor.source == "estimate+nvml"
    on[:] = [0, 1]
    nvml.devices[0]["energy_mj"], nvml.devices[1]["energy_mj"] = 5_000, 11_000
    assert monitor.sample()["energy_j"] == pytest.approx(10.0 + 3.0 + 1.0 + 2.0)
    labels = monitor.labels()
    monitor.close()
    assert nvml.shutdown_calls == 1 and labels["energy_source"] == "estimate+nvml"


def test_fake_rapl_with_fake_nvml_is_all_measured(tmp_path):
    nvml = FakeNvml([{"compute": [], "util": 0, "energy_mj": 0}])
    on: list[int] = []  # a tree NVML does not see on the device (a container's pid namespace)
    monitor = EnergyMonitor(Clock(), lambda: on, nvml=nvml, powercap_root=fake_powercap(tmp_path))
    nvml.devices[0]["energy_mj"] = 2_000
    monitor.sample()
    assert monitor.source == "rapl" and monitor.assumption is None  # no GPU joules: not labelled as measured
    on.append(0)
    nvml.devices[0]["energy_mj"] = 3_000
    monitor.sample()
    assert monitor.source == "rapl+nvml"


def test_bad_watts_per_core_and_bad_energy_budgets_are_one_line_config_errors(monkeypatch):
    monkeypatch.setenv("FRUGALML_WATTS_PER_CORE", "-3")
    with pytest.raises(ConfigError, match="FRUGALML_WATTS_PER_CORE must be a number of watts > 0. Got '-3'"):
        EnergyMonitor(Clock(), powercap_root="/nonexistent")
    for key in ("max_trial_joules", "max_study_joules"):
        for bad in (0, -1.0, math.nan):
            with pytest.raises(ConfigError) as error:
                budget_rule(key, bad)
            assert "\n" not in str(error.value) and key in str(error.value)


def _study(directory, budget, space, steps=300):
    return Study(name="energy", workloads=[Workload(train=trainers.steady,
                                                    train_kwargs={"steps": steps, "cpu_clock": True})],
                 search=Search(space=space), budget=budget, workers=1, directory=str(directory), mlflow_uri=None)


def test_estimated_joules_are_labelled_and_max_trial_joules_stops_a_real_trial_mid_run(study_dir, monkeypatch):
    monkeypatch.setenv("FRUGALML_WATTS_PER_CORE", "10")
    study = _study(study_dir, {"max_trial_joules": 10}, {"step_s": [0.01, 0.001]})  # 3 CPU-s vs 0.3 CPU-s
    with pytest.warns(UserWarning, match=r"max_trial_joules will act on estimated joules .* 10 W per core"):
        result = tune(study)
    heavy, light = sorted(result.records, key=lambda r: -r.params["step_s"])
    assert heavy.status is TrialStatus.STOPPED and heavy.stop.rule == "max_trial_joules"
    assert 10 < heavy.stop.value < 15 and heavy.steps_done < 300
    assert light.status is TrialStatus.COMPLETED  # the study went on after the stop
    for record in result.records:
        assert record.energy_source == "estimate" and "10 W per core" in record.info["energy_assumption"]
        assert record.energy_j == pytest.approx(10 * record.cpu_s, rel=0.2)  # sampled ≤ 0.1 s before the end
        # the series ends at the last window, which a loaded machine may sample well before the end
        assert 0 < record.last("energy_j") <= record.energy_j + 1e-9
    assert heavy.last("energy_j") == pytest.approx(heavy.energy_j, rel=0.2)  # stopped on that sample
    account = result.compute()
    assert account.energy_estimated and account.used_energy_j == pytest.approx(heavy.energy_j + light.energy_j)
    assert "J (estimate)" in compute_line(account)


def test_max_study_joules_ends_a_real_study(study_dir, monkeypatch):
    monkeypatch.setenv("FRUGALML_WATTS_PER_CORE", "10")
    # each trial ~0.8 CPU-s (8 J): the second crosses 10 J a quarter of the way in, however
    # much CPU start-up takes on a loaded machine; six would use ~48 J
    study = _study(study_dir, {"max_study_joules": 10}, {"offset": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}, steps=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = tune(study)
    assert len(result.records) < 6
    assert any(r.stop is not None and r.stop.rule == "max_study_joules" for r in result.records)
    assert result.budget_exhausted and result.compute().used_energy_j < 20
