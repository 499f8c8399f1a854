"""Architecture-aware cost prediction and budgeted NAS, measured on real MLP trials.

Runs ``frugalml reproduce nas`` (or reads a finished one with ``--out``) and prints,
side by side from the same trials:

* held-out prediction error: the cost model fitted on a random third of the
  exhaustive grid's architectures predicts the rest (10 splits, median of
  |predicted / measured - 1|), once with the architecture-aware features (weights,
  activations, FLOPs, batch) and once with the batch size alone, as for the SGD
  workloads. Targets: memory <= 10 %, step time <= 15 %. A network's memory is mostly
  the framework's, so memory is also judged above the cheapest training architecture's;
* the budgeted + predictive search's CPU-seconds over the exhaustive grid's (target
  <= 0.30), and whether both find the same best feasible architecture.

    python benchmarks/nas_budgets.py [--quick] [--out DIR] [--workers 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from frugalml.reproduce import held_out_errors, run_nas
from frugalml.reproduce._nas import FEATURES, exhaustive_study, nas_design
from frugalml.store import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="a finished (or resumable) reproduction's folder; run into it")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out or f"nas-{'quick' if args.quick else 'full'}")
    run = run_nas(out, quick=args.quick, resume=out.exists(), workers=args.workers, echo=lambda line: None)
    records = ResultStore(exhaustive_study(out, nas_design(args.quick, args.workers)).path).trials()
    aware, batch_only = held_out_errors(records, features=FEATURES), held_out_errors(records, features=("batch_size",))
    print(f"{len(records)} architectures, exhaustive; model fitted on 1/3, 10 splits")
    print(f"{'median held-out error':<24}{'architecture-aware':>20}{'batch size only':>18}{'ratio':>8}{'target':>8}")
    above = {features: held_out_errors(records, features=features, above_base=True)
             for features in (FEATURES, ("batch_size",))}
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    def ratio(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or not b else f"{a / b:.2f}"

    for metric, target in (("peak_memory_mb", 0.10), ("mean_step_ms", 0.15)):
        a, b = aware[metric], batch_only[metric]
        print(f"{metric:<24}{pct(a):>20}{pct(b):>18}{ratio(a, b):>8}{target:>8.0%}")
    a, b = above[FEATURES]["peak_memory_mb"], above[("batch_size",)]["peak_memory_mb"]
    print(f"{'memory above the base':<24}{pct(a):>20}{pct(b):>18}{ratio(a, b):>8}{'':>8}  (the part the architecture adds)")
    noise = next(f for f in run.findings if f.key == "nas_predict_before_run").numbers["remeasured"]
    print(f"{'re-measured (floor)':<24}{pct(noise['peak_memory_mb']):>20}{'':>18}{'':>8}{'':>8}  memory; step time "
          f"{pct(noise['mean_step_ms'])}: the same architectures, measured again by the budgeted run")
    compute = next(f for f in run.findings if f.key == "nas_compute_saved").numbers
    best = next(f for f in run.findings if f.key == "nas_same_best")
    if compute.get("share") is None:
        print("budgeted / exhaustive CPU-s: n/a (no CPU measured)")
    else:
        print(f"budgeted / exhaustive CPU-s: {compute['share']:.2f} ({compute['cpu_s_budgeted']:.0f} / "
              f"{compute['cpu_s_exhaustive']:.0f}; target <= 0.30; an oracle running only what fits: "
              f"{compute['oracle_share']:.2f}); {compute['stopped']} stopped, {compute['skipped']} skipped")
    print(f"same best feasible architecture: {best.verdict.value} ({best.evidence})")


if __name__ == "__main__":
    main()
