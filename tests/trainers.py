"""Training functions used by the tests; module-level so worker processes can import them.

Each is a real training-shaped loop calling the public Trial API.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time

import numpy as np


def _busy(seconds: float, clock=time.perf_counter) -> None:
    end = clock() + seconds
    while clock() < end:
        pass


def steady(trial, steps: int = 200, step_s: float = 0.001, cpu_clock: bool = False) -> None:
    """A loss that falls smoothly; each step busy-waits ``step_s`` (or params['step_s'])
    of wall time, or of CPU time with ``cpu_clock`` (the same CPU-s however busy the machine)."""
    step_s = trial.params.get("step_s", step_s)
    clock = time.thread_time if cpu_clock else time.perf_counter
    for step in range(1, steps + 1):
        _busy(step_s, clock)
        if trial.step(loss=1.0 / step, n_samples=10):
            trial.report(val_loss=1.0 / step + trial.params.get("offset", 0.0))


def first_then_held(trial, release: str, steps: int = 40, step_s: float = 0.002, hold_s: float = 20.0) -> None:
    """``steady``; but every trial after the first (the first to start claims ``release``.first)
    waits, sleeping, until the file ``release`` exists or ``hold_s`` passed: a study that stays
    running, at no CPU, until a test lets it go (bounded: a stuck test never holds it for ever)."""
    try:
        os.close(os.open(release + ".first", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        deadline = time.monotonic() + hold_s
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
    steady(trial, steps=steps, step_s=step_s)


def allocate(trial, megabytes: int = 200, at_step: int = 100, steps: int = 300, sleep_s: float = 0.002) -> None:
    """Steps lightly, allocates and touches ``megabytes`` MB at ``at_step``, keeps stepping."""
    megabytes = trial.params.get("megabytes", megabytes)
    held = []
    for step in range(1, steps + 1):
        if step == at_step:
            held.append(np.ones(megabytes * 2**20 // 8))  # np.ones writes every page
        time.sleep(sleep_s)
        if trial.step(loss=1.0, n_samples=1):
            trial.report(val_loss=1.0)


def allocate_in_one_step(trial, megabytes: int = 600, steps: int = 50) -> None:
    """One long step that allocates ``megabytes`` gradually and never reports in between."""
    for step in range(1, steps + 1):
        if step == 5:
            chunks = []
            for _ in range(megabytes // 20):
                chunks.append(np.ones(20 * 2**20 // 8))
                time.sleep(0.02)
        trial.step(loss=1.0)


def allocate_in_child(trial, megabytes: int = 200, steps: int = 300) -> None:
    """A data-loader-like child process holds the memory: the process tree must count it.

    The child imports NumPy first and says so, and allocates only when told (at step 100), so
    every window before it counts the child's interpreter and none of the allocation, however
    slowly a loaded machine starts the child."""
    code = (
        "import numpy as np, sys, time; sys.stdout.write('imported\\n'); sys.stdout.flush(); "
        "sys.stdin.readline(); a = np.ones(%d * 2**20 // 8); "
        "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)" % megabytes
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()
        for step in range(1, steps + 1):
            if step == 100:
                child.stdin.write("go\n")
                child.stdin.flush()
                child.stdout.readline()
            time.sleep(0.002)
            if trial.step(loss=1.0):
                trial.report(val_loss=1.0)
    finally:
        child.kill()


def crash(trial, at_step: int = 10) -> None:
    for step in range(1, 1000):
        if step == at_step:
            raise RuntimeError("boom at step %d" % step)
        trial.step(loss=1.0)


def segfault(trial) -> None:
    trial.step(loss=1.0)
    ctypes.string_at(0)


def oom_in_cgroup(trial, cgroup: str, megabytes: int = 2000) -> None:
    """Join a memory cgroup with a small limit and allocate past it: the kernel OOM-kills us."""
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as handle:
        handle.write(str(os.getpid()))
    held = []
    for step in range(1, megabytes // 50 + 1):
        held.append(np.ones(50 * 2**20 // 8))
        trial.step(loss=1.0)


def never_steps(trial) -> None:
    return None


def hangs(trial) -> None:
    trial.step(loss=1.0)
    time.sleep(3600)


def note_gpu_devices(trial, steps: int = 20) -> None:
    """Records the ``CUDA_VISIBLE_DEVICES`` its worker was given, then steps."""
    trial.set_info(cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    for _ in range(steps):
        if trial.step(loss=1.0, n_samples=1):
            trial.report(val_loss=1.0)


def sgd_logged(trial, epochs: int = 2, batch: int = 64) -> None:
    """The user's own loop on real data (diabetes): plans its length, logs its model and reference."""
    import pandas as pd
    from sklearn.linear_model import SGDClassifier

    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
    X, y = frame.drop(columns="target"), frame["target"]
    model = SGDClassifier(alpha=trial.params["alpha"], random_state=0)
    batches = len(X) // batch
    trial.plan(epochs * batches)
    for _ in range(epochs):
        for i in range(batches):
            rows = slice(i * batch, (i + 1) * batch)
            model.partial_fit(X.iloc[rows], y.iloc[rows], classes=["tested_negative", "tested_positive"])
            if trial.step(loss=0.0, n_samples=batch):
                trial.report(val_loss=1.0 - model.score(X, y))
    trial.log_model(model, input_example=X.head(3))
    trial.log_reference(X, y)


# (quality, megabytes) for ``ranked``: the first two have the best val_loss but allocate 300 MB at
# step 25 (over a 150 MB budget), after rungs at 10 and 20 steps
RANKED_POINTS = [(0.0, 300), (0.05, 300), (0.5, 0), (0.3, 0), (0.9, 0), (0.4, 0), (0.2, 0), (0.7, 0)]


def ranked(trial, steps: int = 80, alloc_at: int = 25, sleep_s: float = 0.01) -> None:
    """val_loss = params['quality'] + 1/step (lower quality is better); allocates and
    touches params['megabytes'] MB at ``alloc_at`` (0: none), for budget tests of halving."""
    quality, megabytes = trial.params["quality"], trial.params.get("megabytes", 0)
    held = []
    for step in range(1, steps + 1):
        if step == alloc_at and megabytes:
            held.append(np.ones(megabytes * 2**20 // 8))
        time.sleep(sleep_s)
        if trial.step(loss=quality + 1.0 / step, n_samples=1):
            trial.report(val_loss=quality + 1.0 / step)


def fake_cuda_oom(trial, steps: int = 30, message: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> None:
    """Reports GPU memory of 2 MB per row of its batch; a batch over 1000 rows raises, in step
    15, the real ``torch.OutOfMemoryError`` a CUDA allocation raises (no GPU is needed for that)."""
    batch = trial.params["batch_size"]
    for step in range(1, steps + 1):
        if batch > 1000 and step == 15:
            import torch

            raise torch.OutOfMemoryError(message)
        if trial.step(loss=1.0 / step, n_samples=batch):
            trial.report(val_loss=1.0 / step, gpu_memory_mb=2.0 * batch)


def metered(trial, steps: int = 60, setup_cpu_s: float = 0.3, step_cpu_s: float = 0.004, eval_cpu_s: float = 0.0,
            first_step_mb: int = 0, after_loop_mb: int = 0, log_mb: int = 0) -> None:
    """Known CPU costs: ``setup_cpu_s`` before the first step, ``step_cpu_s`` a step and
    ``eval_cpu_s`` an evaluation window (CPU time: the same however busy the machine).
    ``first_step_mb``: the first step allocates that much gradually (a budget stops it
    there); ``after_loop_mb``: allocated once the loop is done (a final evaluation);
    ``log_mb``: reference data of that size logged at the end (copied while it is saved)."""
    cpu = time.process_time
    _busy(setup_cpu_s, cpu)
    trial.reset_clock()
    held = []
    for step in range(1, steps + 1):
        if step == 1 and first_step_mb:
            for _ in range(first_step_mb // 20):
                held.append(np.ones(20 * 2**20 // 8))
                time.sleep(0.02)
        _busy(step_cpu_s, cpu)
        if trial.step(loss=1.0 / step, n_samples=1):
            _busy(eval_cpu_s, cpu)
            trial.report(val_loss=1.0 / step)
    if after_loop_mb:
        for _ in range(after_loop_mb // 20):
            held.append(np.ones(20 * 2**20 // 8))
            time.sleep(0.02)
    if log_mb:
        trial.log_reference(np.ones((log_mb * 2**20 // 80, 10)))


def diabetes_sgd(trial, steps: int = 8, batch: int = 64):
    """SGD on diabetes for ``steps`` batches (accuracy reported per window); returns the model
    and the table (X, y), for trainers that keep the model in some form."""
    import pandas as pd
    from sklearn.linear_model import SGDClassifier

    frame = pd.read_csv(os.path.join(os.environ["FRUGALML_DATA_DIR"], "diabetes.csv.gz"))
    X, y = frame.drop(columns="target"), frame["target"]
    features, labels = X.to_numpy(), y.to_numpy()
    model = SGDClassifier(random_state=0)
    trial.plan(steps)
    for i in range(steps):
        rows = slice(i * batch, (i + 1) * batch)
        model.partial_fit(features[rows], labels[rows], classes=["tested_negative", "tested_positive"])
        if trial.step(loss=0.0, n_samples=batch):
            trial.report(accuracy=model.score(features, labels))
    return model, X, y


def report_torch(trial) -> None:
    """One step; whether this worker has torch imported (inherited from its forkserver)."""
    trial.step(loss=1.0)
    trial.set_info(torch="torch" in sys.modules)


def import_torch(trial) -> None:
    """One step; whether torch was imported before this function's own import of it (inherited from
    a forkserver that read this import from the source)."""
    inherited = "torch" in sys.modules
    import torch  # noqa: F401 - the import the forkserver does for this function's workers

    trial.step(loss=1.0)
    trial.set_info(torch=inherited, sklearn="sklearn" in sys.modules)


def import_a_module_that_raises(trial) -> None:
    """Import ``raises_at_import``: its RuntimeError, in the trial."""
    import raises_at_import  # noqa: F401


def reports_environment(trial, name: str = "FRUGALML_TEST_VALUE", steps: int = 2) -> None:
    """Report the float in environment variable ``name`` (-1 when unset) as val_loss."""
    for _ in range(steps):
        if trial.step(0.0):
            trial.report(val_loss=float(os.environ.get(name, "-1")))
