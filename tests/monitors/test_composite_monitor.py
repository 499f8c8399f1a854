from __future__ import annotations

import os
import sys

import pytest

from frugalml.monitors import (
    CompositeMonitor,
    EnergyMonitor,
    FunctionMonitor,
    GpuMonitor,
    Monitor,
    ProcessTreeMonitor,
    as_monitor,
    default_monitors,
)


class Recording(Monitor):
    def __init__(self, metrics: dict[str, float], close_error: bool = False) -> None:
        self.metrics, self.close_error, self.closed = metrics, close_error, False

    def sample(self) -> dict[str, float]:
        return dict(self.metrics)

    def sample_detailed(self) -> dict[str, float]:
        return {**self.metrics, "detailed": 1.0}

    def close(self) -> None:
        self.closed = True
        if self.close_error:
            raise RuntimeError("boom")


def test_composite_merges_samples_and_the_later_monitor_wins():
    monitor = CompositeMonitor([Recording({"a": 1.0, "b": 1.0}), lambda: {"b": 2.0}])
    assert monitor.sample() == {"a": 1.0, "b": 2.0}
    assert monitor.sample_detailed() == {"a": 1.0, "b": 2.0, "detailed": 1.0}


def test_composite_closes_every_monitor_even_when_one_raises():
    first, second = Recording({}, close_error=True), Recording({})
    with pytest.raises(RuntimeError, match="boom"):
        CompositeMonitor([first, second]).close()
    assert first.closed and second.closed


def test_as_monitor_converts_callables_and_rejects_other_values():
    monitor = Recording({})
    assert as_monitor(monitor) is monitor
    assert isinstance(as_monitor(lambda: {"x": 1}), FunctionMonitor)
    assert as_monitor(lambda: {"x": 1}).sample() == {"x": 1.0}
    with pytest.raises(TypeError, match="must be a Monitor or a callable"):
        as_monitor({"x": 1.0})  # type: ignore[arg-type]


def test_base_monitor_defaults_detailed_to_sample():
    class Plain(Monitor):
        def sample(self) -> dict[str, float]:
            return {"x": 1.0}

    with Plain() as monitor:
        assert monitor.sample_detailed() == {"x": 1.0}


def test_default_monitors_without_gpu_are_the_process_tree_and_energy_monitors(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monitors = default_monitors(os.getpid())
    assert [type(m) for m in monitors] == [ProcessTreeMonitor, EnergyMonitor]
    sample = CompositeMonitor(monitors).sample()
    assert "memory_mb" in sample and "energy_j" in sample


def test_default_monitors_with_fake_nvml_share_the_tree_listing(fake_nvml):
    fake_nvml([{"compute": [(os.getpid(), 2**20)], "util": 7}])
    monitors = default_monitors(os.getpid())
    assert [type(m) for m in monitors] == [ProcessTreeMonitor, GpuMonitor, EnergyMonitor]
    with CompositeMonitor(monitors) as monitor:
        sample = monitor.sample()
    assert sample["gpu_memory_mb"] == 1.0 and sample["gpu_util_percent"] == 7.0
    assert "memory_mb" in sample
