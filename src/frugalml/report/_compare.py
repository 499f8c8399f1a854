"""Compare two studies' system metrics configuration by configuration (data step only)."""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import pandas as pd

from frugalml.metrics import CPU_PERCENT, MEAN_STEP_MS, MEMORY_MB, VAL_LOSS
from frugalml.records import TrialRecord
from frugalml.report._info import trials_frame

COMPARED = (MEAN_STEP_MS, CPU_PERCENT, MEMORY_MB, VAL_LOSS)


def _key(frame: pd.DataFrame, by: str) -> pd.Series:
    if by == "params":
        params = [c for c in frame.columns if c.startswith("param.")]
        return frame[params].apply(lambda row: json.dumps({k[6:]: row[k] for k in params}, default=str), axis=1)
    return frame["workload"] + "/" + frame["config_id"]


def compare_studies(a: Sequence[TrialRecord], b: Sequence[TrialRecord], *, by: str = "config") -> pd.DataFrame:
    """One row per configuration found in both studies: each metric's mean in A and B and B/A.

    ``by="config"`` matches on workload + config_id; ``by="params"`` on the parameters alone
    (to compare two datasets or workloads with the same grid). Memory is the peak, step time
    and CPU the mean over windows, each averaged over repeats.
    """
    frames = []
    for side, records in (("a", a), ("b", b)):
        trials = trials_frame(records)
        if trials.empty:
            return pd.DataFrame()
        for record_params in ({k for r in records for k in r.params},):
            for name in record_params:
                trials[f"param.{name}"] = trials[name]
        trials["key"] = _key(trials, by)
        grouped = trials.groupby("key").agg(
            workload=("workload", "first"), config_id=("config_id", "first"), repeats=("trial_id", "count"),
            **{metric: (metric, "mean") for metric in COMPARED},
        )
        frames.append(grouped.add_suffix(f"_{side}"))
    joined = frames[0].join(frames[1], how="inner")
    rows = []
    for key, row in joined.iterrows():
        out: dict[str, Any] = {"key": key, "workload_a": row["workload_a"], "workload_b": row["workload_b"],
                               "config_id": row["config_id_a"], "repeats_a": row["repeats_a"], "repeats_b": row["repeats_b"]}
        for metric in COMPARED:
            va, vb = row[f"{metric}_a"], row[f"{metric}_b"]
            out[f"{metric}_a"], out[f"{metric}_b"] = va, vb
            ok = all(isinstance(v, float) and math.isfinite(v) for v in (va, vb)) and va != 0
            out[f"{metric}_ratio"] = vb / va if ok else math.nan
        rows.append(out)
    return pd.DataFrame(rows)
