"""How often ``frugalml check`` cries wolf, and how often it catches a real slow-down.

Tunes three small studies of a user's own SGD loop on diabetes whose steps carry a
set amount of CPU work: ``base`` and ``same`` (one configuration, tuned twice) and
``slow`` (its steps about 1.5x base's). Then runs the real CLI ``--runs`` times each:

* ``frugalml check same --baseline base``: the same model measured twice; every exit 1
  is a false alarm;
* ``frugalml check slow --baseline base``: a real regression; every exit 0 is a miss.

Default gate (step time re-measured in 3 interleaved rounds, 95% one-sided bound,
15% tolerance). Prints both rates and the median step-time ratio each saw.

Run: ``python benchmarks/gate_false_alarms.py [--runs 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINERS = REPO / "tests" / "gate"


def _study(name: str, step_s: float, folder: Path) -> str:
    from frugalml import Search, Study, Workload, tune

    spec = Study(name=name, workloads=[Workload(train="gate_trainers:timed_sgd", eval_every=8, name="w")],
                 search=Search(objectives=["accuracy"], space={"alpha": [1e-4], "step_s": [step_s]}),
                 repeats=2, workers=2, directory=str(folder / name))
    tune(spec)
    return spec.directory


def _check(candidate: str, baseline: str, out: Path) -> tuple[int, float]:
    done = subprocess.run([sys.executable, "-m", "frugalml.cli", "check", candidate, "--baseline", baseline,
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    if done.returncode not in (0, 1):
        raise SystemExit(f"check failed: {done.stderr.strip()}")
    step = next(m for m in json.loads(out.read_text())["metrics"] if m["metric"] == "mean_step_ms")
    return done.returncode, step["ratio"]


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("FRUGALML_DATA_DIR", str(REPO.parent / "shared" / "data"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TRAINERS), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(TRAINERS))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base, same, slow = (_study("base", 0.004, folder), _study("same", 0.004, folder),
                            _study("slow", 0.0075, folder))
        started = time.monotonic()
        found: dict[str, list[tuple[int, float]]] = {"same": [], "slow": []}
        for k in range(args.runs):
            for name, candidate in (("same", same), ("slow", slow)):
                found[name].append(_check(candidate, base, folder / f"{name}-{k}.json"))
        elapsed = time.monotonic() - started
    alarms = sum(code == 1 for code, _ in found["same"])
    caught = sum(code == 1 for code, _ in found["slow"])
    print(f"{args.runs} runs each on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"{elapsed / (2 * args.runs):.1f} s per check\n")
    for name, what in (("same", "same model measured twice"), ("slow", "candidate ~1.5x slower per step")):
        ratios = [r for _, r in found[name]]
        print(f"{what:34} exit 1 in {sum(c == 1 for c, _ in found[name]):>2}/{args.runs}; step-time ratio median "
              f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    print(f"\nfalse-alarm rate: {alarms / args.runs:.0%} (target <= 5%); detection rate: {caught / args.runs:.0%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    main(parser.parse_args())
