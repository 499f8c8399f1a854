"""GPU memory as a budget: a CUDA out-of-memory error is a budget stop in every executor.

No GPU here: the trainers raise the real ``torch.OutOfMemoryError`` a CUDA allocation
raises (the class exists in a CPU build), so the worker-process path is the real one.
"""

from __future__ import annotations

import math
import warnings

import pytest

import trainers
from frugalml import Search, Study, TrialStatus, Workload, tune
from frugalml.executors import InProcessExecutor, LocalExecutor
from frugalml.executors._gpu import gpu_oom_stop, gpu_out_of_memory, warn_if_gpu_budget_unmeasurable
from frugalml.prediction._cost_model import broken_metric
from frugalml.stopping import GpuMemoryBudget, MemoryBudget

torch = pytest.importorskip("torch", reason="the out-of-memory class comes from PyTorch")

TORCH_2 = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB of which 1.02 GiB "
           "is free. Including non-PyTorch memory, this process has 6.70 GiB memory in use. Of the allocated memory "
           "6.50 GiB is allocated by PyTorch, and 51.00 MiB is reserved by PyTorch but unallocated.")
TORCH_1 = ("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 10.76 GiB total capacity; 9.48 GiB already "
           "allocated; 5.56 MiB free; 9.73 GiB reserved in total by PyTorch)")


class ResourceExhaustedError(Exception):
    """Stands in for ``tensorflow.errors.ResourceExhaustedError`` (matched by name and module)."""


ResourceExhaustedError.__module__ = "tensorflow.python.framework.errors_impl"


def _raised_from(cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as error:
            raise ValueError("training failed") from error
    except ValueError as wrapped:
        return wrapped


def oom_source(error: BaseException) -> BaseException:
    return error.__cause__ if isinstance(error, ValueError) else error


@pytest.mark.parametrize("error, requested, in_use, capacity", [
    (torch.OutOfMemoryError(TORCH_2), 2048, 6.70 * 1024, 7.79 * 1024),
    (torch.cuda.OutOfMemoryError(TORCH_1), 20, 9.48 * 1024, 10.76 * 1024),
    (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"), None, None, None),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), None, None, None),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4294967296 bytes."), 4096, None, None),
    (ResourceExhaustedError("OOM when allocating tensor with shape[100000,100000]"), None, None, None),
    (_raised_from(torch.OutOfMemoryError(TORCH_2)), 2048, 6.70 * 1024, 7.79 * 1024),
])
def test_gpu_out_of_memory_errors_are_recognised_with_what_their_message_says(error, requested, in_use, capacity):
    oom = gpu_out_of_memory(error)
    assert oom is not None and oom.message.startswith(type(oom_source(error)).__name__ + ": ")
    assert oom.requested_mb == pytest.approx(requested)
    assert oom.in_use_mb == pytest.approx(in_use)
    assert oom.capacity_mb == pytest.approx(capacity)


@pytest.mark.parametrize("error", [
    MemoryError(),  # the host ran out: not a GPU budget
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 80000000000 bytes. Error code 12 (Cannot allocate memory)"),
    RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x10 and 20x5)"),
    ValueError("CUDA out of memory"),  # not a RuntimeError: no framework raises that
    RuntimeError("RESOURCE_EXHAUSTED: too many open files"),
    KeyboardInterrupt(),
])
def test_other_errors_are_not_gpu_out_of_memory(error):
    assert gpu_out_of_memory(error) is None


def test_the_stop_reaches_the_larger_of_the_peak_and_the_failed_request_against_the_binding_limit():
    oom = gpu_out_of_memory(torch.OutOfMemoryError(TORCH_2))
    budget = gpu_oom_stop(oom, step=7, peak_mb=9000.0, limit_mb=4000.0)
    assert (budget.rule, budget.kind, budget.step, budget.value, budget.threshold) == (
        "max_gpu_memory_mb", "system", 7, 9000.0, 4000.0)
    assert "budget 4000 MB" in budget.message and "Tried to allocate 2.00 GiB" in budget.message
    device = gpu_oom_stop(oom, step=7, peak_mb=None, limit_mb=100_000.0)  # the device is smaller than the budget
    assert device.value == pytest.approx(6.70 * 1024 + 2048) and device.threshold == pytest.approx(7.79 * 1024)
    unknown = gpu_oom_stop(gpu_out_of_memory(RuntimeError("CUDA error: out of memory")), step=0, peak_mb=None,
                           limit_mb=None)
    assert math.isnan(unknown.value) and math.isnan(unknown.threshold)
    assert "device capacity unknown; set [budget] max_gpu_memory_mb" in unknown.message


def oom_study(directory, **overrides) -> Study:
    """Batch 1500 runs out of GPU memory in step 15 after reporting 3000 MB; 32 and 64 finish."""
    args = dict(
        name="oom", workloads=[Workload(train=trainers.fake_cuda_oom, eval_every=10, steps=30, name="oom")],
        search=Search(space={"batch_size": [1500, 32, 64]}, points=[{"batch_size": b} for b in (1500, 32, 64)]),
        budget={"max_gpu_memory_mb": 4096}, workers=1, sample_interval_s=0.05, directory=str(directory),
        mlflow_uri=None,
    )
    return Study(**{**args, **overrides})


def check_oom_study(records) -> None:
    by_batch = {r.params["batch_size"]: r for r in records}
    oom = by_batch[1500]
    assert oom.status is TrialStatus.STOPPED and oom.error is None and not oom.feasible
    assert (oom.stop.rule, oom.stop.kind, oom.stop.step) == ("max_gpu_memory_mb", "system", 14)
    assert oom.stop.value == 3000.0 and oom.stop.threshold == 4096.0  # the reported peak beats the 2 GiB request
    assert "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in oom.stop.message
    assert oom.steps_saved == 16
    assert broken_metric(oom) == "peak_gpu_memory_mb"  # the cost model censors its GPU memory
    assert [by_batch[b].status for b in (32, 64)] == [TrialStatus.COMPLETED] * 2


def test_a_fake_cuda_oom_in_a_worker_process_is_a_budget_stop_and_the_study_goes_on(study_dir):
    with pytest.warns(UserWarning, match=r"max_gpu_memory_mb = 4096 but NVML finds no NVIDIA GPU here"):
        result = tune(oom_study(study_dir))
    check_oom_study(result.records)
    assert "OutOfMemoryError" in result.records[0].info["traceback"]


def test_a_fake_cuda_oom_in_process_is_a_budget_stop_and_the_study_goes_on(study_dir):
    check_oom_study(tune(oom_study(study_dir), executor=InProcessExecutor).records)


def test_a_fake_cuda_oom_without_a_gpu_budget_is_still_a_stop_against_the_device_capacity(study_dir):
    study = oom_study(study_dir, budget={}, workloads=[Workload(
        train=trainers.fake_cuda_oom, train_kwargs={"message": TORCH_2}, eval_every=10, steps=30, name="oom")])
    oom = next(r for r in tune(study, executor=InProcessExecutor).records if r.params["batch_size"] == 1500)
    assert oom.status is TrialStatus.STOPPED and oom.stop.rule == "max_gpu_memory_mb"
    assert oom.stop.value == pytest.approx(6.70 * 1024 + 2048) and oom.stop.threshold == pytest.approx(7.79 * 1024)


def test_a_gpu_budget_without_a_gpu_warns_and_other_budgets_do_not(fake_nvml):
    fake_nvml([], init_error=True)
    with pytest.warns(UserWarning, match=r"^\[budget\] max_gpu_memory_mb = 500 but NVML finds no NVIDIA GPU"):
        LocalExecutor(1, rules=[GpuMemoryBudget(500)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LocalExecutor(1, rules=[MemoryBudget(500)])
        warn_if_gpu_budget_unmeasurable([GpuMemoryBudget(500)], lambda: None)  # a GPU can be measured
