"""What a warm-started retrain costs against a cold re-tune on the same new data.

An original study runs the thesis grid (batch size {30, 300, 3000, 30000} x learning
rate {0.1, 0.01, 0.001, 0.0001}, linear SGD) on the first half of a table. The second
half, with a covariate shift (each feature scaled by 1.1 and moved by 0.2 std), is the
new data. Then, side by side on that new data:

* warm: ``retrain_study(..., top=K)``: the original study's K best feasible
  configurations only (what ``frugalml retrain`` runs);
* cold: ``retrain_study(..., cold=True)``: the whole grid again.

Prints each arm's CPU-seconds (trials' own CPU time, so machine load barely moves it),
its best feasible configuration and objective, and the ratio warm / cold (target <= 0.40).

Run: ``python benchmarks/retrain_warm_vs_cold.py [--dataset PATH --target COL] [--top 3] [--max-steps 300]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "casp_protein.csv.gz"
GRID = {"batch_size": [30, 300, 3000, 30000], "learning_rate": [0.1, 0.01, 0.001, 0.0001]}


def _halves(path: Path, target: str, folder: Path) -> tuple[Path, Path]:
    frame = pd.read_csv(path).sample(frac=1.0, random_state=0).reset_index(drop=True)
    old, new = frame.iloc[: len(frame) // 2], frame.iloc[len(frame) // 2:].copy()
    features = [c for c in frame.columns if c != target and frame[c].dtype.kind in "if"]
    new[features] = new[features] * 1.1 + 0.2 * old[features].std().to_numpy()
    old.to_csv(folder / "old.csv", index=False)
    new.to_csv(folder / "new.csv", index=False)
    return folder / "old.csv", folder / "new.csv"


def main(args: argparse.Namespace) -> None:
    from frugalml import Search, Study, Workload, tune
    from frugalml.retrain import retrain_study

    os.environ.setdefault("FRUGALML_DATA_DIR", str(REPO.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        old, new = _halves(Path(args.dataset), args.target, folder)
        original = Study(name="original", workloads=[Workload(path=str(old), target=args.target,
                                                              algorithm=args.algorithm, max_steps=args.max_steps,
                                                              eval_every=max(1, args.max_steps // 10))],
                         search=Search(space=GRID), workers=2, mlflow_uri=None, directory=str(folder / "original"))
        first = tune(original)
        rows = {}
        for arm, options in (("warm", {"top": args.top}), ("cold", {"cold": True})):
            study = retrain_study(original.path, new, out=folder / arm, **options)
            study.mlflow_uri = None
            result = tune(study)
            best = result.best_feasible()
            rows[arm] = (result.compute().used_cpu_s, len(result.records), best)
    cpu_first = first.compute().used_cpu_s
    print(f"{Path(args.dataset).name}: {args.algorithm}, thesis grid (16 configurations), {args.max_steps} steps a "
          f"trial; original study {cpu_first:.1f} CPU-s on the old half\n")
    print(f"{'arm':6}{'trials':>8}{'CPU-s':>10}  best feasible configuration (objective)")
    for arm, (cpu, trials, best) in rows.items():
        described = f"{best.config_id} ({best.objective[0]:.4g})" if best else "none"
        print(f"{arm:6}{trials:>8}{cpu:>10.2f}  {described}")
    (warm_cpu, _, warm_best), (cold_cpu, _, cold_best) = rows["warm"], rows["cold"]
    same = warm_best is not None and cold_best is not None and warm_best.config_id == cold_best.config_id
    gap = "" if same or not (warm_best and cold_best) else (
        f" (warm's best is {abs(warm_best.objective[0] / cold_best.objective[0] - 1):.2%} off cold's objective)")
    print(f"\nwarm / cold CPU-seconds: {warm_cpu / cold_cpu:.3f} (target <= 0.40); same best feasible configuration: "
          f"{'yes' if same else 'no'}{gap}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DEFAULT))
    parser.add_argument("--target", default="target")
    parser.add_argument("--algorithm", default="linear_regression")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=300)
    main(parser.parse_args())
