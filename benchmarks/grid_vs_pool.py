"""The thesis grid run by frugalml against a bare process pool doing the same SGD work.

The thesis grid (batch size {30, 300, 3000, 30000} x learning rate {0.1, 0.01, 0.001,
0.0001}: 16 trials) of the built-in workload mnist_784 / linear SVM, ``--steps`` steps
per trial (epochs unbounded, as in ``frugalml reproduce``: every trial takes the same
number of steps), an evaluation every ``--eval-every`` steps, ``--workers`` trials at once:

* **frugalml**: ``frugalml.tune`` as a user runs it, with the Study's defaults: MLflow
  tracking into the study's own folder (``mlflow_uri="default"``), the results store,
  the watchdog at 0.1 s, workers pinned, one forkserver-started process per trial.
* **pool**: ``concurrent.futures.ProcessPoolExecutor(--workers)`` mapping
  :func:`pool_trial` over the same configurations in the same order: the work of
  ``frugalml.workloads.sgd_train`` written with plain numpy and scikit-learn (the same
  prepared split memory-mapped per trial, the same ``SGDClassifier``, the same
  ``partial_fit`` batches, the same per-step hinge loss on the batch, the same
  evaluations on the test split), BLAS limited to one thread per worker as frugalml's
  workers are (threadpoolctl, after the worker started).
* **pool-blas1** (``--also pool-blas1``): the same pool with OpenBLAS loaded with one
  thread (``OPENBLAS_NUM_THREADS=1``), as frugalml's forkserver loads it. Its workers live
  for the whole map, so the cost of a worker's first BLAS calls with a bigger thread pool
  (~0.15 CPU-s, see ``frugalml._blas_threads``) is paid twice, not once a trial; both pools
  are printed, and each frugalml arm is also compared with the faster of the two.

Each run is a fresh Python process, as a user's would be (imports, forkserver and
MLflow start-up included); rounds alternate the arms (pool, frugalml, [extra variants],
pool, [extra variants reversed], frugalml, ...) so that a change in machine load hits
both. The data is prepared and MLflow's empty-store template made once, before any timing.

Printed per run: the process's wall time and the wall time of ``tune()`` / the pool
alone, the CPU-seconds of every process of the run, and of the trials' own work. Then
per arm the ratio arm / pool (median over rounds, each run against its round's pool)
and the overhead per trial: (arm wall - pool wall) x workers / trials, the extra time
each trial holds a worker slot; and the CPU-seconds ratio, steadier than wall time on
a shared machine. Each frugalml run is checked against the pool: per
configuration the same number of ``partial_fit`` calls and evaluations and the same
final validation loss (relative tolerance 1e-9).

``--breakdown`` adds one frugalml run with timers around the driver's own work (store,
MLflow, watchdog, worker start and end) and per trial: from submitting it to its
training starting in the worker, its training, and from its last window to its record.

``--base-src DIR`` adds, after each frugalml arm, the same arm with the package imported
from ``DIR`` (say, a copy of another commit's ``src``): ``frugalml@base``,
``no-mlflow@base``, ... alternated with the others, so that a change is measured against
its baseline under the same load (with ``--breakdown``, the baseline gets its
instrumented run too).

    nice -n 5 python benchmarks/grid_vs_pool.py [--steps 24] [--eval-every 6] [--rounds 3]
        [--workers 2] [--also no-mlflow,no-pin,pool-blas1] [--base-src DIR] [--breakdown]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

GRID = {"batch_size": [30, 300, 3000, 30000], "learning_rate": [0.1, 0.01, 0.001, 0.0001]}
DATASET, ALGORITHM, SEED, ALPHA = "mnist_784", "svm", 0, 0.0001
EPOCHS = 10_000  # as frugalml.reproduce: max_steps, not the epoch, ends every trial
#: frugalml variants: Study keyword arguments over the defaults
VARIANTS: dict[str, dict[str, Any]] = {
    "frugalml": {},
    "no-mlflow": {"mlflow_uri": None},
    "no-pin": {"pin": False},
    "no-mlflow-no-pin": {"mlflow_uri": None, "pin": False},
}
#: pool variants: environment of the pool's process (``pool`` is the reference every ratio is against)
POOLS: dict[str, dict[str, str]] = {
    "pool": {},
    # OpenBLAS loaded with one thread, not one a core: what frugalml's forkserver does since 2026-12-06
    "pool-blas1": {"OPENBLAS_NUM_THREADS": "1"},
}
EXTRA_ARMS = [name for name in [*VARIANTS, *POOLS] if name not in ("frugalml", "pool")]  # for --also
REL_TOL = 1e-9


# -- the pool's trial: sgd_train's work in plain numpy and scikit-learn ---------------------

def _cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _one_blas_thread() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # frugalml's workers: threadpool_limits(cpus_per_trial)


def _hinge(decision: Any, y: Any, classes: Any) -> float:
    """One-vs-rest hinge loss: per sample, summed over classes with y in {-1, +1}; the mean."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        signs = -np.ones(decision.shape)
        signs[np.arange(len(y)), np.searchsorted(classes, y)] = 1.0
        return float(np.mean(np.maximum(0.0, 1.0 - signs * decision).sum(axis=1)))


def pool_trial(job: tuple[str, int, int, float, int, int]) -> dict[str, Any]:
    """One configuration, as ``sgd_train`` trains it: sequential batches of the shuffled
    training split, a hinge loss on each batch after its ``partial_fit``, an evaluation on
    the test split every ``eval_every`` steps and after a final partial window."""
    import numpy as np
    from sklearn.linear_model import SGDClassifier

    directory, n_classes, batch_size, learning_rate, steps, eval_every = job
    cpu_start, start = _cpu_s(), time.perf_counter()
    X_train, y_train, X_test, y_test = (np.load(os.path.join(directory, f"{name}.npy"), mmap_mode="r")
                                        for name in ("X_train", "y_train", "X_test", "y_test"))
    estimator = SGDClassifier(loss="hinge", learning_rate="constant", eta0=learning_rate, random_state=SEED,
                              alpha=ALPHA)
    classes = np.arange(n_classes)
    n_train = len(y_train)
    batch = min(batch_size, n_train)
    planned = min(math.ceil(n_train / batch) * EPOCHS, steps)
    fits = evaluations = 0
    val_loss = accuracy = math.nan

    def evaluate() -> None:
        nonlocal evaluations, val_loss, accuracy
        decision = estimator.decision_function(X_test)
        accuracy = float(np.mean(estimator.classes_[decision.argmax(axis=1)] == y_test))
        val_loss = _hinge(decision, y_test, estimator.classes_)
        evaluations += 1

    starts = itertools.cycle(range(0, n_train, batch))  # sequential batches, epoch after epoch
    for fits in range(1, planned + 1):
        begin = next(starts)
        X_batch, y_batch = X_train[begin : begin + batch], y_train[begin : begin + batch]
        try:
            estimator.partial_fit(X_batch, y_batch, classes=classes)
        except ValueError as error:  # sgd_train records the step, reports an infinite loss and returns
            if "overflow" not in str(error):
                raise
            evaluations, val_loss = evaluations + 1, math.inf
            break
        _hinge(estimator.decision_function(X_batch), y_batch, estimator.classes_)  # the step's loss
        if fits % eval_every == 0:
            evaluate()
    else:
        if planned % eval_every:  # the final partial window
            evaluate()
    return {"batch_size": batch_size, "learning_rate": learning_rate, "fits": fits, "evaluations": evaluations,
            "val_loss": val_loss, "accuracy": accuracy, "work_s": time.perf_counter() - start,
            "work_cpu_s": _cpu_s() - cpu_start}


def configurations() -> list[dict[str, Any]]:
    """The grid in frugalml's grid order (the product, the first parameter outermost)."""
    names = list(GRID)
    return [dict(zip(names, values)) for values in itertools.product(*GRID.values())]


# -- the arms, each in a process of its own --------------------------------------------------

def arm_pool(args: argparse.Namespace) -> dict[str, Any]:
    from concurrent.futures import ProcessPoolExecutor

    import numpy  # noqa: F401 - a user's script imports its stack before the pool forks
    import sklearn.linear_model  # noqa: F401

    meta = json.loads(open(os.path.join(args.data, "meta.json")).read())
    jobs = [(args.data, len(meta["classes"]), c["batch_size"], c["learning_rate"], args.steps, args.eval_every)
            for c in configurations()]
    cpu_start, start = _cpu_s(), time.monotonic()
    with ProcessPoolExecutor(args.workers, initializer=_one_blas_thread) as pool:
        trials = list(pool.map(pool_trial, jobs))
    wall_s = time.monotonic() - start
    cpu_s = _cpu_s() + _cpu_s(resource.RUSAGE_CHILDREN) - cpu_start  # the workers are reaped by now
    return {"inner_wall_s": wall_s, "cpu_s": cpu_s, "trials": trials}


def arm_frugalml(args: argparse.Namespace) -> dict[str, Any]:
    from frugalml import Search, Study, Workload, tune

    timers = _instrument() if args.instrument else None
    study = Study(
        name="grid-vs-pool", directory=args.study_dir,
        workloads=[Workload(dataset=DATASET, algorithm=ALGORITHM, epochs=EPOCHS, max_steps=args.steps,
                            eval_every=args.eval_every)],
        search=Search(method="grid", space=GRID), workers=args.workers, **VARIANTS[args.arm],
    )
    events: dict[str, dict[str, float]] = {}

    def progress(event: str, payload: Any) -> None:
        events.setdefault(payload.trial_id, {})[event] = time.monotonic()

    cpu_start, children_start, start = _cpu_s(), _cpu_s(resource.RUSAGE_CHILDREN), time.monotonic()
    result = tune(study, progress=progress)
    wall_s = time.monotonic() - start
    driver_cpu_s = _cpu_s() - cpu_start
    try:
        from frugalml.tracking import end_tracking_process  # MLflow's process (--base-src: older trees lack it)
    except ImportError:
        pass
    else:
        end_tracking_process()  # what exit would do: reaped, its CPU is in RUSAGE_CHILDREN
    tracking_cpu_s = _cpu_s(resource.RUSAGE_CHILDREN) - children_start
    forkserver_cpu_s = _forkserver_cpu_s()
    trials = []
    for record in result.records:
        evaluated = [w for w in record.windows if "val_loss" in w.values]
        trials.append({
            "batch_size": record.params["batch_size"], "learning_rate": record.params["learning_rate"],
            "status": record.status.value, "fits": record.steps_done, "evaluations": len(evaluated),
            "val_loss": evaluated[-1].values["val_loss"] if evaluated else math.nan,
            "work_s": record.windows[-1].values["wall_s"] if record.windows else math.nan,
            "worker_cpu_s": record.cpu_s, "trial_id": record.trial_id, **events.get(record.trial_id, {}),
        })
    out = {"inner_wall_s": wall_s, "driver_cpu_s": driver_cpu_s, "forkserver_cpu_s": forkserver_cpu_s,
           "tracking_cpu_s": tracking_cpu_s, "cpu_s": driver_cpu_s + forkserver_cpu_s + tracking_cpu_s,
           "tune_start": start, "tune_end": start + wall_s,
           "trials": trials}
    if timers is not None:
        out["timers"] = timers.summary()
        out["latencies"] = timers.latencies(trials)
    return out


def _forkserver_cpu_s() -> float:
    """The forkserver's CPU-seconds, with the workers it forked and reaped (a trial's process is its child)."""
    import psutil
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if not pid:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system + times.children_user + times.children_system


# -- --breakdown: timers around the driver's own work -----------------------------------------

@dataclass
class _Timers:
    totals: dict[str, list[float]] = field(default_factory=dict)  # label -> [calls, wall s, thread CPU s]
    submitted: dict[str, float] = field(default_factory=dict)
    windows: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (arrived, its wall_s)
    done: dict[str, float] = field(default_factory=dict)

    def add(self, label: str, wall_s: float, cpu_s: float) -> None:
        total = self.totals.setdefault(label, [0, 0.0, 0.0])
        total[0] += 1
        total[1] += wall_s
        total[2] += cpu_s

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - wall, time.thread_time() - cpu)

        setattr(owner, name, timed)

    def summary(self) -> dict[str, list[float]]:
        return self.totals

    def latencies(self, trials: list[dict[str, Any]]) -> list[dict[str, float]]:
        """Per trial: submit -> training started in the worker (its Trial made), training (its
        last window's wall_s), last window -> Done arrived, Done -> record stored ('end')."""
        rows = []
        for trial in trials:
            trial_id = trial["trial_id"]
            arrived, wall_s = self.windows[trial_id][-1]
            started = arrived - wall_s
            rows.append({"start_s": started - self.submitted[trial_id], "train_s": wall_s,
                         "to_done_s": self.done.get(trial_id, arrived) - arrived,
                         "to_record_s": trial["end"] - self.done.get(trial_id, arrived)})
        return rows


#: (label, where: the first of "module:Owner.attribute" that exists; the tuner's layout is changing)
_PATCHES = [
    ("study start: resolve + prepare the dataset (cached; sha256 of the file)",
     ["frugalml.tuner._plans:prepare", "frugalml.tuner:_prepare"]),
    ("study start: data lineage (hashes the data file)",
     ["frugalml.tuner._plans:data_lineage", "frugalml.tuner:data_lineage"]),
    ("store: write lineage (with the first trial)", ["frugalml.tuner._recorder:write_lineage",
                                                      "frugalml.tuner:write_lineage"]),
    ("study start: make the study folder", ["frugalml.tuner._tuner:make_owned_dir", "frugalml.tuner:make_owned_dir"]),
    ("store: open_study (create the sqlite store)", ["frugalml.store:ResultStore.open_study"]),
    ("store: save_trial", ["frugalml.store:ResultStore.save_trial"]),
    ("store: set_mlflow_run (tracking thread)", ["frugalml.store:ResultStore.set_mlflow_run"]),
    ("MLflow: start its process (the driver's part)", ["frugalml.tracking:TrackerProcess.__init__"]),
    ("MLflow: open (wait for the process: import, store from template, parent run)",
     ["frugalml.tracking:TrackerProcess.open", "frugalml.tracking:MlflowTracker.__init__"]),
    ("MLflow: log_trial (tracking thread)", ["frugalml.tracking:TrackerProcess.log_trial",
                                             "frugalml.tracking:MlflowTracker.log_trial"]),
    ("end of study: wait for the tracking thread", ["frugalml.tuner._tracking:BackgroundTracking.stop"]),
    ("end of study: MLflow log_study + close", ["frugalml.tuner._tracking:BackgroundTracking.end",
                                                "frugalml.tracking:MlflowTracker.log_study"]),
    ("executor: worker_context (start the forkserver)", ["frugalml.executors._local:worker_context"]),
    ("executor: _start (Process.start via the forkserver + monitors)",
     ["frugalml.executors._local:LocalExecutor._start"]),
    ("executor: poll (mostly waiting)", ["frugalml.executors._local:LocalExecutor.poll"]),
    ("watchdog: _watch every 0.1 s a worker (sample + rules)", ["frugalml.executors._local:LocalExecutor._watch"]),
    ("watchdog: _sample (psutil tree; in _watch and per window)", ["frugalml.executors._local:LocalExecutor._sample"]),
    ("messages: _handle (a window: sample + rules)", ["frugalml.executors._local:LocalExecutor._handle"]),
    ("executor: _finish (join + record)", ["frugalml.executors._local:LocalExecutor._finish"]),
]


def _resolve(where: list[str]) -> tuple[Any, str] | None:
    import importlib

    for spec in where:
        module, _, path = spec.partition(":")
        *owners, name = path.split(".")
        try:
            owner = importlib.import_module(module)
            for part in owners:
                owner = getattr(owner, part)
        except (ImportError, AttributeError):
            continue
        if hasattr(owner, name):
            return owner, name
    return None


def _instrument() -> _Timers:
    """Patch timers onto the driver's functions (this process only; the workers are untouched)."""
    import frugalml.executors._local as local
    from frugalml.messages import Done, WindowEnd

    timers = _Timers()
    for label, where in _PATCHES:
        found = _resolve(where)
        if found is None:
            print(f"breakdown: no {where[0]} here; not timed", file=sys.stderr)
            continue
        timers.wrap(*found, label)

    start, handle = local.LocalExecutor._start, local.LocalExecutor._handle

    def stamped_start(executor: Any, task: Any) -> None:
        timers.submitted[task.trial_id] = time.monotonic()
        start(executor, task)

    def stamped_handle(executor: Any, running: Any, message: Any) -> None:
        trial_id = running.trial.task.trial_id
        if isinstance(message, WindowEnd):
            timers.windows.setdefault(trial_id, []).append((time.monotonic(), message.wall_s))
        elif isinstance(message, Done):
            timers.done[trial_id] = time.monotonic()
        handle(executor, running, message)

    local.LocalExecutor._start, local.LocalExecutor._handle = stamped_start, stamped_handle
    return timers


# -- the driver: alternate the arms in fresh processes ---------------------------------------

@dataclass
class Run:
    arm: str
    round: int
    wall_s: float  # the whole process: interpreter, imports, the run
    load: float
    data: dict[str, Any]

    @property
    def inner_wall_s(self) -> float:
        return self.data["inner_wall_s"]

    @property
    def work_cpu_s(self) -> float:
        return sum(t.get("work_cpu_s", t.get("worker_cpu_s", 0.0)) for t in self.data["trials"])


BASE = "@base"  # an arm's suffix: frugalml imported from --base-src


def run_arm(arm: str, number: int, args: argparse.Namespace, data_dir: str, instrument: bool = False) -> Run:
    variant, env = arm, None
    if arm in POOLS:
        variant, env = "pool", {**os.environ, **POOLS[arm]}
    elif arm.endswith(BASE):
        variant = arm[: -len(BASE)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [args.base_src,
                                                                         os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix=f"grid-vs-pool-{variant}-") as scratch:
        out = os.path.join(scratch, "out.json")
        command = [sys.executable, os.path.abspath(__file__), "--arm", variant, "--data", data_dir, "--out", out,
                   "--study-dir", os.path.join(scratch, "study"), "--steps", str(args.steps),
                   "--eval-every", str(args.eval_every), "--workers", str(args.workers)]
        if instrument:
            command.append("--instrument")
        load = os.getloadavg()[0]
        start = time.monotonic()
        subprocess.run(command, check=True, env=env)
        wall_s = time.monotonic() - start
        with open(out) as file:
            data = json.load(file)
        shutil.rmtree(os.path.join(scratch, "study"), ignore_errors=True)  # not timed
    return Run(arm, number, wall_s, load, data)


def same_work(pool: Run, other: Run) -> str:
    """'ok' when every configuration did the same partial_fit calls, evaluations and final
    validation loss in both runs, else the first difference."""
    key = lambda t: (t["batch_size"], t["learning_rate"])  # noqa: E731
    reference = {key(t): t for t in pool.data["trials"]}
    worst = 0.0
    for trial in other.data["trials"]:
        mine = reference.get(key(trial))
        if mine is None or trial.get("status", "completed") != "completed":
            return f"{key(trial)}: {trial.get('status')} / missing from the pool"
        for name in ("fits", "evaluations"):
            if trial[name] != mine[name]:
                return f"{key(trial)}: {name} {trial[name]} vs {mine[name]} in the pool"
        if not math.isclose(trial["val_loss"], mine["val_loss"], rel_tol=REL_TOL):
            return f"{key(trial)}: val_loss {trial['val_loss']!r} vs {mine['val_loss']!r} in the pool"
        if math.isfinite(mine["val_loss"]) and mine["val_loss"]:
            worst = max(worst, abs(trial["val_loss"] / mine["val_loss"] - 1))
    if len(other.data["trials"]) != len(reference):
        return f"{len(other.data['trials'])} trials vs {len(reference)} in the pool"
    return f"ok (16/16 configurations; worst val_loss relative difference {worst:.1e})"


def print_breakdown(run: Run, pool: Run | None, trials: int, workers: int) -> None:
    data = run.data
    print(f"\nbreakdown: one instrumented {run.arm} run (not in the ratios): process {run.wall_s:.1f} s, "
          f"tune() {run.inner_wall_s:.1f} s, load {run.load:.1f}")
    print(f"  CPU-s: driver {data['driver_cpu_s']:.2f} (all its threads), MLflow's process "
          f"{data.get('tracking_cpu_s', 0.0):.2f}, forkserver + trial workers {data['forkserver_cpu_s']:.2f}, "
          f"of which the workers' own {run.work_cpu_s:.2f}")
    print(f"  {'driver function':72} {'calls':>6} {'wall s':>8} {'thread CPU s':>13} {'ms/call':>8}")
    for label, (calls, wall_s, cpu_s) in sorted(data["timers"].items(), key=lambda item: -item[1][1]):
        print(f"  {label:72} {int(calls):6d} {wall_s:8.2f} {cpu_s:13.2f} {wall_s / calls * 1e3:8.1f}")
    rows = data["latencies"]
    first = min(data["trials"], key=lambda t: t["start"])
    print(f"  study start-up: tune() called -> first trial submitted {first['start'] - data['tune_start']:.2f} s; "
          f"last record -> tune() returned {data['tune_end'] - max(t['end'] for t in data['trials']):.2f} s")
    for name, what in [("start_s", "submit -> training starts in the worker"), ("train_s", "training (worker wall)"),
                       ("to_done_s", "last window -> Done received"), ("to_record_s", "Done -> record stored")]:
        values = [r[name] for r in rows]
        print(f"  per trial, {what:42}: first {values[0]:6.3f} s, median of the others "
              f"{statistics.median(values[1:]):6.3f} s, sum {sum(values):6.2f} s")
    if pool is not None:
        train = sum(r["train_s"] for r in rows)
        pool_work = sum(t["work_s"] for t in pool.data["trials"])
        print(f"  training wall summed over trials: frugalml {train:.2f} s vs pool {pool_work:.2f} s "
              f"({(train - pool_work) / trials * 1e3:+.0f} ms a trial); worker CPU-s "
              f"{sum(t['worker_cpu_s'] for t in data['trials']):.2f} vs pool {pool.work_cpu_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="steps per trial (default 24, frugalml reproduce --quick)")
    parser.add_argument("--eval-every", type=int, default=6, help="steps per evaluation window (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of alternating runs (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="trials at once, in both arms (default 2)")
    parser.add_argument("--also", default="", help="more arms, comma-separated: " + ", ".join(EXTRA_ARMS))
    parser.add_argument("--base-src", help="after each frugalml arm, the same arm with frugalml imported from here")
    parser.add_argument("--breakdown", action="store_true", help="add one instrumented frugalml run")
    # internal: one arm in this process
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--study-dir", help=argparse.SUPPRESS)
    parser.add_argument("--instrument", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        data = arm_pool(args) if args.arm == "pool" else arm_frugalml(args)
        with open(args.out, "w") as file:
            json.dump(data, file)
        return

    extra = [name.strip() for name in args.also.split(",") if name.strip()]
    unknown = [name for name in extra if name not in EXTRA_ARMS]
    if unknown:
        parser.error(f"--also takes {', '.join(EXTRA_ARMS)}; got {unknown}")
    if args.base_src:
        args.base_src = os.path.abspath(args.base_src)
        if not os.path.isdir(os.path.join(args.base_src, "frugalml")):
            parser.error(f"--base-src {args.base_src} holds no frugalml package")
    arms = ["pool", *(a for variant in ["frugalml", *extra]
                      for a in [variant, *([variant + BASE] if args.base_src and variant not in POOLS else [])])]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start, nice {os.nice(0)}")
    from frugalml.tracking._template import template_path
    from frugalml.workloads import prepare_dataset, resolve_dataset

    started = time.monotonic()
    data = prepare_dataset(resolve_dataset(DATASET), seed=SEED)  # once, outside every timing
    template_path()  # MLflow's migrated empty store, once per MLflow version: outside every timing
    print(f"set-up outside the timings (dataset prepared, MLflow template): {time.monotonic() - started:.1f} s")
    trials = len(configurations())
    print(f"{trials} trials: {DATASET} {ALGORITHM}, {args.steps} steps each, evaluation every {args.eval_every}, "
          f"{args.workers} workers; arms alternate: {', '.join(arms)}")
    print(f"{'round':5} {'arm':18} {'load':>5} {'process s':>10} {'run s':>7} {'CPU-s':>7} {'trial CPU-s':>12}  "
          "same work as the pool")
    runs: list[Run] = []
    for number in range(1, args.rounds + 1):
        pool = None
        for arm in arms[:1] + (arms[1:] if number % 2 else arms[:0:-1]):  # the pool first; then every other round reversed
            run = run_arm(arm, number, args, str(data.directory))
            runs.append(run)
            pool = run if arm == "pool" else pool
            check = "(reference)" if arm == "pool" else same_work(pool, run)
            print(f"{number:<5} {arm:18} {run.load:5.1f} {run.wall_s:10.1f} {run.inner_wall_s:7.1f} "
                  f"{run.data['cpu_s']:7.1f} {run.work_cpu_s:12.1f}  {check}", flush=True)

    if runs:
        print("\narm / pool, median over rounds (each against its round's pool):")
    for arm in arms[1:] if runs else []:
        pairs = [(p, r) for p in runs if p.arm == "pool" for r in runs if r.arm == arm and r.round == p.round]
        whole = statistics.median(r.wall_s / p.wall_s for p, r in pairs)
        inner = statistics.median(r.inner_wall_s / p.inner_wall_s for p, r in pairs)
        per_trial = statistics.median((r.wall_s - p.wall_s) * args.workers / trials * 1e3 for p, r in pairs)
        per_trial_inner = statistics.median((r.inner_wall_s - p.inner_wall_s) * args.workers / trials * 1e3
                                            for p, r in pairs)
        print(f"  {arm:18} process {whole:.3f} (overhead {per_trial:+.0f} ms a trial)   "
              f"tune() vs pool.map {inner:.3f} ({per_trial_inner:+.0f} ms a trial)")
        cpu = statistics.median(r.data["cpu_s"] / p.data["cpu_s"] for p, r in pairs)
        outside = statistics.median(r.data["cpu_s"] - r.work_cpu_s for _, r in pairs)
        print(f"  {'':18} CPU-s {cpu:.3f} x the pool's; CPU-s outside the trials' own work {outside:.1f} "
              f"(pool {statistics.median(p.data['cpu_s'] - p.work_cpu_s for p, _ in pairs):.1f})")
    pools = [arm for arm in arms if arm in POOLS]
    if runs and len(pools) > 1:
        print(f"arm / the faster of {', '.join(pools)} in its round (median over rounds):")
        for arm in (a for a in arms if a not in POOLS):
            ratios = []
            for number in range(1, args.rounds + 1):
                fastest = min((r for r in runs if r.arm in POOLS and r.round == number), key=lambda r: r.wall_s)
                mine = next(r for r in runs if r.arm == arm and r.round == number)
                ratios.append((mine.wall_s / fastest.wall_s, mine.data["cpu_s"] / fastest.data["cpu_s"]))
            print(f"  {arm:18} process {statistics.median(w for w, _ in ratios):.3f}   "
                  f"CPU-s {statistics.median(c for _, c in ratios):.3f}")
    if runs:
        print("  (overhead a trial: (arm - pool) wall x workers / trials: the extra time each trial holds a worker slot;\n"
              "   CPU-s: every process of the run, the driver's threads, MLflow's process, the forkserver and the\n"
              "   workers; a busy machine moves wall times a lot more than CPU-s)")

    if args.breakdown:
        pool = next((r for r in reversed(runs) if r.arm == "pool"), None)
        for arm in ["frugalml", *(["frugalml" + BASE] if args.base_src else [])]:
            run = run_arm(arm, 0, args, str(data.directory), instrument=True)
            print_breakdown(run, pool, trials, args.workers)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; {time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    main()
