"""Memory of a ``frugalml serve`` process per MLflow flavour, and which heavy packages it imports.

For each flavour ``frugalml serve`` supports, one small classifier on diabetes is saved as
an MLflow model with frugalml's reference file, the way ``frugalml register`` makes it:

* scikit-learn: the logistic-regression pipeline ``register`` refits (``fit_model`` +
  ``build_reference`` + ``frugalml.serve.save_model``, as tests/serve/conftest.py does);
* XGBoost, LightGBM, PyTorch, Lightning, Keras (``KERAS_BACKEND=torch``): a model a trial
  logged (``frugalml.flavors.save_model`` then ``export_mlflow``), its reference built from
  the logged data (``reference_from_table``), a network made to answer labels
  (``as_classifier``) and the extra files added, as ``registry._log_model_dir`` does.
  The Lightning module's class lives in a user module, put on the server's ``PYTHONPATH``.

Each model is served as a user would serve it: ``.venv/bin/frugalml serve <dir> --port P`` in a
subprocess, one at a time. Once ``/health`` answers, 500 single-row ``POST /predict`` requests
are sent (httpx, one keep-alive connection) and ``/metrics`` is scraped once; then the
server's memory is read with psutil's ``memory_full_info()``: RSS, RSS - shared (what the
process adds beyond file-backed pages other processes may share, e.g. ``.so`` text) and USS
(pages only this process maps). Printed: one row per flavour, then the heavy packages the
server imported, each with its import time (the server runs with
``PYTHONPROFILEIMPORTTIME=1``, which writes one stderr line per import: a few ms in all) and
the RSS of its native libraries (``/proc/<pid>/smaps``), so a reader sees whether a server
imports only what its flavour needs.

Target (the issue): a scikit-learn model's server <= 250 MB RSS.

    nice -n 10 .venv/bin/python benchmarks/serve_memory.py [--requests 500] [--flavours sklearn,pytorch]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports Keras, here and in the servers
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

MB = 1024 * 1024
TARGET_SKLEARN_RSS_MB = 250
FRUGALML = Path(sys.executable).parent / "frugalml"

# The serving stack every server needs, whatever the flavour; anything else heavy must come from the model.
SERVING = ("numpy", "pandas", "mlflow", "fastapi", "starlette", "uvicorn", "pydantic", "prometheus_client",
           "cloudpickle")
# Packages whose import costs memory or start-up time, looked for in every server.
HEAVY = SERVING + (
    "sklearn", "scipy", "xgboost", "lightgbm", "torch", "lightning", "pytorch_lightning", "lightning_fabric",
    "torchmetrics", "keras", "tensorflow", "jax", "transformers", "pyarrow", "sqlalchemy", "alembic", "skops",
    "matplotlib", "sympy", "networkx", "PIL", "h5py", "optree", "ml_dtypes", "rich", "requests", "yaml",
    "opentelemetry", "google", "databricks", "git", "flask", "numba", "polars", "ray", "safetensors", "jinja2",
)

LIGHTNING_MODULE = '''
"""A user's LightningModule (its class is pickled by reference: the server imports this module)."""

import lightning
import torch
import torch.nn.functional as F


class DiabetesNet(lightning.LightningModule):
    def __init__(self, features: int = 8, hidden: int = 8) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.BatchNorm1d(features), torch.nn.Linear(features, hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_index):
        inputs, labels = batch
        return F.cross_entropy(self(inputs), labels)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)
'''


@dataclass
class Flavour:
    name: str
    build: Callable[[Path, Any, np.ndarray], Path]  # (folder, X frame, y) -> MLflow model directory
    needs: tuple[str, ...]  # the heavy packages the flavour itself needs (beyond SERVING)


@dataclass
class Measured:
    flavour: str
    model_mb: float = float("nan")
    rss_mb: float = float("nan")
    rss_minus_shared_mb: float = float("nan")
    uss_mb: float = float("nan")
    ready_s: float = float("nan")
    predict_ms: float = float("nan")
    children: int = 0
    imports: dict[str, Imported] = field(default_factory=dict)  # heavy package -> how it was imported
    native_mb: dict[str, float] = field(default_factory=dict)  # package -> RSS of its mapped files
    error: str = ""


# -- the models --------------------------------------------------------------------------------


def _diabetes() -> tuple[Any, np.ndarray]:
    import pandas as pd

    data_dir = os.environ.get("FRUGALML_DATA_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                                    "data")
    frame = pd.read_csv(os.path.join(data_dir, "diabetes.csv.gz"))
    return frame.drop(columns="target"), (frame["target"] == "tested_positive").to_numpy("int64")


def _registered(model: Any, folder: Path, X: Any, y: np.ndarray, input_example: Any) -> Path:
    """The MLflow model ``register`` makes of a model a trial logged with ``trial.log_model`` and
    ``trial.log_reference``: exported in its flavour, fingerprinted, networks answering labels."""
    from frugalml.flavors import TARGET, export_mlflow, read_reference, save_model, save_reference
    from frugalml.serve import as_classifier, extra_files, load_predictor, reference_from_table

    saved, _ = save_model(model, folder / "trial", input_example=input_example)
    reference_path = save_reference(folder / "trial", X, y)
    target = export_mlflow(saved, folder / "model")
    predictor = load_predictor(target, str(target))
    reference = reference_from_table(predictor, reference_path)
    classes = getattr(predictor, "classes_", None)
    if reference.task == "classification" and classes is not None:
        frame, _ = read_reference(reference_path)
        as_classifier(target, classes, reference.feature_names, frame.drop(columns=TARGET))
    (target / "extra_files").mkdir(exist_ok=True)
    extra_files(target / "extra_files", reference)
    return target


def build_sklearn(folder: Path, X: Any, y: np.ndarray) -> Path:
    from frugalml.registry import build_reference, fit_model, raw_split
    from frugalml.serve import save_model
    from frugalml.workloads import prepare_dataset, resolve_dataset

    data = prepare_dataset(resolve_dataset("diabetes"), seed=0)
    model = fit_model(data, "logistic_regression", {"batch_size": 32, "learning_rate": 0.01})
    return save_model(model, build_reference(model, data, raw_split(data)), folder / "model")


def build_xgboost(folder: Path, X: Any, y: np.ndarray) -> Path:
    from xgboost import XGBClassifier

    model = XGBClassifier(n_estimators=50, max_depth=3, n_jobs=1, random_state=0).fit(X, y)
    return _registered(model, folder, X, y, X.head(3))


def build_lightgbm(folder: Path, X: Any, y: np.ndarray) -> Path:
    from lightgbm import LGBMClassifier

    model = LGBMClassifier(n_estimators=50, num_leaves=15, n_jobs=1, verbose=-1, random_state=0).fit(X, y)
    return _registered(model, folder, X, y, X.head(3))


def build_pytorch(folder: Path, X: Any, y: np.ndarray) -> Path:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    inputs, labels = torch.from_numpy(X.to_numpy("float32")), torch.from_numpy(y)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(X.shape[1]), torch.nn.Linear(X.shape[1], 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    model.eval()
    return _registered(model, folder, X, y, X.to_numpy("float32")[:3])


def build_lightning(folder: Path, X: Any, y: np.ndarray) -> Path:
    import importlib

    import lightning
    import torch

    modules = folder / "user"
    modules.mkdir(parents=True, exist_ok=True)
    (modules / "bench_lightning_net.py").write_text(LIGHTNING_MODULE)
    sys.path.insert(0, str(modules))
    net = importlib.import_module("bench_lightning_net")
    torch.manual_seed(0)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(X.to_numpy("float32")), torch.from_numpy(y))
    model = net.DiabetesNet(X.shape[1], 8)
    trainer = lightning.Trainer(max_epochs=30, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(folder))
    trainer.fit(model, torch.utils.data.DataLoader(dataset, batch_size=len(dataset)))
    model.eval()
    return _registered(model, folder, X, y, X.to_numpy("float32")[:3])


def build_keras(folder: Path, X: Any, y: np.ndarray) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    values = X.to_numpy("float32")
    normalise = keras.layers.Normalization()
    normalise.adapt(values)
    model = keras.Sequential([keras.Input((X.shape[1],)), normalise, keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(values, y, batch_size=64, epochs=3, verbose=0)
    return _registered(model, folder, X, y, values[:3])


FLAVOURS = {
    "sklearn": Flavour("sklearn", build_sklearn, ("sklearn", "scipy")),
    "xgboost": Flavour("xgboost", build_xgboost, ("xgboost",)),
    "lightgbm": Flavour("lightgbm", build_lightgbm, ("lightgbm",)),
    "pytorch": Flavour("pytorch", build_pytorch, ("torch",)),
    "lightning": Flavour("lightning", build_lightning, ("torch", "lightning", "lightning_fabric", "torchmetrics")),
    "keras": Flavour("keras", build_keras, ("keras", "torch", "optree", "ml_dtypes")),
}


# -- one server --------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _size_mb(directory: Path) -> float:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / MB


@dataclass(frozen=True)
class Imported:
    """A heavy package as the server imported it: the time its own modules took, how many, and who asked."""

    self_ms: float
    modules: int
    via: str  # the module outside the package that imported it first; "run time": a lazy import in a function


def _imports(log: str) -> dict[str, Imported]:
    """The heavy packages in ``PYTHONPROFILEIMPORTTIME`` lines (``self | cumulative | <indent>name``,
    each module printed after the modules it imported, nested one more level)."""
    lines = [(int(m.group(1)), len(m.group(2)), m.group(3)) for m in
             re.finditer(r"^import time:\s+(\d+) \|\s+\d+ \|( *)(\S+)$", log, re.MULTILINE)]
    found: dict[str, Imported] = {}
    for package in HEAVY:
        own = [(i, indent) for i, (_, indent, name) in enumerate(lines) if name.partition(".")[0] == package]
        if not own:
            continue
        entry, depth = min(own, key=lambda item: item[1])  # the outermost import of the package
        via = next((name for _, indent, name in lines[entry + 1:] if indent < depth), "run time")
        found[package] = Imported(sum(lines[i][0] for i, _ in own) / 1000, len(own), via)
    return found


def _native_mb(process: Any) -> dict[str, float]:
    """RSS of the files a process maps, per site-packages top-level package (``.so`` files mostly)."""
    totals: dict[str, float] = {}
    for mapping in process.memory_maps(grouped=True):
        match = re.search(r"/site-packages/([^/]+)/", mapping.path)
        if match:
            package = match.group(1).removesuffix(".libs")
            package = "torch" if package.startswith("nvidia") else package
            totals[package] = totals.get(package, 0.0) + mapping.rss / MB
    return totals


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(flavour: Flavour, model_dir: Path, rows: np.ndarray, requests: int, folder: Path,
            ready_timeout_s: float, pythonpath: list[str] | None = None) -> Measured:
    """Serve ``model_dir`` with ``frugalml serve``, send ``requests`` single-row predictions, read its memory."""
    import httpx
    import psutil

    result = Measured(flavour.name, model_mb=_size_mb(model_dir))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    if pythonpath:  # the user's modules the model was pickled from
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    log_path = folder / f"server-{flavour.name}.log"
    with log_path.open("w") as log, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                                  trust_env=False) as client:
        started = time.perf_counter()
        process = subprocess.Popen([str(FRUGALML), "serve", str(model_dir), "--port", str(port), "--log-level",
                                    "warning"], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"exited with {process.returncode}: {_last_error(log_path)}")
                if time.perf_counter() - started > ready_timeout_s:
                    raise RuntimeError(f"not ready after {ready_timeout_s:.0f} s: {_last_error(log_path)}")
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            result.ready_s = time.perf_counter() - started
            t0 = time.perf_counter()
            for i in range(requests):
                answer = client.post("/predict", json={"instances": [rows[i % len(rows)].tolist()]})
                if answer.status_code != 200:
                    raise RuntimeError(f"/predict answered {answer.status_code}: {answer.text[:200]}")
            result.predict_ms = (time.perf_counter() - t0) / requests * 1000
            if client.get("/metrics").status_code != 200:
                raise RuntimeError("/metrics did not answer 200")
            server = psutil.Process(process.pid)
            memory = server.memory_full_info()
            result.rss_mb, result.uss_mb = memory.rss / MB, memory.uss / MB
            result.rss_minus_shared_mb = (memory.rss - memory.shared) / MB
            result.children = len(server.children(recursive=True))
            result.native_mb = _native_mb(server)
        except Exception as error:  # noqa: BLE001 - one line per flavour that cannot be served
            result.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300] if str(error) else ''}"
        finally:
            _stop(process)
    result.imports = _imports(log_path.read_text(errors="replace"))
    return result


def _last_error(log_path: Path) -> str:
    """The server's last log line that is not an import-time line (its one-line error, usually)."""
    lines = [line for line in log_path.read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith("import time:")]
    return lines[-1][:300] if lines else "(no output)"


# -- the report --------------------------------------------------------------------------------


def print_table(results: list[Measured]) -> None:
    print(f"\n{'flavour':<10} {'model MB':>8} {'RSS MB':>7} {'RSS-shared MB':>13} {'USS MB':>7} {'ready s':>7} "
          f"{'predict ms':>10}")
    for r in results:
        if r.error and np.isnan(r.rss_mb):
            print(f"{r.flavour:<10} {r.model_mb:>8.2f}  cannot be served: {r.error}")
            continue
        print(f"{r.flavour:<10} {r.model_mb:>8.2f} {r.rss_mb:>7.0f} {r.rss_minus_shared_mb:>13.0f} {r.uss_mb:>7.0f} "
              f"{r.ready_s:>7.1f} {r.predict_ms:>10.2f}" + (f"  ({r.children} child processes)" if r.children else ""))


def print_imports(results: list[Measured]) -> None:
    print("\nheavy packages each server imported: import ms of the package's own modules, modules imported, "
          "RSS MB of its mapped files (.so), and for packages beyond the flavour the module that imported it")
    for r in results:
        if not r.imports:
            continue
        needs = set(FLAVOURS[r.flavour].needs) | set(SERVING)

        def cell(name: str, via: bool) -> str:
            imported, native = r.imports[name], r.native_mb.get(name, 0.0)
            return (f"{name} {imported.self_ms:.0f}ms/{imported.modules}" + (f"/{native:.0f}MB" if native >= 1 else "")
                    + (f" (via {imported.via})" if via and imported.via else ""))

        ordered = sorted(r.imports, key=lambda n: -r.imports[n].self_ms)
        print(f"  {r.flavour}:")
        print(f"    serving + flavour: {', '.join(cell(n, False) for n in ordered if n in needs)}")
        beyond = [n for n in ordered if n not in needs]
        print(f"    beyond the flavour: {', '.join(cell(n, True) for n in beyond) or '(none)'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=500, help="single-row /predict requests per server")
    parser.add_argument("--flavours", default=",".join(FLAVOURS), help=f"comma-separated, of {', '.join(FLAVOURS)}")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds a server may take to start")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.flavours.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in FLAVOURS]
    if unknown:
        parser.error(f"--flavours must be among {', '.join(FLAVOURS)}; got {', '.join(unknown)}.")
    if args.requests < 1:
        parser.error(f"--requests must be an int in the range [1, inf). Got {args.requests} instead.")

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; "
          f"niceness {os.nice(0)}; {args.requests} single-row requests per server")
    import logging
    import warnings

    import mlflow  # noqa: F401 - it sets its loggers' levels on import: quieten them after

    warnings.filterwarnings("ignore")  # MLflow's and Lightning's hints while saving: not what is measured
    for logger in ("mlflow", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    X, y = _diabetes()
    rows = X.to_numpy("float64")[600:]
    results: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="serve-memory-") as tmp:
        for name in chosen:
            flavour = FLAVOURS[name]
            folder = Path(tmp) / name
            folder.mkdir()
            started = time.perf_counter()
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # Keras's progress bars while it predicts
                    model_dir = flavour.build(folder, X, y)
            except Exception as error:  # noqa: BLE001 - one line per flavour that cannot be saved
                results.append(Measured(name, error=f"cannot save the model: {type(error).__name__}: {error}"))
                print(f"{name}: {results[-1].error}", flush=True)
                continue
            built_s = time.perf_counter() - started
            user = [str(folder / "user")] if (folder / "user").is_dir() else None
            results.append(measure(flavour, model_dir, rows, args.requests, folder, args.ready_timeout, user))
            r = results[-1]
            print(f"{name}: model built in {built_s:.1f} s; server ready in {r.ready_s:.1f} s"
                  + (f"; {r.error}" if r.error else f", RSS {r.rss_mb:.0f} MB"), flush=True)
    print_table(results)
    print_imports(results)
    sklearn = next((r for r in results if r.flavour == "sklearn" and not r.error), None)
    if sklearn is not None:
        verdict = "meets" if sklearn.rss_mb <= TARGET_SKLEARN_RSS_MB else "misses"
        print(f"\nscikit-learn server: {sklearn.rss_mb:.0f} MB RSS {verdict} the target of <= "
              f"{TARGET_SKLEARN_RSS_MB} MB")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
