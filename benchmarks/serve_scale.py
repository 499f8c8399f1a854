"""Throughput and p99 of ``frugalml serve`` with 1 and 2 worker processes (and 2 Ray Serve replicas), and
what one monitoring state costs; and what adaptive batching saves.

Starts three servers on 127.0.0.1 with the same CPU-bound model (a 50-tree random forest on
diabetes, ~2.5 ms of CPU per single-row ``predict_proba``) and the same monitoring (drift
windows of 500 rows, two alert rules, label-free accuracy estimates):

- ``single``: ``frugalml serve`` as before, one process;
- ``w1`` / ``w2``: ``frugalml serve --workers 1`` / ``--workers 2`` (workers + the monitor process);
- ``batch0`` / ``batch2``: ``single`` with ``--max-batch-size 32`` and ``--max-batch-wait-ms 0`` / ``2``
  (adaptive batching: concurrent requests share one model call); ``batch1``, ``--max-batch-size 1``,
  is the control: the model called off the event loop as batching does, one request a call;
- ``ray2`` (when Ray Serve is installed; ``--no-ray`` leaves it out): ``frugalml serve --backend ray
  --replicas 2`` on a two-node Ray cluster started on loopback for the run (one CPU per node, so one
  replica per node; the proxy not preferring its own node's replica). Its CPU is that of the whole
  cluster (raylets, GCS, Serve controller and proxy, the replicas, the hub actor) net of its idle CPU.

A separate load-generator process (asyncio, raw HTTP/1.1 over kept-alive connections) sends
single-row ``POST /predict`` requests:

1. closed loop (``--concurrency`` in flight) for ``--probe-s`` s: the maximum throughput;
2. open loop at rising rates (a share of ``w2``'s closed-loop maximum), ``--phase-s`` s each,
   latency from each request's scheduled send time (no coordinated omission): the highest rate
   each server sustains with p99 under ``--p99-ms`` is its *throughput at equal p99*, and
   ``scale ratio`` = that of ``w2`` / that of ``w1``;
3. the server process tree's CPU per request (``single`` vs ``w1`` at one rate: the per-request
   cost of shipping rows and counters to the monitor process; every server at every rate, where
   batching saves more the more requests arrive together) and the generator's own CPU.

Last, each server's ``/metrics`` must count exactly the ``/predict`` requests and rows the
generator sent (and says how many rows each model call had). Run it as others share the machine:
``nice -n 19 python benchmarks/serve_scale.py``; ``--servers single,batch0,batch2`` runs only those.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import add_drive_parser, drive, free_port

MONITORING = """
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
SERVERS = {"single": (), "w1": ("--workers", "1"), "w2": ("--workers", "2"),
           "batch1": ("--max-batch-size", "1"),
           "batch0": ("--max-batch-size", "32", "--max-batch-wait-ms", "0"),
           "batch2": ("--max-batch-size", "32", "--max-batch-wait-ms", "2")}
RATE_SHARES = (0.3, 0.5, 0.65, 0.8, 0.9, 1.0, 1.1)


# -- the orchestrator --------------------------------------------------------------------


def _prepare(folder: Path, trees: int) -> tuple[Path, Path, float]:
    from sklearn.ensemble import RandomForestClassifier

    from frugalml.registry import build_reference, raw_split
    from frugalml.serve import save_model
    from frugalml.workloads import prepare_dataset, resolve_dataset

    data = prepare_dataset(resolve_dataset("diabetes"), seed=0)
    split = raw_split(data)
    model = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=1).fit(split.X_train, split.y_train)
    start = time.process_time()
    for row in split.X_test[:100]:
        model.predict_proba(row[None, :])
    predict_ms = (time.process_time() - start) * 10
    model_dir = save_model(model, build_reference(model, data, split), folder / "model")
    bodies = [json.dumps({"instances": [row.tolist()]}) for row in split.X_test]
    (folder / "bodies.json").write_text(json.dumps(bodies))
    return model_dir, folder / "bodies.json", predict_ms


@contextlib.contextmanager
def _ray_cluster(folder: Path):
    """Two one-CPU Ray nodes on 127.0.0.1 for the ``ray2`` arm; yields (address, tag naming its processes).
    Stopped by killing exactly its processes (``ray stop`` would stop every Ray of this user)."""
    import psutil

    temp_dir = Path(tempfile.mkdtemp(prefix="frugalml-bench-", dir="/tmp"))  # short: Ray's socket paths
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    node = [str(Path(sys.executable).parent / "ray"), "start", "--num-cpus=1", "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    try:
        for extra in (["--head", f"--port={address.rpartition(':')[2]}", "--include-dashboard=false"],
                      [f"--address={address}"]):
            subprocess.run(node + extra, env=env, check=True, capture_output=True, timeout=180)
        yield address, str(temp_dir)
    finally:
        for process in _tagged(str(temp_dir)):
            with contextlib.suppress(psutil.Error):
                process.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _tagged(tag: str) -> list:
    """Processes whose command line names ``tag``, with their descendants."""
    import psutil

    found = {}
    for process in psutil.process_iter(["cmdline"]):
        if any(tag in arg for arg in process.info["cmdline"] or ()):
            with contextlib.suppress(psutil.Error):
                found.update({p.pid: p for p in (process, *process.children(recursive=True))})
    return list(found.values())


class _Server:
    def __init__(self, model_dir: Path, config: Path, log: Path, extra: tuple[str, ...], cluster: str = "") -> None:
        import httpx

        self.cluster = cluster  # the tag of a Ray cluster's processes, counted as the server's

        self.port = free_port()
        self._log = log.open("w")
        self.log_path = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "frugalml.cli", "serve", str(model_dir), "--port", str(self.port),
             "--config", str(config), "--log-level", "warning", *extra], stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30, trust_env=False)
        self.idle_cpu_s_per_s = 0.0
        deadline = time.monotonic() + 180
        while "frugalml: serving" not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {log.read_text()}")
            time.sleep(0.2)

    def measure_idle(self, seconds: float) -> None:
        """CPU seconds per second the server tree spends with no traffic (timers, polling)."""
        before = self.cpu_s()
        time.sleep(seconds)
        self.idle_cpu_s_per_s = (self.cpu_s() - before) / seconds

    def cpu_s(self) -> float:
        """CPU seconds of the server's process tree (parent, workers)."""
        import psutil

        total = 0.0
        root = psutil.Process(self.process.pid)
        processes = {p.pid: p for p in (root, *root.children(recursive=True), *(
            _tagged(self.cluster) if self.cluster else ()))}
        for process in processes.values():
            try:
                total += sum(process.cpu_times()[:2])
            except psutil.Error:
                pass
        return total

    def counted(self) -> tuple[float, float, float]:
        """(/predict requests answered 200, rows predicted, model calls) as /metrics reports them."""
        from prometheus_client.parser import text_string_to_metric_families

        requests = rows = calls = 0.0
        for family in text_string_to_metric_families(self.client.get("/metrics").text):
            for sample in family.samples:
                if sample.name == "frugalml_requests_total" and sample.labels == {"endpoint": "/predict", "code": "200"}:
                    requests += sample.value
                elif sample.name == "frugalml_predicted_class_total":
                    rows += sample.value
                elif sample.name == "frugalml_model_calls_total":
                    calls += sample.value
        return requests, rows, calls

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


def _drive(server: _Server, bodies: Path, seconds: float, concurrency: int, rate: float | None = None) -> dict:
    """One generator run; adds the server tree's and the generator's CPU ms per request."""
    command = [sys.executable, __file__, "drive", "--port", str(server.port), "--bodies", str(bodies),
               "--seconds", str(seconds), "--concurrency", str(concurrency)]
    if rate:
        command += ["--rate", str(rate)]
    before_server = server.cpu_s()
    before_generator = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 4 + 60)
    wall = time.perf_counter() - started
    after_generator = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"generator failed: {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout)
    generator = (after_generator.ru_utime + after_generator.ru_stime) - (before_generator.ru_utime
                                                                         + before_generator.ru_stime)
    busy = server.cpu_s() - before_server - server.idle_cpu_s_per_s * wall  # net of what it burns idle
    result["server_cpu_ms_per_request"] = busy / max(1, result["sent"]) * 1e3
    result["generator_cpu_percent"] = 100 * generator / wall
    return result


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        model_dir, bodies, predict_ms = _prepare(folder, args.trees)
        (folder / "monitoring.toml").write_text(MONITORING)
        servers = {name: _Server(model_dir, folder / "monitoring.toml", folder / f"{name}.log", SERVERS[name])
                   for name in args.servers}
        if args.ray and "w2" in servers and importlib.util.find_spec("ray") is not None:
            address, tag = stack.enter_context(_ray_cluster(folder))
            servers["ray2"] = _Server(model_dir, folder / "monitoring.toml", folder / "ray2.log",
                                      ("--backend", "ray", "--address", address, "--replicas", "2"), cluster=tag)
        sent = {name: [0, 0] for name in servers}  # requests sent, 200s
        results: dict[str, dict] = {name: {"ladder": []} for name in servers}

        def run(name: str, seconds: float, rate: float | None = None) -> dict:
            result = _drive(servers[name], bodies, seconds, args.concurrency, rate)
            sent[name][0] += result["sent"]
            sent[name][1] += result["ok"]
            return result

        try:
            for name in servers:
                run(name, 2)  # warm-up
            for server in servers.values():
                server.measure_idle(args.idle_s)
            for name in servers:
                results[name]["closed"] = run(name, args.probe_s)
            top = max(results[name]["closed"]["throughput_rps"] for name in servers if name != "ray2") \
                if "w2" not in servers else results["w2"]["closed"]["throughput_rps"]
            for share in args.rate_shares:  # interleaved, so drifting machine load hits every server alike
                for name in servers:
                    results[name]["ladder"].append(run(name, args.phase_s, share * top))
            for name, server in servers.items():
                results[name]["idle"] = server.idle_cpu_s_per_s
            time.sleep(1.0)
            counted = {name: server.counted() for name, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
    _report(args, predict_ms, results, sent, counted)


def _report(args: argparse.Namespace, predict_ms: float, results: dict, sent: dict, counted: dict) -> None:
    names = list(results)
    print(f"single-row POST /predict on 127.0.0.1; {os.cpu_count()} CPUs shared with other work, run at "
          f"nice {os.nice(0)}; load average {os.getloadavg()[0]:.1f}")
    print(f"model: {args.trees}-tree random forest, {predict_ms:.2f} ms CPU per single-row predict_proba\n")
    print(f"{'':40}" + "".join(f"{n:>12}" for n in names))
    print(f"{'closed-loop max (req/s)':40}" + "".join(f"{results[n]['closed']['throughput_rps']:>12.0f}" for n in names))
    print(f"{'  generator CPU (% of a core)':40}"
          + "".join(f"{results[n]['closed']['generator_cpu_percent']:>12.1f}" for n in names))
    for k in range(len(args.rate_shares)):
        rate = results[names[0]]["ladder"][k]["offered_rps"]
        print(f"open loop {rate:6.0f} req/s: p99 ms (p50)" + "".join(
            f"{results[n]['ladder'][k]['p99_ms']:>6.1f} ({results[n]['ladder'][k]['p50_ms']:3.1f})" for n in names))
    for k in range(len(args.rate_shares)):
        rate = results[names[0]]["ladder"][k]["offered_rps"]
        print(f"{f'open loop {rate:6.0f} req/s: CPU ms/request':40}" + "".join(
            f"{results[n]['ladder'][k]['server_cpu_ms_per_request']:>12.2f}" for n in names))
    first = results[names[0]]["ladder"][0]
    cpu = {n: results[n]["ladder"][0]["server_cpu_ms_per_request"] for n in names}
    print(f"\nserver CPU per request at {first['offered_rps']:.0f} req/s (ms, whole process tree): "
          + ", ".join(f"{n} {cpu[n]:.2f}" for n in names)
          + (f"; w1 - single = {cpu['w1'] - cpu['single']:+.3f} ms" if {"w1", "single"} <= set(cpu) else "")
          + (f", ray2 - w2 = {cpu['ray2'] - cpu['w2']:+.3f} ms" if "ray2" in cpu else ""))
    print("idle CPU of each server tree (% of a core): " + ", ".join(
        f"{n} {100 * results[n]['idle']:.1f}" for n in names) + " (subtracted above)")
    print(f"generator CPU in open loop: up to {max(r['generator_cpu_percent'] for n in names for r in results[n]['ladder']):.1f}"
          "% of a core")
    at_p99 = {n: max((r["achieved_rps"] for r in results[n]["ladder"] if r["p99_ms"] <= args.p99_ms), default=0.0)
              for n in names}
    print(f"throughput at p99 <= {args.p99_ms:g} ms (req/s): " + ", ".join(f"{n} {at_p99[n]:.0f}" for n in names))
    for name in (n for n in names if n.startswith("batch") and "single" in names):
        print(f"{name} / single: {at_p99[name] / at_p99['single'] if at_p99['single'] else float('nan'):.2f} at "
              f"equal p99, {results[name]['closed']['throughput_rps'] / results['single']['closed']['throughput_rps']:.2f}"
              " closed-loop")
    if {"w1", "w2"} <= set(names):
        closed = results["w2"]["closed"]["throughput_rps"] / results["w1"]["closed"]["throughput_rps"]
        ratio = at_p99["w2"] / at_p99["w1"] if at_p99["w1"] else float("nan")
        print(f"scale ratio w2 / w1: {ratio:.2f} at equal p99, {closed:.2f} closed-loop (target >= 1.6)")
    if "ray2" in names:
        print(f"ray2 / w2: {at_p99['ray2'] / at_p99['w2'] if at_p99['w2'] else float('nan'):.2f} at equal p99, "
              f"{results['ray2']['closed']['throughput_rps'] / results['w2']['closed']['throughput_rps']:.2f} "
              "closed-loop")
    for name in names:
        requests, rows, calls = counted[name]
        exact = requests == sent[name][1] and rows == sent[name][1]
        print(f"/metrics of {name}: {requests:.0f} /predict 200s and {rows:.0f} rows in {calls:.0f} model calls "
              f"({rows / max(calls, 1):.2f} rows a call); the generator got {sent[name][1]} 200s of "
              f"{sent[name][0]} sent: {'exact' if exact else 'NOT exact'}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_drive_parser(parser.add_subparsers(dest="command"))
    parser.add_argument("--trees", type=int, default=50, help="trees of the random forest (its CPU per request)")
    parser.add_argument("--probe-s", type=float, default=5.0, help="closed-loop seconds per server")
    parser.add_argument("--phase-s", type=float, default=5.0, help="open-loop seconds per rate and server")
    parser.add_argument("--idle-s", type=float, default=5.0, help="seconds to measure each server's idle CPU")
    parser.add_argument("--p99-ms", type=float, default=50.0, help="the p99 at which throughputs are compared")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate-shares", type=lambda text: [float(v) for v in text.split(",")], default=RATE_SHARES,
                        help="the open-loop rates, as shares of the top closed-loop maximum (that of w2 when run); "
                             "batching arms want low shares too (e.g. 0.1,0.2,0.3,0.45,0.6,0.8,1.0)")
    parser.add_argument("--servers", type=lambda text: text.split(","), default=list(SERVERS),
                        help=f"comma-separated arms to run, from {', '.join(SERVERS)} (default: all)")
    parser.add_argument("--no-ray", dest="ray", action="store_false",
                        help="leave out the ray2 arm (2 Ray Serve replicas on a loopback cluster)")
    return parser


if __name__ == "__main__":
    arguments = _parser().parse_args()
    drive(arguments, connections_per_client=4) if arguments.command == "drive" else main(arguments)
