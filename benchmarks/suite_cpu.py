"""Where the test suite's CPU goes: CPU-seconds by kind of process while ``make test`` runs.

On a 2-core machine the suite is CPU-bound, so its wall time is about its CPU-seconds over the
cores; a shorter suite needs fewer CPU-seconds somewhere. The per-file timings pytest prints
cannot say where: most of the work runs in processes the tests start (CLIs, servers, trial
workers, Ray), and pytest counts a child's CPU only once it has reaped it.

This script runs the command and, every ``--interval`` seconds, reads each process on the
machine with psutil: its command line once, its own CPU time (user + system, children
excluded) at every sample. It prints the CPU-seconds each kind of process used, with the
machine's busy CPU-seconds over the same time (``psutil.cpu_times``) for scale. The
difference is what sampling cannot see: processes that lived less than one interval, the
kernel's own threads, and other users of the machine.

    python benchmarks/suite_cpu.py [--interval 1] [--json OUT] [-- COMMAND ...]

The default command is ``make -o install -o system-deps test`` in the repository root.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COMMAND = ["make", "-o", "install", "-o", "system-deps", "test"]

# (a substring of the command line, the kind); the first match wins
_KINDS = (
    ("exec(eval(", "pytest: xdist worker"),
    ("-m pytest", "pytest: main process"),
    ("multiprocessing.forkserver", "forkserver"),  # the trial workers it forks are told apart by their parent
    ("multiprocessing.resource_tracker", "multiprocessing resource tracker"),
    ("multiprocessing.spawn", "multiprocessing spawned child"),
    ("frugalml.serve._worker", "frugalml serve worker"),
    ("frugalml.deploy._probe", "frugalml serving-cost probe"),
    ("mlflow/utils/_capture_modules", "mlflow requirement inference"),
    ("gcs_server", "ray: gcs"),
    ("raylet/raylet", "ray: raylet"),  # before the workers: its command line names the workers' script
    ("default_worker.py", "ray: worker"),
    ("dashboard/agent.py", "ray: dashboard agent"),
    ("dashboard/dashboard.py", "ray: dashboard"),
    ("runtime_env/agent", "ray: runtime env agent"),
    ("log_monitor.py", "ray: log monitor"),
    ("autoscaler/_private/monitor.py", "ray: autoscaler monitor"),
    ("ray.util.client.server", "ray: client server"),
    ("bin/ray ", "ray: CLI"),
    ("chromium", "chromium"),
    ("prometheus", "prometheus"),
    ("schemathesis", "schemathesis"),
    ("pip install", "pip"),
)


@dataclass
class Seen:
    kind: str
    first_cpu_s: float  # at first sight: nonzero for a process that was running before the command
    last_cpu_s: float


def kind_of(cmdline: list[str], name: str, parent_kind: str | None) -> str:
    """What a process is, from its command line (and its parent's kind, for forked trial workers)."""
    text = " ".join(cmdline)
    for i, arg in enumerate(cmdline):
        if arg.endswith(("frugalml.cli", "/frugalml")) or (arg == "frugalml" and i and cmdline[i - 1] == "-m"):
            sub = next((a for a in cmdline[i + 1:] if not a.startswith("-")), "")
            return f"frugalml {sub}".strip()
    if text.startswith("ray::"):
        return "ray: worker"
    for needle, kind in _KINDS:
        if needle in text:
            if kind == "forkserver" and parent_kind == "forkserver":
                return "trial worker (forked from a forkserver)"
            return kind
    if not cmdline:
        return "kernel threads"
    program = Path(cmdline[0]).name
    if program.startswith("python") and len(cmdline) > 1:
        script = next((a for a in cmdline[1:] if not a.startswith("-")), "")
        return f"other python: {Path(script).name or ' '.join(cmdline[1:3])}"[:70]
    return program


class Sampler:
    """Every process's CPU time, by identity (pid, create time), as last seen."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, float], Seen] = {}
        self._kind_by_pid: dict[int, str] = {}
        self._first = True  # a process running before the command counts from its first sample
        self.own = psutil.Process()

    def sample(self) -> None:
        # only /proc/PID/stat at each sample; the command line (which locks the process's memory map
        # to read) once per process
        for process in psutil.process_iter(["create_time", "cpu_times"]):
            info = process.info
            times = info["cpu_times"]
            if times is None or info["create_time"] is None:
                continue
            cpu_s = times.user + times.system
            key = (process.pid, info["create_time"])
            if key in self.seen:
                self.seen[key].last_cpu_s = cpu_s
                continue
            try:
                cmdline, name, ppid = process.cmdline(), process.name(), process.ppid()
            except psutil.Error:  # gone, or a zombie
                cmdline, name, ppid = [], "", 0
            kind = "this sampler" if process.pid == self.own.pid else kind_of(cmdline, name, self._kind_by_pid.get(ppid))
            self._kind_by_pid[process.pid] = kind
            self.seen[key] = Seen(kind, cpu_s if self._first else 0.0, cpu_s)
        self._first = False

    def by_kind(self) -> dict[str, tuple[int, float]]:
        """Kind -> (processes, CPU-seconds used while sampled)."""
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        for seen in self.seen.values():
            used = seen.last_cpu_s - seen.first_cpu_s
            if used >= 0.01:  # not a process that slept through the run
                totals[seen.kind][0] += 1
                totals[seen.kind][1] += used
        return {kind: (int(n), cpu_s) for kind, (n, cpu_s) in totals.items()}


def _busy_cpu_s() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def run(command: list[str], interval: float) -> dict:
    sampler = Sampler()
    sampler.sample()
    busy, started = _busy_cpu_s(), time.monotonic()
    child = subprocess.Popen(command, cwd=REPO)
    while child.poll() is None:
        time.sleep(interval)
        sampler.sample()
    wall_s, busy_s = time.monotonic() - started, _busy_cpu_s() - busy
    kinds = sampler.by_kind()
    return {"command": command, "returncode": child.returncode, "wall_s": wall_s, "cores": psutil.cpu_count(),
            "busy_cpu_s": busy_s, "interval_s": interval,
            "kinds": {k: {"processes": n, "cpu_s": c} for k, (n, c) in sorted(kinds.items(), key=lambda kv: -kv[1][1])}}


def report(result: dict, top: int = 30) -> str:
    kinds = result["kinds"]
    sampled = sum(k["cpu_s"] for k in kinds.values())
    lines = [f"command: {' '.join(result['command'])} (exit {result['returncode']})",
             f"wall {result['wall_s']:.0f} s on {result['cores']} cores; machine busy {result['busy_cpu_s']:.0f} CPU-s "
             f"({result['busy_cpu_s'] / (result['wall_s'] * result['cores']):.0%} of the cores); "
             f"sampled every {result['interval_s']} s: {sampled:.0f} CPU-s in processes, "
             f"{result['busy_cpu_s'] - sampled:.0f} unseen (processes shorter than a sample, the kernel)",
             "",
             f"{'kind of process':48} {'processes':>9} {'CPU-s':>8} {'per process':>11} {'share':>6}"]
    for kind, k in list(kinds.items())[:top]:
        lines.append(f"{kind[:48]:48} {k['processes']:9d} {k['cpu_s']:8.1f} {k['cpu_s'] / k['processes']:11.2f} "
                     f"{k['cpu_s'] / sampled:6.1%}")
    rest = list(kinds.values())[top:]
    if rest:
        lines.append(f"{'(the other ' + str(len(rest)) + ' kinds)':48} {sum(k['processes'] for k in rest):9d} "
                     f"{sum(k['cpu_s'] for k in rest):8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("command", nargs="*", help="what to run (default: make -o install -o system-deps test)")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error(f"--interval must be > 0, got {args.interval}")
    result = run(args.command or DEFAULT_COMMAND, args.interval)
    print("\n" + report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result["returncode"]


if __name__ == "__main__":
    sys.exit(main())
