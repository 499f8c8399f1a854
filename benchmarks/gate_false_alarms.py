"""How often ``frugalml check`` cries wolf, and how often it catches a real slow-down.

Tunes three small studies of a user's own SGD loop on diabetes whose steps carry a
set amount of CPU work: ``base`` and ``same`` (one configuration, tuned twice) and
``slow`` (its steps about 1.5x base's). Then runs the real CLI ``--runs`` times each:

* ``frugalml check same --baseline base``: the same model measured twice; every exit 1
  is a false alarm;
* ``frugalml check slow --baseline base``: a real regression; every exit 0 is a miss.

Default gate: step time re-measured in 5 interleaved rounds a side, each side's fastest
round compared with a 15 % tolerance (below 5 rounds, the rounds' mean with a 95 %
one-sided bootstrap bound). From the rounds each check reports (``--json``), both rules
are decided again on the same measurements, so they are scored on one run; ``--save``
keeps the rounds and ``--rescore`` scores saved rounds again, on their first 3 and 5
rounds a side (``--rescore-rounds``), running nothing. ``--load N`` runs N processes of
bursty CPU work beside the checks (busy 0.1-1x ``--burst`` seconds, idle 0.05-0.5x, at
random; default 2 s), as a busy CI runner or this repository's own test suite does.
Prints each rule's false alarms and catches, and the median step-time ratio each check saw.

Run: ``python benchmarks/gate_false_alarms.py [--runs 20] [--load 3] [--burst 2] [--rounds 5] [--save F]``
or ``python benchmarks/gate_false_alarms.py --rescore F [F ...]``
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


RULES = ("mean", "min")  # the rounds' mean with its bootstrap bound; each side's fastest round as it is
RULE_NAMES = {"mean": "the rounds' mean", "min": "fastest round"}


class Check(NamedTuple):
    failed: bool  # the CLI exited 1: a regression
    ratio: float  # the step-time ratio it printed
    rounds: list  # [baseline's, candidate's] step times, one per round


def _verdicts(rounds: list) -> dict[str, bool]:
    """Per rule, would the gate's default ``mean_step_ms`` tolerance call these rounds a regression?"""
    from frugalml.gate import GateSettings, decide

    settings = GateSettings()
    gate = next(g for g in settings.metrics if g.metric.name == "mean_step_ms")
    base, cand = ([[value] for value in side] for side in rounds)
    return {rule: decide(gate, base, cand, confidence=settings.confidence, resamples=settings.resamples,
                         seed=settings.seed, statistic=rule).status == "regression" for rule in RULES}


def _check(candidate: str, baseline: str, out: Path, rounds: int | None) -> Check:
    gate_file = []
    if rounds is not None:
        (out.parent / "gate.toml").write_text(f"[gate]\ntraining_rounds = {rounds}\n")
        gate_file = ["--gate", str(out.parent / "gate.toml")]
    done = subprocess.run([sys.executable, "-m", "frugalml.cli", "check", candidate, "--baseline", baseline,
                           "--json", str(out), *gate_file], capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, 1):
        raise SystemExit(f"check failed: {done.stderr.strip()}")
    step = next(m for m in json.loads(out.read_text())["metrics"] if m["metric"] == "mean_step_ms")
    if not all(step["rounds"]):
        raise SystemExit("the check did not re-measure step time (--rounds 0?): nothing to score")
    return Check(done.returncode == 1, step["ratio"], step["rounds"])


def _score(found: dict[str, list], label: str) -> None:
    """Each rule's false alarms (``same``) and catches (``slow``) on the same rounds, and the gate's own rule."""
    from frugalml.gate import step_time_statistic

    sizes = {len(side) for rounds in found["same"] + found["slow"] for side in rounds}
    gates = {step_time_statistic(n) for n in sizes}
    gate_rule = f"the gate's ({RULE_NAMES[next(iter(gates))]})" if len(gates) == 1 else "the gate's (mixed)"
    verdicts = {name: [(_verdicts(r), step_time_statistic(min(map(len, r)))) for r in rounds]
                for name, rounds in found.items()}  # the gate's rule is one of the two: decided once
    for rule in (*RULES, None):
        counts = {name: sum(by_rule[rule or gates_rule] for by_rule, gates_rule in checks)
                  for name, checks in verdicts.items()}
        print(f"{label:44} {gate_rule if rule is None else RULE_NAMES[rule]:28} false alarms "
              f"{counts['same']:>2}/{len(found['same'])}  caught {counts['slow']:>2}/{len(found['slow'])}")


def rescore(files: list[str], rounds: list[int]) -> None:
    """Score the rules again on saved rounds (``--save``), on each file's first ``rounds`` rounds a side."""
    for file in files:
        saved = json.loads(Path(file).read_text())
        runs = saved if "same" not in saved else {"": saved}  # a file of several saved runs, by name
        for name, found in runs.items():
            saved_rounds = min(len(side) for v in found.values() for r in v for side in r)
            for n in sorted({min(n, saved_rounds) for n in rounds}):
                cut = {k: [[side[:n] for side in r] for r in v] for k, v in found.items()}
                _score(cut, f"{Path(file).name}{':' + name if name else ''}, {n} rounds")


def _bursts(seed: int, burst_s: float) -> None:
    """CPU work in bursts, for ever: what other jobs on a shared runner look like to a short trial."""
    rng = random.Random(seed)
    while True:
        end = time.perf_counter() + rng.uniform(0.1 * burst_s, burst_s)
        while time.perf_counter() < end:
            pass
        time.sleep(rng.uniform(0.05 * burst_s, 0.5 * burst_s))


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("FRUGALML_DATA_DIR", str(REPO.parent / "shared" / "data"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TRAINERS), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(TRAINERS))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base, same, slow = (_study("base", 0.004, folder), _study("same", 0.004, folder),
                            _study("slow", 0.0075, folder))
        load = [multiprocessing.Process(target=_bursts, args=(seed, args.burst), daemon=True)
                for seed in range(args.load)]
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
          f"{args.load} processes of bursty load beside them (bursts up to {args.burst:g} s), "
          f"load average {os.getloadavg()[0]:.1f}, {elapsed / (2 * args.runs):.1f} s per check\n")
    for name, what in (("same", "same model measured twice"), ("slow", "candidate ~1.5x slower per step")):
        ratios = [c.ratio for c in found[name]]
        print(f"{what:34} exit 1 in {sum(c.failed for c in found[name]):>2}/{args.runs}; step-time ratio median "
              f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    _score({name: [c.rounds for c in checks] for name, checks in found.items()}, "on the same rounds")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load", type=int, default=0, help="processes of bursty CPU work beside the checks")
    parser.add_argument("--burst", type=float, default=2.0, help="with --load: the longest burst, seconds")
    parser.add_argument("--rounds", type=int, default=None, help="the gate's training_rounds (default: its own, 5)")
    parser.add_argument("--save", help="write each check's step times per round (baseline's, candidate's) to this JSON")
    parser.add_argument("--rescore", nargs="+", metavar="ROUNDS_JSON", help="score saved rounds again; run nothing")
    parser.add_argument("--rescore-rounds", default="3,5", help="with --rescore: the first N rounds a side, for each N")
    arguments = parser.parse_args()
    if arguments.runs < 1 or any(int(n) < 1 for n in arguments.rescore_rounds.split(",")):
        parser.error("--runs and each of --rescore-rounds must be at least 1")
    if arguments.rescore:
        rescore(arguments.rescore, [int(n) for n in arguments.rescore_rounds.split(",")])
    else:
        main(arguments)
