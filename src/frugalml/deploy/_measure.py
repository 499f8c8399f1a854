"""Measure a model's serving cost in a fresh process under a :class:`Deploy` envelope."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from frugalml.budgets import BUDGETS, SERVING_METRICS
from frugalml.deploy._envelope import Deploy, machine_cores
from frugalml.exceptions import FrugalError, one_line
from frugalml.metrics import CPU_S
from frugalml.processes import die_with_parent
from frugalml.records import StopInfo, StopKind

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")


class MeasurementError(FrugalError, RuntimeError):
    """The model could not be loaded or timed in a fresh process (one line: why)."""


def probe_cpus(deploy: Deploy) -> list[int]:
    """The cores a measurement is pinned to: the last ``deploy.cores`` this process may use
    (trials are pinned from the first)."""
    return sorted(os.sched_getaffinity(0))[-deploy.cores:] if deploy.cores <= machine_cores() else []


def probe_env(deploy: Deploy) -> dict[str, str]:
    """The measuring process's environment: the envelope's thread count, the driver's import path."""
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(deploy.n_threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    return env


def run_probe(spec: Mapping[str, Any], deploy: Deploy, *, rows: Any = None) -> Any:
    """Run the measuring process on ``spec`` (see :mod:`frugalml.deploy._probe`); ``rows``, an
    array, are the inputs to time (default: the model's input example). A spec with ``batch``
    returns one result per item (``{"error": ...}`` where one failed)."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="frugalml-deploy-") as tmp:
        full = {**spec, "envelope": {**deploy.to_dict(), "threads": deploy.n_threads}, "cpus": probe_cpus(deploy)}
        if rows is not None:
            np.save(Path(tmp) / "rows.npy", np.ascontiguousarray(rows), allow_pickle=False)
            full["rows"] = str(Path(tmp) / "rows.npy")
        (Path(tmp) / "spec.json").write_text(json.dumps(full))
        try:
            done = subprocess.run([sys.executable, "-m", "frugalml.deploy._probe", str(Path(tmp) / "spec.json")],
                                  capture_output=True, text=True, env=probe_env(deploy), timeout=deploy.timeout_s,
                                  preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            raise MeasurementError(
                f"measuring the model took over {deploy.timeout_s:g} s ([deploy] timeout_s)") from None
    if done.returncode != 0:
        why = one_line(done.stderr, last=True) or f"exit status {done.returncode}"
        raise MeasurementError(f"the model could not be measured in a fresh process: {why}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise MeasurementError(f"the measuring process printed no result: {done.stdout[-200:]!r}") from None


def verdict(cost: Mapping[str, float], limits: Mapping[str, float], *, step: int = 0,
            before: str = "") -> StopInfo | None:
    """The first serving budget ``cost`` breaks, as a system stop; None when it fits all."""
    for key, limit in limits.items():
        b = BUDGETS[key]
        value = cost.get(b.metric)
        if value is not None and b.breaks(value, limit):
            side = "<" if b.floor else ">"
            return StopInfo(rule=key, kind=StopKind.SYSTEM, step=step, value=float(value), threshold=float(limit),
                            message=f"{b.what} {value:.4g} {b.unit} {side} budget {limit:g} {b.unit}{before}")
    return None


_CONTEXT = ("p50_ms", "load_s", "cpus", "where", "node", "host", CPU_S)  # kept beside the measured figures


def serving_record(cost: Mapping[str, Any], charged_cpu_s: float) -> dict[str, Any]:
    """What a trial's ``info["serving"]`` keeps of a measurement; ``cpu_s`` is what measuring
    added to this trial's ``cpu_s`` (a measurement shared by several trials is charged once)."""
    return {**{k: v for k, v in cost.items() if k in SERVING_METRICS or k in _CONTEXT}, CPU_S: charged_cpu_s}
