"""Adapter overhead: PyTorch, Lightning, Keras and Transformers loops with frugalml's adapters
against the same loops with a null callback.

Everything runs inside one real trial (a LocalExecutor worker pinned to one core, the
parent's watchdog sampling it at 10 Hz), so the adapters talk to a real Trial: a pipe to
the parent and shared memory. Two measurements, side by side in that process:

* the adapter alone: each adapter's per-step hook called in a loop with realistic
  arguments (a loss tensor, a batch, the framework's own state objects), against a
  null callback's same hook with the same arguments, interleaved batch by batch; the
  difference is what the adapter adds to a step (``trial.step`` included), as
  microseconds and as a share of a 5 ms step. ``trial.step`` by hand is shown beside.
* whole loop, A/B interleaved: the same mnist MLP (784-512-10, batch 128, one thread:
  a few ms per step) trained by each framework's own loop with the adapter and with a
  null callback, alternating; the ratio is adapter / null. On a shared 2-core VM these
  ratios move by several percent between rounds, more than the effect sought: the
  per-call figures are the measurement, the loops a sanity check.

The target is < 1 % of a 5 ms step (50 us).

    python benchmarks/adapter_overhead_torch.py [--calls 20000] [--repeats 7] [--steps 120]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from types import SimpleNamespace

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")

STEP_MS = 5.0  # the reference step the per-call cost is compared with
BATCH = 128


def _interleaved_us(calls: dict[str, object], n: int, batches: int = 20) -> dict[str, float]:
    """Median over ``batches`` of the microseconds per call of each ``call(i)``, the variants taking turns."""
    per_batch = max(1, n // batches)
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for batch in range(batches):
        order = list(calls.items()) if batch % 2 == 0 else list(reversed(calls.items()))
        for name, call in order:
            start = time.perf_counter()
            for i in range(batch * per_batch, (batch + 1) * per_batch):
                call(i)
            timings[name].append((time.perf_counter() - start) / per_batch * 1e6)
    return {name: statistics.median(values) for name, values in timings.items()}


def _per_call(trial, calls: int) -> dict[str, float]:
    """Microseconds per step hook of each adapter and of a null callback, inside the trial."""
    import keras
    import lightning as L
    import torch
    import transformers

    from frugalml.integrations.keras import FrugalmlCallback as KerasCallback
    from frugalml.integrations.lightning import FrugalmlCallback as LightningCallback
    from frugalml.integrations.torch import Batches
    from frugalml.integrations.transformers import FrugalmlCallback as TransformersCallback

    loss = torch.tensor(0.5)
    batch = (torch.zeros(BATCH, 784), torch.zeros(BATCH, dtype=torch.long))
    out: dict[str, float] = {}

    def by_hand(i: int) -> None:
        if trial.step(loss.item(), len(batch[0])):
            trial.report(val_loss=0.5)

    batches = Batches(trial, [batch] * calls, 1)
    iterator = iter(batches)
    plain = iter([batch] * calls)

    def with_batches(i: int) -> None:
        next(iterator)
        batches.step(loss)

    timed = _interleaved_us({"hand": by_hand, "batches": with_batches, "null": lambda i: next(plain)}, calls)
    out["step_us"] = timed["hand"]
    out["torch_us"] = timed["batches"] - timed["null"]

    class NullLightning(L.pytorch.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            pass

    trainer = SimpleNamespace(global_step=0, should_stop=False, estimated_stepping_batches=10**9)
    frugal, null = LightningCallback(trial), NullLightning()
    frugal.on_train_start(trainer, None)
    outputs = {"loss": loss}

    def lightning_step(callback):
        def call(i: int) -> None:
            trainer.global_step += 1
            callback.on_train_batch_end(trainer, None, outputs, batch, i)
        return call

    timed = _interleaved_us({"frugal": lightning_step(frugal), "null": lightning_step(null)}, calls)
    out["lightning_us"] = timed["frugal"] - timed["null"]

    class NullKeras(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    tracker = model._loss_tracker
    count, total = tracker.count.value, tracker.total.value  # the tensors behind Keras's variables
    frugal, null = KerasCallback(trial), NullKeras()
    for callback in (frugal, null):
        callback.set_model(model)
        callback.set_params({"epochs": 1, "steps": 10**9, "verbose": 0})
    frugal.on_train_begin()
    logs = {"loss": 0.5}

    def keras_step(callback):
        def call(i: int) -> None:
            with torch.no_grad():  # a batch's loss into the tracker, as train_step does, in both variants
                count.add_(BATCH)  # (update_state itself costs ~0.2 ms and would drown the difference)
                total.add_(0.5 * BATCH)
            callback.on_train_batch_end(i, logs)
        return call

    timed = _interleaved_us({"frugal": keras_step(frugal), "null": keras_step(null)}, calls)
    out["keras_us"] = timed["frugal"] - timed["null"]

    args = transformers.TrainingArguments("/tmp/frugalml-bench", report_to=[], use_cpu=True,
                                          per_device_train_batch_size=BATCH)
    state, control = transformers.TrainerState(max_steps=10**9), transformers.TrainerControl()
    frugal, null = TransformersCallback(trial), transformers.TrainerCallback()
    frugal.on_train_begin(args, state, control)
    log = {"loss": 0.5, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": 0.1}

    def transformers_step(callback):
        def call(i: int) -> None:
            state.global_step += 1
            callback.on_step_end(args, state, control)
            if i % 10 == 0:  # logging_steps=10
                callback.on_log(args, state, control, logs=log)
        return call

    timed = _interleaved_us({"frugal": transformers_step(frugal), "null": transformers_step(null)}, calls)
    out["transformers_us"] = timed["frugal"] - timed["null"]
    return out


def _mnist(rows: int):
    data_dir = os.environ.get("FRUGALML_DATA_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                                    "data")
    data = np.load(os.path.join(data_dir, "mnist_784.npz"))
    return data["X"][:rows].astype(np.float32) / 255.0, data["y"][:rows].astype(np.int64)


def _loops(trial, steps: int, repeats: int) -> dict[str, float]:
    """Whole-loop ms per step of each framework with the adapter and with a null callback, interleaved."""
    import keras
    import lightning as L
    import torch
    import torch.nn.functional as F
    import transformers
    from torch.utils.data import DataLoader, TensorDataset

    from frugalml.integrations.keras import FrugalmlCallback as KerasCallback
    from frugalml.integrations.lightning import FrugalmlCallback as LightningCallback
    from frugalml.integrations.torch import Batches
    from frugalml.integrations.transformers import FrugalmlCallback as TransformersCallback

    X, y = _mnist(steps * BATCH)
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=BATCH)

    def mlp():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))

    def run_torch(frugal: bool) -> float:
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        batches = Batches(trial, loader) if frugal else loader
        start = time.perf_counter()
        for X_batch, y_batch in batches:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(X_batch), y_batch)
            loss.backward()
            optimizer.step()
            if frugal:
                batches.step(loss)
        return (time.perf_counter() - start) / steps * 1000

    class Clock(L.pytorch.Callback):  # in both variants: times the batches only, not the Trainer's set-up
        def on_train_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.ms = (time.perf_counter() - self.start) / steps * 1000

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def run_lightning(frugal: bool) -> float:
        clock = Clock()
        callbacks = [clock] + ([LightningCallback(trial)] if frugal else [L.pytorch.Callback()])
        L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks).fit(Lit(), loader)
        return clock.ms

    class KerasClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.ms = (time.perf_counter() - self.start) / steps * 1000

    class NullKeras(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    def run_keras(frugal: bool) -> float:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                                  keras.layers.Dense(10)])
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        clock = KerasClock()
        model.fit(X, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False,
                  callbacks=[clock, KerasCallback(trial) if frugal else NullKeras()])
        return clock.ms

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": F.cross_entropy(logits, labels), "logits": logits}

    class HFClock(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.ms = (time.perf_counter() - self.start) / steps * 1000

    rows = [{"x": torch.from_numpy(X[i]), "labels": int(y[i])} for i in range(len(X))]

    def run_transformers(frugal: bool) -> float:
        clock = HFClock()
        args = transformers.TrainingArguments("/tmp/frugalml-bench", num_train_epochs=1, report_to=[], use_cpu=True,
                                              per_device_train_batch_size=BATCH, save_strategy="no",
                                              logging_steps=10, disable_tqdm=True, learning_rate=0.01)
        trainer = transformers.Trainer(model=Net(), args=args, train_dataset=rows, callbacks=[
            clock, TransformersCallback(trial) if frugal else transformers.TrainerCallback()])
        trainer.remove_callback(transformers.PrinterCallback)
        trainer.train()
        return clock.ms

    runs = {"torch": run_torch, "lightning": run_lightning, "keras": run_keras, "transformers": run_transformers}
    for run in runs.values():  # warm-up: first-call costs out of the timing
        run(False)
    timings: dict[str, list[float]] = {f"{fw}_{v}": [] for fw in runs for v in ("null", "frugal")}
    for repeat in range(repeats):
        for fw, run in runs.items():
            for frugal in ((False, True) if repeat % 2 == 0 else (True, False)):
                timings[f"{fw}_{'frugal' if frugal else 'null'}"].append(run(frugal))
    out = {f"{k}_ms": statistics.median(v) for k, v in timings.items()}
    for fw in runs:
        ratios = [f / b for b, f in zip(timings[f"{fw}_null"], timings[f"{fw}_frugal"])]
        out[f"{fw}_ratio"], out[f"{fw}_ratio_min"], out[f"{fw}_ratio_max"] = (
            statistics.median(ratios), min(ratios), max(ratios))
    return out


def bench_train(trial, calls: int, steps: int, repeats: int) -> None:
    import torch

    torch.set_num_threads(1)
    metrics = _per_call(trial, calls)
    metrics.update(_loops(trial, steps, repeats))
    trial.report(**metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per hook in the per-call measurement")
    parser.add_argument("--steps", type=int, default=120, help="training steps per whole-loop run")
    parser.add_argument("--repeats", type=int, default=7, help="A/B pairs per framework")
    args = parser.parse_args()

    from _watched import run_watched

    record = run_watched(bench_train, {"calls": args.calls, "steps": args.steps, "repeats": args.repeats})
    m = {name: record.last(name) for name in record.windows[-1].values}

    print(f"the adapter alone, inside the watched trial ({args.calls} calls per hook; eval_every=100): what its "
          "per-step hook adds over a null callback's, trial.step included")
    print(f"  {'trial.step (+ report per window) by hand':48} {m['step_us']:7.2f} us/call = "
          f"{m['step_us'] / (STEP_MS * 1000) * 100:.3f} % of a {STEP_MS:g} ms step")
    for key, label in (("torch_us", "torch Batches: next(batch) + step(loss)"),
                       ("lightning_us", "lightning FrugalmlCallback.on_train_batch_end"),
                       ("keras_us", "keras FrugalmlCallback.on_train_batch_end"),
                       ("transformers_us", "transformers on_step_end (+ on_log every 10)")):
        print(f"  {label:48} {m[key]:7.2f} us/call = {m[key] / (STEP_MS * 1000) * 100:.3f} % of a "
              f"{STEP_MS:g} ms step")
    print(f"whole loop, mnist MLP 784-512-10, batch {BATCH}, {args.steps} steps, one thread, median of "
          f"{args.repeats} interleaved A/B pairs:")
    print(f"{'':13} {'null ms/step':>13} {'frugalml ms/step':>17} {'ratio':>7} {'range':>15}")
    for fw in ("torch", "lightning", "keras", "transformers"):
        print(f"{fw:13} {m[f'{fw}_null_ms']:>13.3f} {m[f'{fw}_frugal_ms']:>17.3f} {m[f'{fw}_ratio']:>7.3f} "
              f"{m[f'{fw}_ratio_min']:>7.3f}-{m[f'{fw}_ratio_max']:.3f}")


if __name__ == "__main__":
    main()
