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
3. the same tree's ``gpu_util_percent`` while the child runs matrix products.

Run: ``PYTHONPATH=src python benchmarks/gpu_check.py`` (about 30 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

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
    samples = []
    while child.poll() is None:
        samples.append(monitor.sample().get("gpu_util_percent"))
        time.sleep(0.2)
    found["utilisation"] = max((s for s in samples if s is not None), default=None)
    monitor.close()
    return found


if __name__ == "__main__":
    result = main()
    print(json.dumps(result, indent=2))
    for row in result["allocations"]:
        seen = row["monitor"].get("gpu_memory_mb")
        print(f"requested {row['requested_mb']:.0f} MB: torch reserved {row['torch_reserved_mb']:.0f} MB, "
              f"GpuMonitor {seen if seen is None else round(seen)} MB")
    print(f"peak GPU utilisation seen by GpuMonitor during matmuls: {result['utilisation']}%")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w") as out:
            json.dump(result, out, indent=2)
