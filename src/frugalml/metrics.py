"""The names of what frugalml measures: one constant per metric, defined here only.

Metric names carry their unit. Per window (every ``eval_every`` steps):

========================  ==============================================================
``train_loss``            mean training loss over the window's steps
``val_loss``              validation loss (the algorithm's own loss on the test split)
``accuracy`` / ``rmse``   classification accuracy / regression RMSE on the test split
``mean_step_ms``          mean training step time over the window, evaluation excluded
``throughput_sps``        training samples per second over the window
``cpu_percent``           CPU utilisation of the worker's process tree (100 = one core)
``memory_mb``             RSS - shared of the worker's process tree (thesis definition)
``uss_mb``                unique set size of the tree, where the OS gives it
``peak_rss_mb``           peak RSS of the worker process (VmHWM), where the OS gives it
``read_mb``/``write_mb``  bytes read/written by the tree since the trial started
``wall_s``                seconds since the trial started
``gpu_util_percent``      GPU utilisation (only when an NVIDIA GPU is present)
``gpu_memory_mb``         GPU memory used by the tree's processes (only with a GPU)
``energy_j``              joules the trial used so far: measured (RAPL, NVML) or
                          estimated, as ``TrialRecord.energy_source`` says
``cpu_s``                 CPU-seconds the trial's process used so far, read in the worker
                          at the window's end, after its evaluation (the step boundaries
                          :mod:`frugalml.accounting` takes the per-step cost from)
========================  ==============================================================

A trial's summary and the cost model speak of its peaks and totals (``peak_memory_mb``,
``trial_seconds``); :mod:`frugalml.deploy` measures what a model costs to serve
(``predict_ms``, ``model_mb``, ``throughput_rows_s``, ``predict_memory_mb``).

MB means 2**20 bytes everywhere. :data:`SYSTEM_METRICS` are the system figures (the
rest are the model's): MLflow shows them under ``system/``. :data:`MAXIMISED` are the
metrics where higher is better (searches and halving maximise them).
"""

from __future__ import annotations

# the model's, per window
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
ACCURACY = "accuracy"
RMSE = "rmse"

# the system's, per window or per watchdog sample
MEAN_STEP_MS = "mean_step_ms"
THROUGHPUT_SPS = "throughput_sps"
CPU_PERCENT = "cpu_percent"
CPU_S = "cpu_s"
MEMORY_MB = "memory_mb"
USS_MB = "uss_mb"
PEAK_RSS_MB = "peak_rss_mb"
READ_MB = "read_mb"
WRITE_MB = "write_mb"
WALL_S = "wall_s"
GPU_UTIL_PERCENT = "gpu_util_percent"
GPU_MEMORY_MB = "gpu_memory_mb"
ENERGY_J = "energy_j"
RSS_MB = "rss_mb"  # this and the next: sample figures that the executors' windows do not keep
N_PROCESSES = "n_processes"

# a trial's peaks and totals, as its summary, reports and the cost model give them
PEAK_MEMORY_MB = "peak_memory_mb"
PEAK_GPU_MEMORY_MB = "peak_gpu_memory_mb"
STEADY_STEP_MS = "steady_step_ms"  # median window mean step time after the warm-up window
CPU_MS_PER_STEP = "cpu_ms_per_step"
TRIAL_SECONDS = "trial_seconds"
TRIAL_ENERGY_J = "trial_energy_j"

# what a model costs to serve (frugalml.deploy)
PREDICT_MS = "predict_ms"
THROUGHPUT_ROWS_S = "throughput_rows_s"
MODEL_MB = "model_mb"
PREDICT_MEMORY_MB = "predict_memory_mb"

MAXIMISED = frozenset({ACCURACY, THROUGHPUT_SPS, THROUGHPUT_ROWS_S})
SYSTEM_METRICS = frozenset({
    MEAN_STEP_MS, THROUGHPUT_SPS, CPU_PERCENT, MEMORY_MB, USS_MB, PEAK_RSS_MB, READ_MB, WRITE_MB,
    WALL_S, GPU_UTIL_PERCENT, GPU_MEMORY_MB, ENERGY_J, CPU_S,
})
