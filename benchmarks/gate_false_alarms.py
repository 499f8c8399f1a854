"""How often ``frugalml check`` cries wolf, and how often it catches a real slow-down.

Tunes three small studies of a user's own SGD loop on diabetes whose steps carry a
set amount of CPU work: ``base`` and ``same`` (one configuration, tuned twice) and
``slow`` (its steps about 1.5x base's). Then runs the real CLI ``--runs`` times each:

* ``frugalml check same --baseline base``: the same model measured twice; every exit 1
  is a false alarm;
* ``frugalml check slow --baseline base``: a real regression; every exit 0 is a miss.

Default gate: step time re-measured in 5 interleaved rounds a side, the rounds' mean
with a 95 % one-sided bootstrap bound, 15 % tolerance. From the rounds each check reports
(``--json``), the alternative (each side's fastest round, compared as it is) is decided
again on the same measurements, so both rules are scored on one run. ``--load N`` runs N processes of
bursty CPU work beside the checks (busy 0.2-2 s, idle 0.1-1 s, at random), as a busy CI
runner or this repository's own test suite does. Prints both rates per rule and the
median step-time ratio each check saw.

Run: ``python benchmarks/gate_false_alarms.py [--runs 20] [--load 3] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
TRAINERS = REPO / "tests" / "gate"


def _study(name: str, step_s: float, folder: Path) -> str:
    from frugalml import Search, Study, Workload, tune

    spec = Study(name=name, workloads=[Workload(train="gate_trainers:timed_sgd", eval_every=8, name="w")],
                 search=Search(objectives=["accuracy"], space={"alpha": [1e-4], "step_s": [step_s]}),
                 repeats=2, workers=2, directory=str(folder / name))
    tune(spec)
    return spec.directory


class Check(NamedTuple):
    failed: bool  # the CLI exited 1: a regression
    ratio: float  # the step-time ratio it printed
    fastest_failed: bool  # each side's fastest round (the alternative) calls a regression on the same rounds
    rounds: list  # [baseline's, candidate's] step times, one per round


def _check(candidate: str, baseline: str, out: Path, rounds: int | None) -> Check:
    from frugalml.gate import GateSettings, decide

    gate_file = []
    if rounds is not None:
        (out.parent / "gate.toml").write_text(f"[gate]\ntraining_rounds = {rounds}\n")
        gate_file = ["--gate", str(out.parent / "gate.toml")]
    done = subprocess.run([sys.executable, "-m", "frugalml.cli", "check", candidate, "--baseline", baseline,
                           "--json", str(out), *gate_file], capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, 1):
        raise SystemExit(f"check failed: {done.stderr.strip()}")
    step = next(m for m in json.loads(out.read_text())["metrics"] if m["metric"] == "mean_step_ms")
    settings = GateSettings()
    gate = next(g for g in settings.metrics if g.metric.name == "mean_step_ms")
    base, cand = ([[value] for value in side] for side in step["rounds"])
    if not (base and cand):
        raise SystemExit("the check did not re-measure step time (--rounds 0?): nothing to score")
    fastest = decide(gate, base, cand, confidence=settings.confidence, resamples=settings.resamples,
                     seed=settings.seed, statistic="min")
    return Check(done.returncode == 1, step["ratio"], fastest.status == "regression", step["rounds"])


def _bursts(seed: int) -> None:
    """CPU work in bursts, for ever: what other jobs on a shared runner look like to a short trial."""
    rng = random.Random(seed)
    while True:
        end = time.perf_counter() + rng.uniform(0.2, 2.0)
        while time.perf_counter() < end:
            pass
        time.sleep(rng.uniform(0.1, 1.0))


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("FRUGALML_DATA_DIR", str(REPO.parent / "shared" / "data"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TRAINERS), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(TRAINERS))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base, same, slow = (_study("base", 0.004, folder), _study("same", 0.004, folder),
                            _study("slow", 0.0075, folder))
        load = [multiprocessing.Process(target=_bursts, args=(seed,), daemon=True) for seed in range(args.load)]
        for process in load:
            process.start()
        started = time.monotonic()
        found: dict[str, list[Check]] = {"same": [], "slow": []}
        try:
            for k in range(args.runs):
                for name, candidate in (("same", same), ("slow", slow)):
                    found[name].append(_check(candidate, base, folder / f"{name}-{k}.json", args.rounds))
        finally:
            for process in load:
                process.terminate()
        elapsed = time.monotonic() - started
    if args.save:
        Path(args.save).write_text(json.dumps({name: [c.rounds for c in checks] for name, checks in found.items()}))
    print(f"{args.runs} runs each on {os.cpu_count()} CPUs, {args.rounds or 5} training rounds a side, "
          f"{args.load} processes of bursty load beside them, "
          f"load average {os.getloadavg()[0]:.1f}, {elapsed / (2 * args.runs):.1f} s per check\n")
    failed = {name: sum(c.failed for c in checks) for name, checks in found.items()}
    fastest = {name: sum(c.fastest_failed for c in checks) for name, checks in found.items()}
    for name, what in (("same", "same model measured twice"), ("slow", "candidate ~1.5x slower per step")):
        ratios = [c.ratio for c in found[name]]
        print(f"{what:34} exit 1 in {failed[name]:>2}/{args.runs} (fastest round on the same rounds: "
              f"{fastest[name]:>2}); step-time ratio median {statistics.median(ratios):.3f} "
              f"(range {min(ratios):.3f}-{max(ratios):.3f})")
    for rule, counts in (("mean (the gate's)", failed), ("fastest round", fastest)):
        print(f"{rule:20} false-alarm rate {counts['same'] / args.runs:.0%} (target <= 5%); detection rate "
              f"{counts['slow'] / args.runs:.0%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load", type=int, default=0, help="processes of bursty CPU work beside the checks")
    parser.add_argument("--rounds", type=int, default=None, help="the gate's training_rounds (default: its own, 5)")
    parser.add_argument("--save", help="write each check's step times per round (baseline's, candidate's) to this JSON")
    main(parser.parse_args())
