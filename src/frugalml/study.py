"""Study specifications: what to tune, on what, within which budgets.

A study is usually written as a TOML file (see README) and loaded with
:func:`load_study`; the same objects can be built in Python::

    study = Study(
        name="diabetes-svm",
        workloads=[Workload(dataset="diabetes", algorithm="svm")],
        search=Search(space={"batch_size": [30, 300], "learning_rate": [0.1, 0.01]}),
        budget={"max_memory_mb": 400},
    )
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from frugalml.budgets import SERVE, SERVING_METRICS, names
from frugalml.budgets import serving as serving_budgets
from frugalml.deploy import Deploy
from frugalml.exceptions import ConfigError, FrugalError
from frugalml.ownership import STUDIES_ROOT
from frugalml.prediction import PREDICTED_METRICS, PredictionSettings
from frugalml.names import ALLOWED, check_name, name_problem
from frugalml.search import Search, check_size, grid_size
from frugalml.stopping import StoppingRule, as_rules, rules_from_config
from frugalml.store import ResultStore
from frugalml.validation import Interval, check, check_keys, printable, read_toml

DEFAULT_MLFLOW = "default"
BUILTIN_PARAMS = frozenset({"batch_size", "learning_rate", "alpha"})  # what sgd_train reads
BUILTIN_REQUIRED = {"batch_size": 300, "learning_rate": 0.01}  # what it cannot train without: an example value
MAX_WORKERS = Interval(int, 1, 1024, closed="both")  # trials at once; each is a process (or a Ray task)
BACKENDS = ("local", "ray")  # an embedded sqlite MLflow store in the study directory


@dataclass
class Workload:
    """A dataset and an algorithm (built-in), or the user's own training function.

    Args:
        dataset: a built-in dataset name (``mnist_784``, ``diabetes``, ``wave_energy``,
            ``red_wine``, ``casp_protein``), or None with ``path``.
        path: a CSV/Parquet/npz file; ``target`` names its target column.
        algorithm: ``linear_regression``, ``perceptron``, ``logistic_regression`` or ``svm``
            (SGD, as in the thesis), or ``mlp`` / ``cnn`` (PyTorch networks; their
            architecture parameters go in the search space, see ``frugalml.workloads``).
        train: your own ``train(trial, **train_kwargs)`` function (or ``"module:function"``);
            replaces the built-in SGD loop.
        epochs / max_steps: how long a trial trains (``max_steps`` caps it).
        steps: the planned length of your own training function, in steps (or call
            ``trial.plan(n)`` from it); with it, compute saved and predicted stops work.
        eval_every: steps per evaluation window.
        eval_rows: a built-in workload evaluates its windows before the last on the first
            ``eval_rows`` rows of the (shuffled) test split, and the last on all of it: an
            intermediate evaluation for halving or patience then costs a fraction of the
            training it can save (None: every evaluation uses the whole split). A trial a
            rule stops keeps a sampled value as its last (its ``info["eval_rows"]`` says so).
        data_format: ``numpy`` (memory-mapped arrays) or ``pandas`` (a DataFrame
            sliced per batch, as ``fetch_openml`` returns it).
        params: fixed parameters merged into every configuration.
    """

    dataset: str | None = None
    path: str | None = None
    target: str | None = None
    algorithm: str | None = None
    train: Callable[..., None] | str | None = None
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 1
    max_steps: int | None = None
    steps: int | None = None
    eval_every: int = 100
    eval_rows: int | None = None
    data_format: str = "numpy"
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        _check_types(self, lambda key: "workload")
        if self.train is not None and not (callable(self.train) or isinstance(self.train, str)):
            raise ConfigError(f"workload 'train' must be a function or 'module:function'. Got {self.train!r} instead.")
        if self.train is None and (self.dataset is None) == (self.path is None):
            raise ConfigError("A workload needs exactly one of 'dataset' or 'path' (or a 'train' function).")
        if self.train is None and self.algorithm is None:
            raise ConfigError(
                "A workload needs 'algorithm' (linear_regression, perceptron, logistic_regression, svm, mlp or cnn)."
            )
        for key in ("epochs", "eval_every"):
            _positive_int(f"workload '{key}'", getattr(self, key))
        if self.train is None and self.steps is not None:
            raise ConfigError("workload 'steps' is the planned length of your own training function; a built-in "
                              "workload plans from 'epochs' and 'max_steps': remove 'steps'.")
        if self.train is not None and self.eval_rows is not None:
            raise ConfigError("workload 'eval_rows' samples a built-in workload's test split; your own training "
                              "function picks its own validation rows: remove 'eval_rows'.")
        for key in ("max_steps", "steps", "eval_rows"):
            if getattr(self, key) is not None:
                _positive_int(f"workload '{key}'", getattr(self, key))
        if self.data_format not in ("numpy", "pandas"):
            raise ConfigError(f"workload 'data_format' must be 'numpy' or 'pandas'. Got {self.data_format!r} instead.")
        if self.name is None:
            source = self.dataset or (Path(self.path).name.split(".")[0] if self.path else None)
            train_name = self.train if isinstance(self.train, str) else getattr(self.train, "__name__", None)
            self.name = "-".join(p for p in (source, self.algorithm or (train_name or "").split(":")[-1]) if p)
            if (problem := name_problem(self.name)) is not None:
                raise ConfigError(f"the workload name made from its source, {ascii(self.name)}, is not allowed "
                                  f"({problem}); give the workload a 'name': {ALLOWED}.")
        check_name("workload", self.name)


@dataclass
class Study:
    """A full study: workloads × search × repeats, under budgets and stopping rules.

    Args:
        name: the study's name; results go to ``directory`` (default ``studies/<name>``).
        workloads: what to train.
        search: the search space and method.
        budget: system budgets, e.g. ``{"max_memory_mb": 400, "max_mean_step_ms": 50}``.
        stopping: learning rules, e.g. ``{"patience": 5, "median": True}``.
        rules: extra :class:`~frugalml.stopping.StoppingRule` objects or callables.
        workers: trials run at once; repeats: runs per configuration.
        mlflow_uri: ``"default"`` (sqlite in the study directory), any tracking URI, or None.
        prediction: the cost model's settings, e.g. ``{"skip": True, "confidence": 0.9}``
            (see :class:`frugalml.prediction.PredictionSettings`); empty: no prediction.
        deploy: where and how serving budgets are measured, e.g. ``{"cores": 1, "batch_size": 1}``
            (see :class:`frugalml.deploy.Deploy`).
    """

    name: str
    workloads: list[Workload]
    search: Search = field(default_factory=Search)
    budget: dict[str, Any] = field(default_factory=dict)
    stopping: dict[str, Any] = field(default_factory=dict)
    rules: list[Any] = field(default_factory=list)
    workers: int = 1
    repeats: int = 1
    seed: int = 0
    directory: str | None = None
    mlflow_uri: str | None = DEFAULT_MLFLOW
    sample_interval_s: float = 0.1
    hang_timeout_s: float = 600.0
    pin: bool = True
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0
    data_dir: str | None = None
    backend: str = "local"
    address: str | None = None
    prediction: dict[str, Any] = field(default_factory=dict)
    deploy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("study", self.name)
        if self.directory is not None and (not isinstance(self.directory, str) or not printable(self.directory)
                                           or not self.directory.strip()):
            raise ConfigError(f"study 'directory' must be a folder path of printable characters. "
                              f"Got {ascii(self.directory)} instead.")
        if self.directory is not None and any(len(part.encode()) > 255 for part in Path(self.directory).parts):
            raise ConfigError(f"study 'directory' has a folder name over 255 bytes, more than filesystems allow: "
                              f"{ascii(self.directory[:60])}...")
        if not self.workloads:
            raise ConfigError("A study needs at least one [[workloads]] entry.")
        self.workloads = [w if isinstance(w, Workload) else Workload(**w) for w in self.workloads]
        names = [w.name for w in self.workloads]
        if len(set(names)) != len(names):
            raise ConfigError(f"Workload names must be unique; got {names}. Give each a distinct 'name'.")
        _check_types(self, _study_table)
        check("[study]", "workers", self.workers, MAX_WORKERS)
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"study 'seed' must be an int in the range [0, 2**32). Got {self.seed!r} instead.")
        if not (0 < self.hang_timeout_s < math.inf):
            raise ConfigError(
                f"execution 'hang_timeout_s' must be a number of seconds > 0. Got {self.hang_timeout_s!r} instead."
            )
        _positive_int("study 'repeats'", self.repeats)
        per_workload = self.configurations_per_workload
        check_size(f"The study ({per_workload:,} configurations x {self.repeats} repeats x "
                   f"{len(self.workloads)} workloads)", per_workload * self.repeats * len(self.workloads),
                   "search fewer configurations or run fewer repeats")
        _positive_int("execution 'cpus_per_trial'", self.cpus_per_trial)
        if not 0 <= self.gpus_per_trial < math.inf:
            raise ConfigError(
                f"execution 'gpus_per_trial' must be a number >= 0 (e.g. 1, or 0.5 to share a GPU). "
                f"Got {self.gpus_per_trial!r} instead."
            )
        if not (0 < self.sample_interval_s <= 0.5):
            raise ConfigError(f"'sample_interval_s' must be in (0, 0.5]. Got {self.sample_interval_s!r} instead.")
        if self.backend not in BACKENDS:
            raise ConfigError(f"Unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}.")
        if self.address and self.backend != "ray":
            raise ConfigError(f"A cluster address ({self.address!r}) is for the Ray backend; add backend = \"ray\" "
                              "(or --backend ray), or drop the address.")
        self._check_builtin_params()
        self.stopping_rules()  # validates budgets and rules now, before anything runs
        self.prediction_settings()
        self.deployment()
        if self.prediction.get("screen") and self.search.method == "grid":
            raise ConfigError("[prediction] screen rejects the candidates of random, tpe, gp or nsga2 before they are "
                              "proposed; grid search runs its grid (skip = true skips within it). Drop screen.")
        if self.search.cost_aware and not self.prediction:
            raise ConfigError("[search] cost_aware weighs candidates by the cost model's predictions; add a "
                              "[prediction] table (e.g. min_observations = 4) or drop cost_aware.")

    def _check_builtin_params(self) -> None:
        """Built-in workloads read batch_size, learning_rate and alpha only: anything else
        would be recorded as a parameter and silently ignored. The SGD models need the first
        two (the networks have defaults): without one, every trial would fail the same way."""
        builtin = [w for w in self.workloads if w.train is None]
        space = set(self.search.space) if isinstance(self.search.space, Mapping) else set()
        if builtin:
            from frugalml.workloads import NETWORK_PARAMS  # lazy: pandas, for built-in workloads only
        for workload in builtin:
            names = set(workload.params) | (space if len(builtin) == len(self.workloads) else set())
            known = NETWORK_PARAMS.get(workload.algorithm, BUILTIN_PARAMS)
            unknown = sorted(names - known)
            if unknown:
                raise ConfigError(
                    f"Workload '{workload.name}' (built-in {workload.algorithm}) reads only "
                    f"{', '.join(sorted(known))}, not {unknown}; remove them or train with your own "
                    "function (train = \"module:function\")."
                )
            if workload.algorithm in NETWORK_PARAMS:  # the networks have defaults
                continue
            if missing := [name for name in BUILTIN_REQUIRED if name not in space | set(workload.params)]:
                raise ConfigError(
                    f"Workload '{workload.name}' (built-in {workload.algorithm}) trains with "
                    f"{' and '.join(BUILTIN_REQUIRED)}, but neither [search] space nor its params set "
                    f"{' or '.join(missing)}; add it to the space "
                    f"(e.g. {missing[0]} = [{BUILTIN_REQUIRED[missing[0]]}])."
                )

    @property
    def path(self) -> Path:
        return Path(self.directory) if self.directory else Path(STUDIES_ROOT) / self.name

    @property
    def configurations_per_workload(self) -> int:
        """The most configurations a workload tries: its listed points, ``n_trials``, or the grid."""
        return len(self.search.points or ()) or self.search.n_trials or grid_size(self.search.space)

    def stopping_rules(self) -> list[StoppingRule]:
        return rules_from_config(self.budget, self.stopping) + as_rules(self.rules)

    def prediction_settings(self) -> Any:
        """The validated ``[prediction]`` settings, or None when the study does not predict."""
        if not self.prediction:
            return None
        settings = PredictionSettings.from_config(self.prediction)
        if not any(key in self.budget for key in PREDICTED_METRICS):
            raise ConfigError(f"[prediction] needs a [budget] to predict against: {', '.join(sorted(PREDICTED_METRICS))}.")
        return settings

    def deployment(self) -> Deploy:
        """The validated ``[deploy]`` envelope (the defaults where the table is empty)."""
        deploy = Deploy.from_config(self.deploy)
        if deploy.resources and self.backend != "ray":
            raise ConfigError(f"[deploy] resources ({dict(deploy.resources)}) pick a Ray node to measure on; add "
                              "backend = \"ray\" (or --backend ray), or drop resources to measure on this machine.")
        if self.deploy and not self.measures_serving:
            raise ConfigError(f"[deploy] says how serving costs are measured, but neither [budget] nor [search] "
                              f"objectives name one; add one of {names((SERVE,))}, or drop [deploy].")
        return deploy

    @property
    def measures_serving(self) -> bool:
        """True when the study measures what its models cost to serve: a serving budget, or a
        serving cost among its objectives (``predict_ms``, ``model_mb``, ...)."""
        return bool(serving_budgets(self.budget)) or any(o in SERVING_METRICS for o in self.search.objectives)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, stored with the results."""
        data = asdict(self)
        data["rules"] = [repr(r) for r in self.rules]
        for workload in data["workloads"]:
            if callable(workload["train"]):
                workload["train"] = f"{workload['train'].__module__}:{workload['train'].__qualname__}"
        return data


COUNT = Interval(int, 1, 2**53, closed="both")  # steps, epochs, repeats: past 2**63 SQLite cannot store them


def _positive_int(what: str, value: Any) -> None:
    if value not in COUNT:
        raise ConfigError(f"{what} must be {COUNT}. Got {value!r} instead.")


# Where a study file writes each Study field that is not a key of [study]: a key of [tracking] or
# [execution], a table of its own (named as the field: [budget], [[workloads]], ...), or nowhere (None:
# ``rules`` holds stopping-rule objects). Every other field is a key of [study].
_FIELD_TABLE: dict[str, str | None] = {
    "mlflow_uri": "tracking",
    **dict.fromkeys(("sample_interval_s", "hang_timeout_s", "pin", "cpus_per_trial", "gpus_per_trial"), "execution"),
    **{name: name for name in ("workloads", "search", "budget", "stopping", "prediction", "deploy")},
    "rules": None,
}
# The Study fields each key table holds: {"study": ("name", "workers", ...), "tracking": ..., "execution": ...}
_FIELD_KEYS = {table: tuple(f.name for f in fields(Study) if _FIELD_TABLE.get(f.name, "study") == table)
               for table in ("study", "tracking", "execution")}
# [gate] is read by `frugalml check --gate` (frugalml.gate), not by the study itself
_TABLES = {"study", *filter(None, _FIELD_TABLE.values()), "gate"}


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table",
               list: "a list", type(None): "omitted"}


def _plain_types(hint: Any) -> tuple[type, ...] | None:
    """The plain types a field's type hint allows, or None for hints checked elsewhere."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    plain = tuple(typing.get_origin(option) or option for option in options)
    return plain if all(option in _TYPE_NAMES for option in plain) else None


def _is_a(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is dict:
        return isinstance(value, Mapping)
    if kind is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def _check_types(spec: Any, label: Callable[[str], str]) -> None:
    """A one-line ConfigError for a field of the wrong type (TOML makes these easy to write)."""
    hints = typing.get_type_hints(type(spec))
    for spec_field in fields(spec):
        allowed = _plain_types(hints[spec_field.name])
        value = getattr(spec, spec_field.name)
        if allowed is not None and not any(_is_a(value, kind) for kind in allowed):
            wanted = " or ".join(_TYPE_NAMES[kind] for kind in allowed if kind is not type(None))
            raise ConfigError(f"{label(spec_field.name)} '{spec_field.name}' must be {wanted}. Got {value!r} instead.")


def _study_table(key: str) -> str:
    """The TOML table a Study field is written in, as messages name it (``[study]`` for a table's own field)."""
    return next((table for table, keys in _FIELD_KEYS.items() if key in keys), "study")


def _table(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] must be a table (a [{name}] section). Got {value!r} instead.")
    return dict(value)


def _only(table: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    check_keys(f"[{table}]", data, allowed)


def study_from_dict(data: Mapping[str, Any], *, base_dir: Path | None = None) -> Study:
    """Build a :class:`Study` from the parsed TOML tables."""
    _only("top level", data, _TABLES)
    study_table = _table(data, "study")
    _only("study", study_table, _FIELD_KEYS["study"])
    if "name" not in study_table:
        raise ConfigError("[study] needs a 'name'.")
    workloads = []
    workload_keys = [f.name for f in fields(Workload)]
    entries = data.get("workloads", [])
    if not isinstance(entries, list):
        raise ConfigError("Workloads are an array of tables: write each one under [[workloads]] (double brackets).")
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise ConfigError(f"Each [[workloads]] entry must be a table. Got {entry!r} instead.")
        _only("[workloads]", entry, workload_keys)
        entry = dict(entry)
        if entry.get("path") and base_dir is not None and not Path(entry["path"]).is_absolute():
            entry["path"] = str((base_dir / entry["path"]))
        workloads.append(Workload(**entry))
    search_table = _table(data, "search")
    _only("search", search_table, [f.name for f in fields(Search)])
    tracking = _table(data, "tracking")
    _only("tracking", tracking, _FIELD_KEYS["tracking"])
    execution = _table(data, "execution")
    _only("execution", execution, _FIELD_KEYS["execution"])
    prediction = _table(data, "prediction")
    if base_dir is not None and isinstance(prediction.get("history"), list):
        prediction["history"] = [str(base_dir / h) if isinstance(h, str) else h for h in prediction["history"]]
    mlflow_uri = tracking.get("mlflow_uri", DEFAULT_MLFLOW)
    if mlflow_uri in ("none", "", False):
        mlflow_uri = None
    try:
        return Study(
            workloads=workloads,
            search=Search(**search_table),
            budget=_table(data, "budget"),
            stopping=_table(data, "stopping"),
            mlflow_uri=mlflow_uri,
            prediction=prediction,
            deploy=_table(data, "deploy"),
            **study_table,
            **execution,
        )
    except TypeError as error:
        raise ConfigError(f"Invalid study: {error}.") from None


def load_study(path: str | Path) -> Study:
    """Load and validate a TOML study file; errors are one-line :class:`ConfigError`."""
    path = Path(path)
    data = read_toml(path, "Study file", "pass the path of a .toml study file")
    study = study_from_dict(data, base_dir=path.parent)
    if study.directory and not Path(study.directory).is_absolute():
        study.directory = str(path.parent / study.directory)
    if study.mlflow_uri and study.mlflow_uri.startswith("sqlite:///") and not study.mlflow_uri.startswith("sqlite:////"):
        relative = study.mlflow_uri.removeprefix("sqlite:///")
        study.mlflow_uri = "sqlite:///" + str((path.parent / relative).resolve())
    return study


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class StoredStudy:
    """A study as its results store keeps it (:meth:`Study.to_dict`), read in one place.

    Stores written by older versions may lack keys; each accessor has the default
    the study had then.
    """

    name: str
    spec: Mapping[str, Any]

    @property
    def workloads(self) -> list[dict[str, Any]]:
        return [dict(w) for w in self.spec.get("workloads", [])]

    @property
    def budget(self) -> dict[str, Any]:
        return {k: v for k, v in (self.spec.get("budget") or {}).items() if v is not None}

    @property
    def seed(self) -> int:
        return int(self.spec.get("seed", 0))

    @property
    def data_dir(self) -> str | None:
        return self.spec.get("data_dir")

    @property
    def mlflow_uri(self) -> str | None:
        """The study's tracking URI as written: ``"default"`` (its own sqlite store), a URI, or None."""
        return self.spec.get("mlflow_uri", DEFAULT_MLFLOW)

    @property
    def search(self) -> Search:
        """The stored search; the default one if it no longer validates."""
        try:
            return Search(**self.spec.get("search", {}))
        except (FrugalError, TypeError):
            return Search()

    @property
    def compute_budget_cpu_s(self) -> float | None:
        return self.budget.get("max_study_cpu_seconds")

    def workload(self, name: str | None = None) -> dict[str, Any]:
        """The stored workload called ``name``, or the only one; a one-line error otherwise."""
        workloads = self.workloads
        names = ", ".join(str(w.get("name")) for w in workloads)
        if name is None:
            if len(workloads) != 1:
                raise ConfigError(f"the study has {len(workloads)} workloads ({names}); pass --workload NAME.")
            return workloads[0]
        for workload in workloads:
            if workload.get("name") == name:
                return workload
        raise ConfigError(f"no workload {name!r} in the study; its workloads are: {names}.")


def stored_study(directory: str | Path) -> StoredStudy:
    """The study stored in ``directory`` (a :class:`StoreError` if it holds none)."""
    return StoredStudy(*ResultStore(directory).study())
