from __future__ import annotations

import os
import sys

import pytest

from frugalml.monitors import GpuMonitor

MB = 2**20
HAS_NVIDIA_GPU = os.path.exists("/dev/nvidia0")


def test_gpu_monitor_with_fake_nvml_sums_tree_memory_and_averages_used_devices(fake_nvml):
    fake_nvml(
        [
            {"compute": [(10, 100 * MB), (99, 500 * MB)], "util": 40},
            {"compute": [(11, 50 * MB)], "graphics": [(11, 50 * MB), (12, 25 * MB)], "util": 80},
            {"compute": [(99, 1000 * MB)], "util": 100},  # not the tree's device
        ]
    )
    monitor = GpuMonitor(lambda: [10, 11, 12])
    assert monitor.available
    assert monitor.sample() == {"gpu_util_percent": 60.0, "gpu_memory_mb": 175.0}


def test_gpu_monitor_with_fake_nvml_leaves_out_metrics_while_tree_is_not_on_a_gpu(fake_nvml):
    fake_nvml([{"compute": [(99, 500 * MB)], "util": 90}])
    assert GpuMonitor(lambda: [10]).sample() == {}


def test_gpu_monitor_with_fake_nvml_leaves_out_memory_nvml_cannot_give(fake_nvml):
    fake_nvml([{"compute": [(10, None)], "util": 30}])
    assert GpuMonitor(lambda: [10]).sample() == {"gpu_util_percent": 30.0}


def test_gpu_monitor_with_fake_nvml_lists_the_tree_of_an_int_pid(fake_nvml):
    fake_nvml([{"compute": [(os.getpid(), 64 * MB)], "util": 5}])
    assert GpuMonitor(os.getpid()).sample() == {"gpu_util_percent": 5.0, "gpu_memory_mb": 64.0}


def test_gpu_monitor_with_fake_nvml_is_unavailable_when_init_fails(fake_nvml):
    nvml = fake_nvml([{"compute": [(10, MB)], "util": 5}], init_error=True)
    monitor = GpuMonitor(lambda: [10])
    assert not monitor.available
    assert monitor.sample() == {}
    monitor.close()
    assert nvml.shutdown_calls == 0


def test_gpu_monitor_with_fake_nvml_is_unavailable_without_devices(fake_nvml):
    nvml = fake_nvml([])
    monitor = GpuMonitor(lambda: [10])
    assert not monitor.available
    assert monitor.sample() == {}
    assert nvml.shutdown_calls == 1


def test_gpu_monitor_with_fake_nvml_shuts_nvml_down_once(fake_nvml):
    nvml = fake_nvml([{"compute": [], "util": 0}])
    with GpuMonitor(lambda: [10]) as monitor:
        assert monitor.available
    monitor.close()
    assert (nvml.init_calls, nvml.shutdown_calls) == (1, 1)
    assert monitor.sample() == {}


def test_gpu_monitor_is_unavailable_when_pynvml_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes the import raise ImportError
    monitor = GpuMonitor(os.getpid())
    assert not monitor.available
    assert monitor.sample() == {}


def test_gpu_monitor_rejects_what_is_neither_a_pid_nor_a_callable():
    with pytest.raises(TypeError, match="`pids` must be"):
        GpuMonitor("123")  # type: ignore[arg-type]


@pytest.mark.skipif(HAS_NVIDIA_GPU, reason="this machine has an NVIDIA GPU")
def test_gpu_monitor_on_a_machine_without_gpu_is_unavailable_and_empty():
    with GpuMonitor(os.getpid()) as monitor:
        assert not monitor.available
        assert monitor.sample() == {}


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_NVIDIA_GPU, reason="needs an NVIDIA GPU")
def test_gpu_monitor_on_a_real_gpu_is_available():
    with GpuMonitor(os.getpid()) as monitor:
        assert monitor.available
        assert set(monitor.sample()) <= {"gpu_util_percent", "gpu_memory_mb"}
