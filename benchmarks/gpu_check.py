"""The device check: what frugalml measures on a real NVIDIA GPU, against what the GPU says.

Meant for the lent GPU machine (the tests fake NVML everywhere else). It needs only
the Python there with ``torch`` and ``pynvml`` (``nvidia-ml-py``) importable and this
repository's ``src`` on ``PYTHONPATH``; it installs nothing (that machine reaches no
package index). It prints, and writes ``$OUT/gpu_check.json`` when ``OUT`` is set:

1. the devices (name, memory, driver) as NVML reports them;
2. a child process that allocates 256 MB, then 1024 MB on ``cuda:0``: ``GpuMonitor``'s
   per-process ``gpu_memory_mb`` of its tree beside ``torch.cuda.memory_reserved`` and
   ``max_memory_allocated`` the child reports, at each size (per-process accounting
   includes the CUDA context, ~300-500 MB, so the monitor reads more than the allocator);
3. the same tree's ``gpu_util_percent`` while the child runs matrix products;
4. a real study (worker processes, watchdog) whose trial allocates 1 GiB per step on
   ``cuda:0`` past a per-process memory fraction: the CUDA out-of-memory error must be a
   ``max_gpu_memory_mb`` budget stop (STOPPED, kind "system") and the other trial of the
   study must complete;
5. the built-in MLP (``network_train``) on synthetic data in a real study: PyTorch's
   ``torch_gpu_peak_allocated_mb`` (trial info) beside the watchdog's NVML per-process
   ``gpu_memory_mb`` peak (NVML adds the CUDA context and the allocator's cache);
6. energy during step 3's matrix products: ``EnergyMonitor``'s GPU joules for the
   child's tree and the device's energy counter, against power x time integrated from
   ``nvmlDeviceGetPowerUsage`` sampled independently every 50 ms (target: within 10 %).

Run: ``PYTHONPATH=src python benchmarks/gpu_check.py`` (about a minute).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, time, torch
x = []
for mb in (256, 1024):
    x.append(torch.empty(mb * 2**20 // 4 - sum(t.numel() for t in x), dtype=torch.float32, device="cuda:0"))
    torch.cuda.synchronize()
    print(mb, torch.cuda.memory_reserved() / 2**20, torch.cuda.max_memory_allocated() / 2**20, flush=True)
    sys.stdin.readline()
a = torch.randn(4096, 4096, device="cuda:0")
end = time.time() + 5
while time.time() < end:
    a = (a @ a).clamp_(-1, 1)
torch.cuda.synchronize()
print("done", flush=True)
"""


MLP_POINTS = [{"width": 1024, "depth": 2, "batch_size": 256}, {"width": 4096, "depth": 4, "batch_size": 2048}]
OOM_FRACTION = 0.05  # of the device's memory: ~7 GB on an H200, reached in a few 1 GiB steps


def grow_until_oom(trial, steps: int = 400) -> None:
    """A training function (for a worker process): 1 GiB more on cuda:0 per step when
    ``params["grow"]``, within a per-process memory fraction, so it runs out of GPU memory."""
    import torch

    torch.cuda.set_per_process_memory_fraction(OOM_FRACTION, 0)
    held = [torch.empty(64 * 2**20 // 4, device="cuda:0")]
    for step in range(1, steps + 1):
        if trial.params["grow"]:
            held.append(torch.empty(2**30 // 4, device="cuda:0").fill_(1.0))
        torch.cuda.synchronize()
        time.sleep(0.2)  # the watchdog samples NVML every 0.1 s
        trial.step(loss=1.0 / step)
        if step == 20 and not trial.params["grow"]:
            return


def oom_check(directory: Path) -> dict:
    """A CUDA out-of-memory error in a worker process: a budget stop, and the study goes on."""
    from frugalml import Search, Study, Workload, tune

    study = Study(
        name="gpu-oom", workloads=[Workload(train=grow_until_oom, eval_every=5, steps=400, name="grow")],
        search=Search(space={"grow": [True, False]}, points=[{"grow": True}, {"grow": False}]),
        budget={"max_gpu_memory_mb": 100_000}, workers=1, sample_interval_s=0.1, directory=str(directory),
        mlflow_uri=None,
    )
    found = {}
    for record in tune(study).records:
        found["grow" if record.params["grow"] else "steady"] = {
            "status": record.status.value, "error": record.error, "steps_done": record.steps_done,
            "stop": None if record.stop is None else {k: record.stop.__dict__[k] for k in (
                "rule", "kind", "step", "value", "threshold", "message")},
            "peak_gpu_memory_mb": record.peak("gpu_memory_mb"),
        }
    grow, steady = found.get("grow", {}), found.get("steady", {})
    found["ok"] = bool(grow.get("status") == "stopped" and (grow.get("stop") or {}).get("rule") == "max_gpu_memory_mb"
                       and (grow.get("stop") or {}).get("kind") == "system" and steady.get("status") == "completed")
    return found


def mlp_memory_check(directory: Path) -> dict:
    """The built-in MLP on cuda: the allocator's peak beside NVML's per-process peak."""
    import numpy as np

    from frugalml import Search, Study, Workload, tune

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20_000, 784)).astype(np.float32)
    y = (X[:, :10].argmax(axis=1)).astype(np.int64)
    np.savez(directory / "synthetic.npz", X=X, y=y)
    points = MLP_POINTS
    study = Study(
        name="gpu-mlp",
        workloads=[Workload(path=str(directory / "synthetic.npz"), target="y", algorithm="mlp", max_steps=60,
                            eval_every=20, name="synthetic-mlp")],
        search=Search(space={k: sorted({p[k] for p in points}) for k in points[0]}, points=points),
        workers=1, sample_interval_s=0.1, directory=str(directory / "study"), mlflow_uri=None,
    )
    rows = []
    for record in tune(study).records:
        allocated, nvml = record.info.get("torch_gpu_peak_allocated_mb"), record.peak("gpu_memory_mb")
        rows.append({"params": dict(record.params), "status": record.status.value, "device": record.info.get("device"),
                     "torch_gpu_peak_allocated_mb": allocated, "nvml_peak_gpu_memory_mb": nvml,
                     "nvml_minus_torch_mb": None if allocated is None or nvml is None else nvml - allocated})
    return {"trials": rows, "ok": all(r["device"] == "cuda" and r["torch_gpu_peak_allocated_mb"] for r in rows)}


def main() -> dict:
    import pynvml

    from frugalml.monitors import GpuMonitor

    pynvml.nvmlInit()
    devices = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        name = pynvml.nvmlDeviceGetName(handle)
        devices.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                        "memory_mb": pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20})
    driver = pynvml.nvmlSystemGetDriverVersion()
    found: dict = {"devices": devices, "driver": driver.decode() if isinstance(driver, bytes) else driver,
                   "allocations": [], "utilisation": None}
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    monitor = GpuMonitor(child.pid)
    found["monitor_available"] = monitor.available
    for _ in range(2):
        requested, reserved, peak = child.stdout.readline().split()
        time.sleep(1.0)  # NVML's per-process accounting lags an allocation
        found["allocations"].append({"requested_mb": float(requested), "torch_reserved_mb": float(reserved),
                                     "torch_max_allocated_mb": float(peak), "monitor": monitor.sample()})
        child.stdin.write("\n")
        child.stdin.flush()
    from frugalml.monitors import EnergyMonitor, ProcessTreeMonitor

    tree = ProcessTreeMonitor(child.pid)
    tree.sample()
    energy = EnergyMonitor(lambda: tree.cpu_s, lambda: [0])
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    counter_start, started = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.monotonic()
    samples, power_j, last = [], 0.0, started
    next_util = started
    while child.poll() is None:
        now = time.monotonic()
        power_j += pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0 * (now - last)  # mW over the last interval
        last = now
        if now >= next_util:
            samples.append(monitor.sample().get("gpu_util_percent"))
            tree.sample()
            energy.sample()
            next_util = now + 0.2
        time.sleep(0.05)
    tree.sample()
    energy.sample()
    counter_j = (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - counter_start) / 1000.0
    monitor_gpu_j = energy._gpu_j  # the GPU part of the trial's joules
    found["energy"] = {"seconds": last - started, "power_x_time_j": power_j, "nvml_counter_j": counter_j,
                       "energy_monitor_gpu_j": monitor_gpu_j, "source": energy.source,
                       "counter_vs_power": counter_j / power_j - 1 if power_j else None,
                       "monitor_vs_power": monitor_gpu_j / power_j - 1 if power_j else None,
                       "ok": bool(power_j) and abs(counter_j / power_j - 1) <= 0.10}
    energy.close()
    tree.close()
    found["utilisation"] = max((s for s in samples if s is not None), default=None)
    monitor.close()
    with tempfile.TemporaryDirectory(prefix="frugalml-gpu-check-") as tmp:
        for name, check in (("oom", oom_check), ("mlp_memory", mlp_memory_check)):
            try:
                found[name] = check(Path(tmp) / name)
            except Exception as error:  # noqa: BLE001 - report every part, whichever fails
                found[name] = {"ok": False, "error": f"{type(error).__name__}: {error}".splitlines()[0]}
    return found


if __name__ == "__main__":
    result = main()
    print(json.dumps(result, indent=2))
    for row in result["allocations"]:
        seen = row["monitor"].get("gpu_memory_mb")
        print(f"requested {row['requested_mb']:.0f} MB: torch reserved {row['torch_reserved_mb']:.0f} MB, "
              f"GpuMonitor {seen if seen is None else round(seen)} MB")
    print(f"peak GPU utilisation seen by GpuMonitor during matmuls: {result['utilisation']}%")
    oom = result["oom"]
    stop = (oom.get("grow") or {}).get("stop") or {}
    print(f"CUDA OOM trial: {(oom.get('grow') or {}).get('status')} by {stop.get('rule')} ({stop.get('kind')}), "
          f"value {stop.get('value')} MB, threshold {stop.get('threshold')} MB; other trial "
          f"{(oom.get('steady') or {}).get('status')}; ok={oom['ok']} {oom.get('error', '')}")
    for row in result["mlp_memory"].get("trials", []):
        print(f"MLP {row['params']}: torch max_memory_allocated {row['torch_gpu_peak_allocated_mb']} MB, "
              f"NVML per-process peak {row['nvml_peak_gpu_memory_mb']} MB (NVML - torch: {row['nvml_minus_torch_mb']})")
    print(f"MLP memory check ok={result['mlp_memory']['ok']} {result['mlp_memory'].get('error', '')}")
    e = result["energy"]
    print(f"energy over {e['seconds']:.1f} s of matmuls: power x time {e['power_x_time_j']:.1f} J, NVML counter "
          f"{e['nvml_counter_j']:.1f} J ({e['counter_vs_power']:+.1%}), EnergyMonitor GPU part "
          f"{e['energy_monitor_gpu_j']:.1f} J ({e['monitor_vs_power']:+.1%}), source {e['source']}; ok={e['ok']}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w") as out:
            json.dump(result, out, indent=2)
