"""Built-in PyTorch networks: an MLP and a small CNN, trained one optimiser step per ``trial.step``.

Architecture and training parameters come from the configuration:

========  ============================================================  =========
network   parameters (default)                                          checked
========  ============================================================  =========
``mlp``   ``depth`` (2) hidden layers of ``width`` (128) units,         width, depth >= 1;
          ``activation`` (relu | tanh | gelu | sigmoid), ``dropout``    dropout in [0, 1)
          (0.0)
``cnn``   ``depth`` (2) blocks of conv(``channels`` (16), ``kernel``    kernel <= image side
          (3), same padding) + ReLU + 2x2 max-pool while the image is
          at least 2 pixels wide; then a linear layer
both      ``batch_size``, ``learning_rate``, ``optimizer`` (adam | sgd
          | adamw; sgd has momentum 0.9)
========  ============================================================  =========

A CNN reads each row as an image: ``n_features`` must be ``side**2`` (one channel, as
mnist_784) or ``3 * side**2`` (RGB, channels first). Training runs on CUDA when
it is available, else on the CPU; ``trial.set_info(device=...)`` says which.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from frugalml.exceptions import ConfigError
from frugalml.metrics import ACCURACY, RMSE, VAL_LOSS
from frugalml.trial import Trial
from frugalml.validation import POSITIVE, POSITIVE_INT, Interval, check
from frugalml.workloads._prepare import PreparedData
from frugalml.units import to_mb

NETWORKS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid")
OPTIMIZERS = ("adam", "sgd", "adamw")
DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"depth": 2, "width": 128, "activation": "relu", "dropout": 0.0},
    "cnn": {"depth": 2, "channels": 16, "kernel": 3},
}
COMMON = {"batch_size": 64, "learning_rate": 0.001, "optimizer": "adam"}
NETWORK_BATCH_SIZE = COMMON["batch_size"]  # a built-in network's batch when the search sets none
#: every parameter a network workload reads
NETWORK_PARAMS = {name: frozenset({*defaults, *COMMON}) for name, defaults in DEFAULTS.items()}
_CHECKS = {"depth": POSITIVE_INT, "width": POSITIVE_INT, "channels": POSITIVE_INT, "kernel": POSITIVE_INT,
           "dropout": Interval(float, 0, 1, closed="left"), "batch_size": POSITIVE_INT,
           "learning_rate": POSITIVE}
_CHOICES = {"activation": ACTIVATIONS, "optimizer": OPTIMIZERS}
#: an evaluation chunk's widest activation stays this small, so it fits a shared last-level cache
EVAL_CHUNK_BYTES = 8 * 2**20


def image_shape(n_features: int) -> tuple[int, int, int] | None:
    """(channels, side, side) when a row of ``n_features`` values is a square image, else None."""
    for channels in (1, 3):
        side = math.isqrt(n_features // channels)
        if n_features % channels == 0 and side * side * channels == n_features:
            return channels, side, side
    return None


def check_network(algorithm: str, params: Mapping[str, Any], n_features: int | None = None) -> dict[str, Any]:
    """The configuration with defaults filled in; a one-line ConfigError for one that cannot be built."""
    if algorithm not in NETWORKS:
        raise ConfigError(f"unknown network {algorithm!r}; choose one of {', '.join(NETWORKS)}.")
    config = {**COMMON, **DEFAULTS[algorithm], **{k: v for k, v in params.items() if k in NETWORK_PARAMS[algorithm]}}
    for name, value in config.items():
        if name in _CHECKS:
            check(f"the {algorithm} network", name, value, _CHECKS[name])
        elif name in _CHOICES and value not in _CHOICES[name]:
            raise ConfigError(f"The '{name}' parameter of the {algorithm} network must be one of "
                              f"{', '.join(_CHOICES[name])}. Got {value!r} instead.")
    if algorithm == "cnn" and n_features is not None:
        shape = image_shape(n_features)
        if shape is None:
            raise ConfigError(f"The cnn network reads each row as a square image, but rows have {n_features} values "
                              "(not side**2 or 3 * side**2); use algorithm = \"mlp\" for this dataset.")
        if config["kernel"] > shape[1]:
            raise ConfigError(f"The 'kernel' parameter of the cnn network must be at most the image side "
                              f"({shape[1]}). Got {config['kernel']} instead.")
    return config


def build_network(algorithm: str, config: Mapping[str, Any], n_features: int, n_outputs: int) -> Any:
    """The ``torch.nn.Module`` of a checked configuration."""
    import torch.nn as nn

    if algorithm == "mlp":
        activation = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}[config["activation"]]
        layers: list[Any] = []
        inputs = n_features
        for _ in range(config["depth"]):
            layers += [nn.Linear(inputs, config["width"]), activation()]
            if config["dropout"] > 0:
                layers.append(nn.Dropout(config["dropout"]))
            inputs = config["width"]
        return nn.Sequential(*layers, nn.Linear(inputs, n_outputs))
    channels, side, _ = image_shape(n_features)
    layers = [nn.Unflatten(1, (channels, side, side))]
    for _ in range(config["depth"]):
        layers += [nn.Conv2d(channels, config["channels"], config["kernel"], padding="same"), nn.ReLU()]
        channels = config["channels"]
        if side >= 2:
            layers.append(nn.MaxPool2d(2))
            side //= 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * side * side, n_outputs))


def eval_chunk_rows(algorithm: str, config: Mapping[str, Any], n_features: int) -> int:
    """Rows per evaluation chunk on the CPU: the largest power of two in [16, 1024] whose widest
    activation (a CNN's first feature map, float32) fits :data:`EVAL_CHUNK_BYTES` (16 rows may
    not). A 64-channel 28x28 map takes
    200 KB a row: 1024-row chunks evaluated mnist_784's test split 2.7x slower than 32-row ones
    on one core (14.9 against 5.5 CPU-s), as each chunk's maps spilled out of the cache."""
    if algorithm == "mlp":
        widest = max(n_features, config["width"])
    else:  # a checked CNN's rows are images: its first map has `channels` planes of the image's size
        widest = config["channels"] * n_features // image_shape(n_features)[0]
    rows = EVAL_CHUNK_BYTES // (4 * widest)
    return 1 << max(4, min(10, rows.bit_length() - 1))


def parameter_count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


#: the architecture-aware cost features :func:`network_features` derives, in MB, MB and GFLOP
NETWORK_FEATURES = ("weights_mb", "activations_mb", "gflops")
_STATE_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}  # float32 tensors the optimiser keeps per parameter


def network_features(algorithm: str, n_features: int, n_outputs: int) -> Callable[[Mapping[str, Any]], dict[str, float]]:
    """A function of a configuration giving its network's cost features before it runs.

    Each is computed from the module itself, built on torch's ``meta`` device (shapes
    only, nothing allocated), once per architecture:

    * ``weights_mb``: float32 weights, their gradients and the optimiser's state
      (Adam keeps two tensors per parameter, SGD with momentum one);
    * ``activations_mb``: the elements every leaf module outputs for one sample
      (what autograd keeps for the backward pass), times the batch, in float32;
    * ``gflops``: the forward and backward FLOPs of one optimiser step, counted by
      ``torch.utils.flop_counter.FlopCounterMode`` for one sample, times the batch.

    It also gives the configuration's ``batch_size``, the default filled in. A
    configuration that cannot be built gives ``{}`` (the cost model then does not
    predict it; the tuner reports why before it runs).
    """
    per_architecture: dict[tuple, tuple[int, int, int]] = {}

    def features(params: Mapping[str, Any]) -> dict[str, float]:
        try:
            config = check_network(algorithm, params, n_features)
        except ConfigError:
            return {}
        key = tuple(sorted((k, v) for k, v in config.items() if k in DEFAULTS[algorithm]))
        if key not in per_architecture:
            per_architecture[key] = _measure(algorithm, config, n_features, n_outputs)
        parameters, activations, flops = per_architecture[key]
        batch = int(config["batch_size"])
        return {
            "batch_size": batch,  # the network's default when the configuration leaves it out
            "weights_mb": to_mb(parameters * 4 * (2 + _STATE_SLOTS[config["optimizer"]])),
            "activations_mb": to_mb(activations * batch * 4),
            "gflops": flops * batch / 1e9,
        }

    return features


def _measure(algorithm: str, config: Mapping[str, Any], n_features: int, n_outputs: int) -> tuple[int, int, int]:
    """(parameters, activation elements per sample, forward+backward FLOPs per sample)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        module = build_network(algorithm, config, n_features, n_outputs)
        outputs: list[int] = []
        for leaf in (m for m in module.modules() if not any(True for _ in m.children())):
            leaf.register_forward_hook(lambda _m, _i, output: outputs.append(output.numel()))
        with FlopCounterMode(display=False) as counter:
            module(torch.empty(1, n_features)).sum().backward()
    return parameter_count(module), sum(outputs), counter.get_total_flops()


def network_train(
    trial: Trial,
    data: PreparedData,
    *,
    algorithm: str,
    epochs: int = 1,
    max_steps: int | None = None,
    data_format: str = "numpy",
    seed: int = 0,
    eval_rows: int | None = None,
) -> None:
    """Train an MLP or CNN on ``data``, one optimiser step per ``trial.step``.

    Batches are sequential slices of the (already shuffled, standardised) training split;
    at each window's end it reports ``val_loss`` (cross-entropy, or mean squared error
    for regression) and ``accuracy`` (classification) or ``rmse`` on the test split,
    evaluated in chunks of :func:`eval_chunk_rows` (a CNN's feature maps stay in cache); with
    ``eval_rows``, windows before the last use only the first ``eval_rows`` test rows. A
    non-finite loss is reported and ends training.

    On CUDA it resets the allocator's peak statistics first and records, at every
    evaluation, ``trial.set_info(torch_gpu_peak_allocated_mb=...)``: the peak of
    ``torch.cuda.max_memory_allocated`` (MB) so far, beside the watchdog's NVML
    ``gpu_memory_mb``. NVML's per-process memory includes the CUDA context (hundreds of MB)
    and the caching allocator's reserved but unallocated blocks, so it exceeds the
    allocator's peak; a GPU budget is held to NVML's figure (what the device gives up).
    """
    import torch
    import torch.nn.functional as F

    from frugalml.workloads._sgd import evaluated_rows, steps_planned

    config = check_network(algorithm, trial.params, data.n_features)
    if eval_rows is not None:
        check("network_train", "eval_rows", eval_rows, POSITIVE_INT)
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # a trial's own peak, also in a reused (in-process) worker
    classification = data.task == "classification"
    n_outputs = len(data.classes) if classification else 1
    model = build_network(algorithm, config, data.n_features, n_outputs).to(device)
    optimizer = {
        "adam": lambda p: torch.optim.Adam(p, lr=config["learning_rate"]),
        "adamw": lambda p: torch.optim.AdamW(p, lr=config["learning_rate"]),
        "sgd": lambda p: torch.optim.SGD(p, lr=config["learning_rate"], momentum=0.9),
    }[config["optimizer"]](model.parameters())
    trial.set_info(device=device.type, parameters=parameter_count(model))

    X_train, y_train, X_test, y_test = data.arrays(mmap=True)
    rows = data.frame().iloc if data_format == "pandas" else X_train
    n_train = data.n_train
    batch = min(int(config["batch_size"]), n_train)
    planned = steps_planned(n_train, batch, epochs, max_steps)
    trial.plan(planned)

    def tensors(X: Any, y: np.ndarray) -> tuple[Any, Any]:
        # float32 copies: the memory-mapped split is read-only, and a network wants float32 anyway
        target = torch.from_numpy(np.array(y)).to(device)
        features = torch.from_numpy(np.array(X, dtype=np.float32)).to(device)
        return features, (target.long() if classification else target.float().view(-1, 1))

    def loss_of(output: Any, target: Any) -> Any:
        return F.cross_entropy(output, target) if classification else F.mse_loss(output, target)

    # the cache bound is the CPU's; on CUDA each chunk is a copy and two syncs, so chunks stay large
    chunk = eval_chunk_rows(algorithm, config, data.n_features) if device.type == "cpu" else 1024
    sample = evaluated_rows(trial, len(y_test), eval_rows)

    def evaluate(whole: bool) -> dict[str, float]:
        n = len(y_test) if whole else sample
        X_eval, y_eval = X_test[:n], y_test[:n]
        model.eval()
        total, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, n, chunk):
                X, target = tensors(X_eval[start : start + chunk], y_eval[start : start + chunk])
                output = model(X)
                total += float(loss_of(output, target)) * len(target)
                if classification:
                    correct += int((output.argmax(dim=1) == target).sum())
        model.train()
        if device.type == "cuda":  # a host-side counter: no device sync
            trial.set_info(torch_gpu_peak_allocated_mb=to_mb(torch.cuda.max_memory_allocated(device)))
        val_loss = total / n
        if classification:
            return {VAL_LOSS: val_loss, ACCURACY: correct / n}
        return {VAL_LOSS: val_loss, RMSE: math.sqrt(val_loss)}

    step = 0
    pending = False
    trial.reset_clock()
    while step < planned:
        for start in range(0, n_train, batch):
            if step >= planned:
                break
            X, target = tensors(rows[start : start + batch], y_train[start : start + batch])
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(model(X), target)
            loss.backward()
            optimizer.step()
            step += 1
            value = loss.item()
            if not math.isfinite(value):
                trial.set_info(diverged=True)
                trial.step(math.inf, len(target))
                trial.report(val_loss=math.inf, **({ACCURACY: math.nan} if classification else {RMSE: math.inf}))
                return
            pending = not trial.step(value, len(target))
            if not pending:
                trial.report(**evaluate(whole=step >= planned))
    if pending:
        trial.report(**evaluate(whole=True))
