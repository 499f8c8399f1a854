"""Prediction latency with monitoring on and off, side by side, on loopback.

Starts ``frugalml serve`` twice on 127.0.0.1 with the same model (a diabetes
logistic regression fitted as ``frugalml register`` fits it): once with the
default monitoring (drift windows of 500 rows, PSI + KS per feature, two alert
rules, request metrics) and once with ``enabled = false``. A separate driver
process sends single-row ``POST /predict`` requests over keep-alive connections:

1. closed loop (``--concurrency`` requests in flight) for ``--probe-s`` seconds
   per server: the maximum throughput;
2. open-loop capacity: the server is one Python process, so it saturates at one
   CPU-second per second; at half the closed-loop rate its CPU seconds per request
   are measured and capacity = 1 / that (the closed loop batches requests per
   event-loop turn and overstates what one-at-a-time traffic can get);
3. open loop at 80% of the lower of the two capacities, ``--rounds`` rounds of
   ``--phase-s`` seconds per server, interleaved (off, on, on, off, ...) so drift in
   machine load hits both alike; the server's CPU seconds per request are read
   from the OS, a measure of monitoring's cost that a busy machine barely blurs.
   Latency is measured from each request's scheduled send time, so a stalled
   server is not hidden by the client waiting for it (no coordinated omission).

Prints throughput and p50/p99 side by side and the p99 ratio (target < 1.10).

Run: ``python benchmarks/serve_load.py [--probe-s 5] [--phase-s 6] [--rounds 4] [--concurrency 8]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _load import add_drive_parser, drive, free_port

MONITORING_ON = """
window_rows = 500
[[alerts]]
name = "input drift"
metric = "drift.detected"
threshold = 1
window = 2
[[alerts]]
name = "slow"
metric = "latency.p99_ms"
threshold = 250
for_s = 30
"""
MONITORING_OFF = "enabled = false\n"


# -- the orchestrator (the load generator is benchmarks/_load.py, in its own process) ---------


def _prepare(folder: Path) -> tuple[Path, Path]:
    from frugalml.registry import build_reference, fit_model, raw_split
    from frugalml.serve import save_model
    from frugalml.workloads import prepare_dataset, resolve_dataset

    data = prepare_dataset(resolve_dataset("diabetes"), seed=0)
    split = raw_split(data)
    model = fit_model(data, "logistic_regression", {"batch_size": 32, "learning_rate": 0.01})
    model_dir = save_model(model, build_reference(model, data, split), folder / "model")
    bodies = [json.dumps({"instances": [row.tolist()]}) for row in split.X_test]
    (folder / "bodies.json").write_text(json.dumps(bodies))
    return model_dir, folder / "bodies.json"


class _Server:
    def __init__(self, model_dir: Path, config: Path, log: Path) -> None:
        import httpx

        self.port = free_port()
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "frugalml.cli", "serve", str(model_dir), "--port", str(self.port),
             "--config", str(config), "--log-level", "warning"], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited: {log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit("server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)
        self._log.close()


def _drive(port: int, bodies: Path, seconds: float, concurrency: int, rate: float | None = None) -> dict:
    command = [sys.executable, __file__, "drive", "--port", str(port), "--bodies", str(bodies),
               "--seconds", str(seconds), "--concurrency", str(concurrency)]
    if rate:
        command += ["--rate", str(rate)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 4 + 60)
    if out.returncode != 0:
        raise SystemExit(f"driver failed: {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout)
    if result["ok"] != result["sent"]:
        raise SystemExit(f"driver failed: {result['sent'] - result['ok']} of {result['sent']} requests not answered 200")
    if rate:
        result["requests"] = result["sent"]
    return result


def _phase(server: _Server, bodies: Path, seconds: float, concurrency: int, rate: float | None = None) -> dict:
    """One driver run, plus the server's CPU seconds per request over it."""
    import psutil

    process = psutil.Process(server.process.pid)
    before = sum(process.cpu_times()[:2])
    result = _drive(server.port, bodies, seconds, concurrency, rate)
    requests = result.get("requests") or result["throughput_rps"] * seconds
    result["server_cpu_ms_per_request"] = (sum(process.cpu_times()[:2]) - before) / requests * 1e3
    return result


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir, bodies = _prepare(folder)
        (folder / "on.toml").write_text(MONITORING_ON)
        (folder / "off.toml").write_text(MONITORING_OFF)
        servers = {mode: _Server(model_dir, folder / f"{mode}.toml", folder / f"{mode}.log") for mode in ("on", "off")}
        try:
            for mode in ("off", "on"):
                _drive(servers[mode].port, bodies, 2, args.concurrency)  # warm-up
            probes: dict[str, list[float]] = {"on": [], "off": []}
            for mode in ("off", "on", "on", "off"):
                probes[mode].append(_drive(servers[mode].port, bodies, args.probe_s, args.concurrency)["throughput_rps"])
            maxima = {mode: max(found) for mode, found in probes.items()}
            # The closed loop batches requests per event-loop turn, so its maximum overstates what an
            # open loop can sustain: one request at a time costs more CPU. The server is one Python
            # process (one GIL): its open-loop capacity is one CPU-second / CPU-seconds per request,
            # measured at half the closed-loop rate. The comparison runs at 80% of the lower capacity.
            half = 0.5 * min(min(found) for found in probes.values())
            capacity = {mode: 1000.0 / _phase(servers[mode], bodies, args.probe_s, args.concurrency, half)
                        ["server_cpu_ms_per_request"] for mode in ("off", "on")}
            rate = 0.8 * min(capacity.values())
            rounds: dict[str, list[dict]] = {"on": [], "off": []}
            order = [mode for k in range(args.rounds) for mode in (("off", "on") if k % 2 == 0 else ("on", "off"))]
            for mode in order:
                rounds[mode].append(_phase(servers[mode], bodies, args.phase_s, args.concurrency, rate))
        finally:
            for server in servers.values():
                server.stop()
    _report(args, maxima, capacity, rate, rounds)


def _report(args: argparse.Namespace, maxima: dict[str, float], capacity: dict[str, float], rate: float,
            rounds: dict[str, list[dict]]) -> None:
    median = {mode: {key: float(np.median([r[key] for r in results])) for key in results[0]}
              for mode, results in rounds.items()}
    print(f"single-row POST /predict on 127.0.0.1, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; open loop at 80% of the lower open-loop capacity = {rate:.0f} req/s; "
          f"{args.rounds} rounds of {args.phase_s:g} s per mode, interleaved; medians over rounds\n")
    print(f"{'':32}{'monitoring off':>16}{'monitoring on':>16}")
    print(f"{'closed-loop max (req/s)':32}{maxima['off']:>16.0f}{maxima['on']:>16.0f}")
    print(f"{'open-loop capacity (req/s)':32}{capacity['off']:>16.0f}{capacity['on']:>16.0f}")
    for key, label in (("achieved_rps", "achieved at 80% (req/s)"), ("p50_ms", "p50 latency (ms)"),
                       ("p99_ms", "p99 latency (ms)"), ("server_cpu_ms_per_request", "server CPU per request (ms)")):
        print(f"{label:32}{median['off'][key]:>16.3f}{median['on'][key]:>16.3f}")
    for mode in ("off", "on"):
        print(f"  p99 per round, {mode:>3} (ms): " + ", ".join(f"{r['p99_ms']:.2f}" for r in rounds[mode]))
    ratio = median["on"]["p99_ms"] / median["off"]["p99_ms"]
    cpu = median["on"]["server_cpu_ms_per_request"] / median["off"]["server_cpu_ms_per_request"]
    print(f"\np99 ratio on/off: {ratio:.3f} (target < 1.10: {'met' if ratio < 1.10 else 'NOT met'}); "
          f"server CPU per request ratio: {cpu:.3f}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_drive_parser(parser.add_subparsers(dest="command"))
    parser.add_argument("--probe-s", type=float, default=5.0, help="closed-loop seconds per probe")
    parser.add_argument("--phase-s", type=float, default=6.0, help="open-loop seconds per round and mode")
    parser.add_argument("--rounds", type=int, default=4, help="open-loop rounds per mode")
    parser.add_argument("--concurrency", type=int, default=8)
    return parser


if __name__ == "__main__":
    arguments = _parser().parse_args()
    drive(arguments, connections_per_client=2) if arguments.command == "drive" else main(arguments)
