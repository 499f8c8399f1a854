"""Where the test suite's CPU goes: CPU-seconds by kind of process while ``make test`` runs.

On a 2-core machine the suite is CPU-bound, so its wall time is about its CPU-seconds over the
cores; a shorter suite needs fewer CPU-seconds somewhere. The per-file timings pytest prints
cannot say where: most of the work runs in processes the tests start (CLIs, servers, trial
workers, Ray), and pytest counts a child's CPU only once it has reaped it.

This script runs the command and, every ``--interval`` seconds, reads each process on the
machine with psutil: its command line once, its own CPU time (user + system, children
excluded) at every sample. It prints the CPU-seconds each kind of process used, with the
machine's busy CPU-seconds over the same time (``psutil.cpu_times``) for scale. The
difference is what sampling cannot see: processes that lived less than one interval, and what
each process used after its last sample (up to one interval each).

With ``--by-test N`` it also prints the N tests whose processes used the most CPU: a process
started by a test inherits pytest's ``PYTEST_CURRENT_TEST`` (read once, from its environment),
and a trial worker forked from a forkserver counts for the test that started that forkserver;
a study run in a pytest process itself forks its trials from that process's forkserver, whose
environment is the first such test's, so they count for one "in-process studies" row. Ray's
processes, and what its workers start, count for no test (they inherit the environment of
whatever started the cluster).

    python benchmarks/suite_cpu.py [--interval 1] [--json OUT] [--by-test N] [-- COMMAND ...]

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

from frugalml.monitors import machine_busy_cpu_s

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
    test: str | None = None  # the pytest node id that started it, if any


_FLAGS_WITH_VALUE = {"-W", "-X", "-Q"}  # interpreter options that take the next argument


def _program(cmdline: list[str]) -> tuple[str, list[str]]:
    """What a Python command line runs (``-m MODULE``, ``-c``, or a script path) and its arguments;
    the program itself and its arguments for anything else."""
    if not Path(cmdline[0]).name.startswith("python"):
        return cmdline[0], cmdline[1:]
    i = 1
    while i < len(cmdline) and cmdline[i].startswith("-") and cmdline[i] not in ("-m", "-c"):
        i += 2 if cmdline[i] in _FLAGS_WITH_VALUE else 1
    if i >= len(cmdline):
        return "python", []
    if cmdline[i] in ("-m", "-c") and i + 1 < len(cmdline):
        return f"{cmdline[i]} {cmdline[i + 1]}", cmdline[i + 2:]
    return cmdline[i], cmdline[i + 1:]


def kind_of(cmdline: list[str], parent_kind: str | None) -> str:
    """What a process is, from its (non-empty) command line, and its parent's kind for a forked trial worker."""
    program, args = _program(cmdline)
    if program in ("-m frugalml", "-m frugalml.cli") or program.endswith("/frugalml"):
        return f"frugalml {next((a for a in args if not a.startswith('-')), '')}".strip()
    text = " ".join(cmdline)
    if text.startswith("ray::"):
        return "ray: worker"
    for needle, kind in _KINDS:
        if needle in text:
            if kind == "forkserver" and parent_kind == "forkserver":
                return "trial worker (forked from a forkserver)"
            return kind
    if program.startswith("-c "):
        return "other python: -c " + program[3:].strip().splitlines()[0][:40]
    if program.startswith("-m "):
        return f"other python: {program}"[:70]
    return f"{'other python' if program.endswith('.py') else 'other'}: {Path(program).name}"


class Sampler:
    """Every process's CPU time, by identity (pid, create time), as last seen."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, float], Seen] = {}
        self._by_pid: dict[int, tuple[float, str, int]] = {}  # pid -> (create time, kind, parent's pid) of the last
        # process seen with it
        self._first = True  # a process running before the command counts from its first sample
        self.own = psutil.Process()

    def sample(self) -> None:
        # only /proc/PID/stat at each sample; the command line (which locks the process's memory map
        # to read) once per process
        new = []
        for process in psutil.process_iter(["create_time", "cpu_times"]):
            info = process.info
            times = info["cpu_times"]
            if times is None or info["create_time"] is None:
                continue
            cpu_s = times.user + times.system
            key = (process.pid, info["create_time"])
            if key in self.seen:
                self.seen[key].last_cpu_s = cpu_s
            else:
                new.append((key, process, cpu_s))
        for key, process, cpu_s in sorted(new, key=lambda n: n[0][1]):  # parents first, pids wrapped or not
            ppid = _read(process.ppid, -1)
            kind = self._kind(process, key[1], ppid)
            self._by_pid[process.pid] = (key[1], kind, ppid)
            self.seen[key] = Seen(kind, cpu_s if self._first else 0.0, cpu_s, self._test(process, kind))
        self._first = False

    def _kind(self, process: psutil.Process, created: float, ppid: int) -> str:
        if process.pid == self.own.pid:
            return "this sampler"
        if process.pid == 2 or ppid == 2:  # kthreadd and its children
            return "kernel threads"
        cmdline = _read(process.cmdline, [])
        if not cmdline:  # a zombie, or gone before it was read
            return f"exited before read: {_read(process.name, '') or '?'}"
        parent_created, parent_kind, _ = self._by_pid.get(ppid, (None, None, None))
        return kind_of(cmdline, parent_kind if parent_created is not None and parent_created <= created else None)

    def _test(self, process: psutil.Process, kind: str) -> str | None:
        ancestors = self._ancestors(process.pid)
        if kind.startswith(("pytest:", "ray:", "this sampler")) or any(k.startswith("ray:") for k in ancestors):
            return None  # Ray's workers and what they start inherit the environment of whoever started the cluster
        test = _read(process.environ, {}).get("PYTEST_CURRENT_TEST")
        if test is None:
            return None
        test = test.rsplit(" (", 1)[0]  # "(setup)", "(call)", "(teardown)"
        # a forkserver, or a trial forked from one, started by a pytest process: that forkserver's environment
        owner = ancestors[1:2] if kind.startswith("trial worker") else ancestors[:1] if kind == "forkserver" else []
        if owner and owner[0].startswith("pytest:"):
            return "in-process studies (a forkserver of a pytest process)"
        return test

    def _ancestors(self, pid: int) -> list[str]:
        """The kinds of ``pid``'s parent, grandparent, ..., as far as they were seen (each started before its child)."""
        kinds: list[str] = []
        created, _, pid = self._by_pid[pid]
        while pid in self._by_pid and self._by_pid[pid][0] <= created:
            created, kind, pid = self._by_pid[pid]
            kinds.append(kind)
            if len(kinds) > 50:
                break
        return kinds

    def by_test(self) -> dict[str, dict]:
        """Test -> processes, CPU-seconds and the kinds that used the most, the most CPU first."""
        return self._totals(lambda seen: seen.test, with_kinds=True)

    def by_kind(self) -> dict[str, dict]:
        """Kind -> processes and CPU-seconds used while sampled, the most CPU first."""
        return self._totals(lambda seen: seen.kind)

    def _totals(self, group, with_kinds: bool = False) -> dict[str, dict]:
        totals: dict[str, dict] = defaultdict(lambda: {"processes": 0, "cpu_s": 0.0, "kinds": defaultdict(float)})
        for seen in self.seen.values():
            used, name = seen.last_cpu_s - seen.first_cpu_s, group(seen)
            if name is not None and used >= 0.01:  # not a process that slept through the run
                totals[name]["processes"] += 1
                totals[name]["cpu_s"] += used
                totals[name]["kinds"][seen.kind] += used
        return {name: {"processes": t["processes"], "cpu_s": t["cpu_s"],
                       **({"kinds": dict(sorted(t["kinds"].items(), key=lambda kv: -kv[1]))} if with_kinds else {})}
                for name, t in sorted(totals.items(), key=lambda kv: -kv[1]["cpu_s"])}


def _read(method, default):
    try:
        return method()
    except psutil.Error:
        return default


def run(command: list[str], interval: float) -> dict:
    sampler = Sampler()
    sampler.sample()
    busy, started = machine_busy_cpu_s(), time.monotonic()
    child = subprocess.Popen(command, cwd=REPO)
    while child.poll() is None:
        time.sleep(interval)
        sampler.sample()
    wall_s, busy_s = time.monotonic() - started, machine_busy_cpu_s() - busy
    return {"command": command, "returncode": child.returncode, "wall_s": wall_s, "cores": psutil.cpu_count() or 1,
            "busy_cpu_s": busy_s, "interval_s": interval,
            "kinds": sampler.by_kind(), "tests": sampler.by_test()}


def report(result: dict, top: int = 30) -> str:
    kinds = result["kinds"]
    sampled = sum(k["cpu_s"] for k in kinds.values())
    lines = [f"command: {' '.join(result['command'])} (exit {result['returncode']})",
             f"wall {result['wall_s']:.0f} s on {result['cores']} cores; machine busy {result['busy_cpu_s']:.0f} CPU-s "
             f"({result['busy_cpu_s'] / (result['wall_s'] * result['cores']):.0%} of the cores); "
             f"sampled every {result['interval_s']} s: {sampled:.0f} CPU-s in processes, "
             f"{result['busy_cpu_s'] - sampled:.0f} unseen (processes shorter than a sample, the last interval of each)",
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


def report_tests(result: dict, top: int) -> str:
    tests = result.get("tests", {})
    lines = [f"the {top} tests whose processes used the most CPU (of {sum(t['cpu_s'] for t in tests.values()):.0f} "
             f"CPU-s in processes started by tests)", f"{'CPU-s':>7} {'procs':>5}  test: its costliest kinds"]
    for test, t in list(tests.items())[:top]:
        kinds = ", ".join(f"{kind} {cpu_s:.0f}" for kind, cpu_s in list(t["kinds"].items())[:3])
        lines.append(f"{t['cpu_s']:7.1f} {t['processes']:5d}  {test}: {kinds}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--by-test", type=int, default=0, metavar="N",
                        help="also print the N tests whose processes used the most CPU")
    parser.add_argument("command", nargs="*", help="what to run (default: make -o install -o system-deps test)")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error(f"--interval must be > 0, got {args.interval}")
    result = run(args.command or DEFAULT_COMMAND, args.interval)
    if args.json:  # first: a long run's figures outlive a failure in printing them
        args.json.write_text(json.dumps(result, indent=2))
    print("\n" + report(result))
    if args.by_test:
        print("\n" + report_tests(result, args.by_test))
    return result["returncode"]


if __name__ == "__main__":
    sys.exit(main())
