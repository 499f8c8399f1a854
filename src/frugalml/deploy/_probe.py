"""The measuring process: ``python -m frugalml.deploy._probe SPEC.json`` prints one JSON line.

It pins itself to the envelope's cores before NumPy loads (the parent sets the thread
variables), loads or builds the model, times ``calls`` predictions of ``batch_size``
rows after ``warmup`` untimed ones, and reports the latency quantile, the throughput
(rows per second of back-to-back calls), the model's serialised size, this process's
memory (RSS − shared) after predicting, and the CPU-seconds the measurement took. Any
failure is one line on stderr and exit status 1.

A spec with ``"batch"`` (several built-in architectures) imports the framework once,
then forks one child per architecture: each child is a fresh process for its model,
without paying the framework's import again (~2.4 CPU-s for torch). A child's RSS −
shared counts the anonymous pages it inherited from the parent (copy-on-write pages are
not "shared" to the kernel's accounting), so it reads as a fresh process that imported the
same and loaded the model; each result's CPU is an even share of the whole batch.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from frugalml.exceptions import one_line
from frugalml.metrics import CPU_S, MODEL_MB, PREDICT_MEMORY_MB, PREDICT_MS, THROUGHPUT_ROWS_S
from frugalml.units import to_mb


def _builtin(spec: dict[str, Any], rows: Any) -> tuple[Callable[[Any], Any], float]:
    """The untrained model of a built-in workload: its serving cost does not depend on its weights."""
    import numpy as np

    from frugalml.workloads import NETWORKS, build_network, check_network, make_estimator

    algorithm, params = spec["algorithm"], spec["params"]
    if algorithm in NETWORKS:
        import torch

        torch.set_num_threads(spec["envelope"]["threads"])
        config = check_network(algorithm, params, spec["n_features"])
        model = build_network(algorithm, config, spec["n_features"], spec["n_outputs"]).eval()
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)

        def predict(X: Any) -> Any:
            with torch.inference_mode():
                return model(torch.from_numpy(np.asarray(X, dtype=np.float32))).argmax(dim=1).numpy()

        return predict, to_mb(buffer.tell())
    import pickle

    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    estimator = make_estimator(algorithm, spec["task"], float(params.get("learning_rate", 0.01)), 0,
                               dataset=spec.get("dataset"))
    labels = np.asarray(spec["labels"])
    kwargs = {"classes": np.unique(labels)} if spec["task"] == "classification" else {}
    estimator.partial_fit(rows, labels, **kwargs)
    model = Pipeline([("scale", StandardScaler().fit(rows)), ("model", estimator)])  # as `frugalml register` serves it
    return model.predict, to_mb(len(pickle.dumps(model)))


def _saved(spec: dict[str, Any], rows: Any) -> tuple[Callable[[Any], Any], float, Any]:
    """The model a trial kept with ``trial.log_model``, called as its MLflow flavour calls it."""
    import numpy as np

    from frugalml.flavors import load_saved

    directory = Path(spec["model_dir"])
    model, flavor, example = load_saved(directory)
    size = sum(f.stat().st_size for f in directory.iterdir() if f.name.startswith("model."))
    if rows is None:
        rows = example
    if rows is None:
        raise ValueError("the model has no input rows to time: pass input_example=X[:5] to trial.log_model")
    if flavor == "mlflow.pytorch":
        import torch

        torch.set_num_threads(spec["envelope"]["threads"])
        model.eval()

        def predict(X: Any) -> Any:
            with torch.inference_mode():
                return model(torch.as_tensor(np.asarray(X, dtype=np.float32)))

        return predict, to_mb(size), rows
    if flavor == "mlflow.xgboost" and type(model).__name__ == "Booster":
        import xgboost

        model.set_param({"nthread": spec["envelope"]["threads"]})
        return (lambda X: model.predict(xgboost.DMatrix(X))), to_mb(size), rows
    if flavor == "mlflow.lightgbm" and type(model).__name__ == "Booster":
        return (lambda X: model.predict(X, num_threads=spec["envelope"]["threads"])), to_mb(size), rows
    if flavor == "mlflow.keras":
        return (lambda X: model.predict(X, verbose=0)), to_mb(size), rows
    return model.predict, to_mb(size), rows


def _batch(rows: Any, size: int) -> Any:
    """``size`` rows, repeating the given ones (an array, a DataFrame or a list)."""
    import numpy as np

    n = len(rows)
    if n == 0:
        raise ValueError("the model's input rows are empty: pass input_example=X[:5] to trial.log_model")
    index = np.arange(size) % n
    if hasattr(rows, "iloc"):
        return rows.iloc[index].reset_index(drop=True)
    if isinstance(rows, np.ndarray):
        return rows[index]
    return [rows[i] for i in index]


def _private_mb() -> float:
    import psutil

    memory = psutil.Process().memory_info()
    return to_mb(memory.rss - memory.shared)


def _cpu_s() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(spec: dict[str, Any]) -> dict[str, float]:
    import numpy as np

    envelope = spec["envelope"]
    rows = np.load(spec["rows"], allow_pickle=False) if spec.get("rows") else None
    started = time.perf_counter()
    if spec["kind"] == "builtin":
        predict, model_mb = _builtin(spec, rows)
    else:
        predict, model_mb, rows = _saved(spec, rows)
    load_s = time.perf_counter() - started
    batch = _batch(rows, envelope["batch_size"])
    for _ in range(envelope["warmup"]):
        predict(batch)
    times = np.empty(envelope["calls"])
    for i in range(len(times)):
        start = time.perf_counter()
        predict(batch)
        times[i] = time.perf_counter() - start
    return {
        PREDICT_MS: float(np.quantile(times, envelope["quantile"]) * 1e3),
        THROUGHPUT_ROWS_S: float(envelope["batch_size"] / times.mean()),
        MODEL_MB: float(model_mb),
        PREDICT_MEMORY_MB: float(_private_mb()),
        "p50_ms": float(np.median(times) * 1e3),
        "load_s": float(load_s),
        "cpus": sorted(os.sched_getaffinity(0)),
    }


def _import_frameworks(specs: list[dict[str, Any]]) -> None:
    """What every child would import: NumPy, psutil, the workloads, and torch for networks."""
    import numpy  # noqa: F401
    import psutil  # noqa: F401

    import frugalml.workloads  # noqa: F401

    if any(spec.get("algorithm") in ("mlp", "cnn") for spec in specs):
        import torch  # noqa: F401


def measure_batch(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each spec measured in a child forked from this (warm) process; a failed one is ``{"error": ...}``."""
    _import_frameworks(specs)
    results = []
    for spec in specs:
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one model, then gone without running the parent's clean-up
            os.close(reader)
            try:
                payload = json.dumps(measure(spec))
            except BaseException as error:  # noqa: BLE001 - one line back to the parent
                payload = json.dumps({"error": one_line(error, typed=True)})
            os.write(writer, payload.encode())
            os._exit(0)
        os.close(writer)
        with os.fdopen(reader) as pipe:
            text = pipe.read()
        os.waitpid(pid, 0)
        results.append(json.loads(text) if text else {"error": "the measuring child died (out of memory?)"})
    share = _cpu_s() / max(len(specs), 1)  # the whole process (start-up, imports, every child), split evenly
    for result in results:
        result[CPU_S] = share
    return results


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    if spec.get("cpus"):
        os.sched_setaffinity(0, spec["cpus"])
    try:
        if "batch" in spec:
            print(json.dumps(measure_batch([{**item, "envelope": spec["envelope"], "rows": spec.get("rows")}
                                            for item in spec["batch"]])))
            return 0
        result = measure(spec)
    except Exception as error:  # noqa: BLE001 - any failure to load or predict: one line for the parent
        print(one_line(error, typed=True), file=sys.stderr)
        return 1
    result[CPU_S] = _cpu_s()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
