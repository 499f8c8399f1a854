"""Throughput and p99 of ``frugalml serve`` with 1 and 2 worker processes (and 2 Ray Serve replicas), and
what one monitoring state costs; and what adaptive batching saves.

Starts the servers on 127.0.0.1 with the same CPU-bound model (a 50-tree random forest on diabetes
from ``shared/data``, ~2.5 ms of CPU per single-row ``predict_proba``) and the same monitoring (drift
windows of 500 rows, two alert rules, label-free accuracy estimates):

- ``single``: ``frugalml serve`` as before, one process;
- ``w1`` / ``w2``: ``frugalml serve --workers 1`` / ``--workers 2`` (workers + the monitor process);
- ``batch0`` / ``batch2``: ``single`` with ``--max-batch-size 32`` and ``--max-batch-wait-ms 0`` / ``2``
  (adaptive batching: concurrent requests share one model call); ``batch1``, ``--max-batch-size 1``,
  is the control: the model called off the event loop as batching does, one request a call;
- ``ray2`` (when Ray Serve is installed and ``w2`` runs; ``--no-ray`` leaves it out): ``frugalml serve
  --backend ray --replicas 2`` on a two-node Ray cluster started on loopback for the run (one CPU per
  node, so one replica per node; the proxy not preferring its own node's replica). Its CPU is that of
  the whole cluster (raylets, GCS, Serve controller and proxy, the replicas, the hub actor).

The load generator (``--generator``) is ``wrk`` (Debian's package, C and one epoll thread: light
enough not to be the bottleneck; the default when it is installed) or ``python`` (an asyncio process,
``benchmarks/_load.py``). Both send single-row ``POST /predict`` requests over kept-alive connections:

1. closed loop (``--concurrency`` connections) for ``--probe-s`` s: the maximum throughput;
2. open loop at rising rates, ``--phase-s`` s each, servers interleaved (ABBA) so drifting machine load hits
   all alike. ``--ladder own`` takes each server's rates as shares of its own closed-loop maximum (fine
   steps near each knee: what the w1 / w2 comparison wants); ``--ladder shared`` (the default) takes
   the same rates for all, shares of ``w2``'s maximum (else of the highest), to compare CPU per request
   at equal rates. The highest rate a server holds with p99 <= ``--p99-ms`` (every request answered
   2xx) is its *throughput at equal p99*, and ``scale ratio`` = that of ``w2`` / that of ``w1``.

How ``wrk`` makes an open loop: Debian has plain ``wrk`` (no ``wrk2``), so a Lua script paces it.
Request k of a run is due at ``start + k / rate``; each connection, when idle, claims the next due
request in ``delay()`` and sends it at its due time (``--connections``, default 128, one wrk thread).
wrk times each request from its send, not from its due time; so the script also takes the lateness of
each send (the k-th request sent against the k-th due time, to ~1 ms: late when every connection was
busy, or when wrk's timer fired late). wrk cannot pair a latency with its lateness, so a step's
``p99 bound`` is an upper bound on the p99 from due times: for any split t + u = 1% of the tail,
P(latency + lateness > latency's (1 - t) quantile + lateness's (1 - u) quantile) <= 1%; the script
takes the best of 101 splits. With no request sent late it is the plain p99; it is the figure compared.
The script stops sending at the end of the step and waits 1 s, so nothing is in flight when wrk
stops; it counts each request it writes (``request()``) and each answer by HTTP status and by
answering worker (``X-Frugalml-Worker``: each kept-alive connection stays on the worker the kernel's
``SO_REUSEPORT`` hash gave it, and each connection carries the same share of an open loop, so the
split of connections is the split of load), and prints it all as JSON from ``done()``.

For every run the script reads the CPU of each process group: the server's workers (its process
tree below the parent), the parent (the monitor process; the whole server for ``single``), the load
generator (``getrusage`` of the waited child), this orchestrator, and the rest of the machine (other
users' work), and the 1-minute load average before and after. Last, each server's ``/metrics`` must
count exactly the ``/predict`` requests (by status) and rows the generator sent and had answered.

For the w1 / w2 scale ratio (<= 5 minutes, run without ``nice``, on a machine as quiet as it gets):
``.venv/bin/python benchmarks/serve_scale.py --servers w1,w2 --no-ray --ladder own --phase-s 7``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
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
RATE_SHARES = {"shared": (0.3, 0.5, 0.65, 0.8, 0.9, 1.0, 1.1),
               "own": (0.6, 0.75, 0.85, 0.9, 0.95, 1.0, 1.05, 1.15, 1.3)}
WRK_GRACE_S = 1.0  # after the last request is due: what is in flight then is answered before wrk stops

# The wrk script. args: bodies file (one JSON body a line), rate (req/s; 0 = closed loop), seconds, threads.
# LuaJIT's ffi gives it CLOCK_MONOTONIC (wrk's Lua has no sub-second clock).
WRK_SCRIPT = r"""
local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } frugalml_timespec;
int clock_gettime(int clock_id, frugalml_timespec *tp);
]])
local clock = ffi.new("frugalml_timespec")
local function now_s()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end
local IDLE_MS = 3600000  -- a connection with nothing left to send waits out the run

local threads = {}
function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  payloads = {}
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    payloads[#payloads + 1] = wrk.format("POST", "/predict", headers, line)
  end
  local thread_count = tonumber(args[4])
  rate = tonumber(args[2]) / thread_count
  window = tonumber(args[3])
  -- connections open in the first ~ms; threads' schedules interleave
  origin = now_s() + 0.2 + (rate > 0 and thread_index / (rate * thread_count) or 0)
  slots = rate > 0 and math.floor(rate * window) or 0
  slot, sent, answered, last_send, last_answer = 0, 0, 0, 0, 0
  first_send, running = -1, false
  late_ms, codes, workers = {}, {}, {}
end

function delay()
  running = true
  local now = now_s()
  if rate <= 0 then
    return now < origin + window and 0 or IDLE_MS
  end
  if slot >= slots then
    return IDLE_MS
  end
  local wait = origin + slot / rate - now
  slot = slot + 1
  return wait > 0 and math.floor(wait * 1000 + 0.5) or 0
end

-- wrk calls request() once before the run to check it (not sent): `running` leaves that call out.
-- The k-th request sent is compared with the k-th due time: its lateness (claimed after its due time as every
-- connection was busy, or sent late by a timer or a descheduled wrk), to ~1 ms (wrk's timers are in ms).
function request()
  if running then
    local now = now_s()
    if first_send < 0 then first_send = now end
    last_send = now
    if rate > 0 and now > origin + sent / rate then
      late_ms[#late_ms + 1] = (now - origin - sent / rate) * 1000
    end
    sent = sent + 1
  end
  return payloads[sent % #payloads + 1]
end

function response(status, headers, body)
  answered = answered + 1
  last_answer = now_s()
  local code = tostring(status)
  codes[code] = (codes[code] or 0) + 1
  local worker = headers["x-frugalml-worker"] or headers["X-Frugalml-Worker"] or "-"
  workers[worker] = (workers[worker] or 0) + 1
end

local function encode(value)
  if type(value) == "table" then
    local parts = {}
    for key, item in pairs(value) do
      parts[#parts + 1] = string.format("%q:%s", tostring(key), encode(item))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return string.format("%.17g", value)
end

local function add_into(total, part)
  for key, count in pairs(part) do total[key] = (total[key] or 0) + count end
end

function done(summary, latency, requests)
  local out = {sent = 0, answered = 0, slots = 0, codes = {}, workers = {}, errors = summary.errors}
  local lateness, first, last_send, last_answer = {}, math.huge, 0, 0
  for _, thread in ipairs(threads) do
    out.sent = out.sent + thread:get("sent")
    out.answered = out.answered + thread:get("answered")
    out.slots = out.slots + thread:get("slots")
    add_into(out.codes, thread:get("codes"))
    add_into(out.workers, thread:get("workers"))
    for _, ms in ipairs(thread:get("late_ms")) do lateness[#lateness + 1] = ms end
    if thread:get("first_send") >= 0 then first = math.min(first, thread:get("first_send")) end
    last_send = math.max(last_send, thread:get("last_send"))
    last_answer = math.max(last_answer, thread:get("last_answer"))
  end
  table.sort(lateness, function(a, b) return a > b end)
  -- the q-quantile of the lateness of all sent requests, the on-time ones counting 0
  local function late_quantile(q)
    return lateness[math.floor((1 - q) * out.sent + 1e-9) + 1] or 0
  end
  local late = 0
  for _, ms in ipairs(lateness) do if ms > 1 then late = late + 1 end end
  out.late = late
  out.late_max_ms = lateness[1] or 0
  out.late_p99_5_ms = late_quantile(0.995)
  -- an upper bound on the p99 from due times (latency + lateness, not paired here): for any split of the 1% tail,
  -- P(latency > its (1 - t) quantile) + P(lateness > its (1 - (1% - t)) quantile) <= 1%; the best split's bound
  out.p99_bound_ms = math.huge
  for j = 0, 100 do
    local tail = 0.01 * j / 100
    local top = j == 0 and latency.max or latency:percentile(100 * (1 - tail))  -- wrk's percentile(100) is 0
    local bound = top / 1000 + late_quantile(1 - (0.01 - tail))
    out.p99_bound_ms = math.min(out.p99_bound_ms, bound)
  end
  out.send_span_s = first < math.huge and last_send - first or 0
  out.answer_span_s = first < math.huge and last_answer - first or 0
  out.wrk_requests = summary.requests
  out.p50_ms = latency:percentile(50) / 1000
  out.p90_ms = latency:percentile(90) / 1000
  out.p99_ms = latency:percentile(99) / 1000
  out.p99_5_ms = latency:percentile(99.5) / 1000
  out.p99_9_ms = latency:percentile(99.9) / 1000
  out.max_ms = latency.max / 1000
  io.write("FRUGALML_WRK " .. encode(out) .. "\n")
end
"""


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
    (folder / "bodies.txt").write_text("".join(body + "\n" for body in bodies))  # wrk's script reads lines
    (folder / "post.lua").write_text(WRK_SCRIPT)
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

    def cpu_groups(self) -> dict[str, float]:
        """CPU seconds so far of the parent process (the monitor process with ``--workers``; all of a single
        server) and of the rest of its tree (workers; for ``ray2`` the cluster's processes too)."""
        import psutil

        root = psutil.Process(self.process.pid)
        groups = {"parent": sum(root.cpu_times()[:2]), "workers": 0.0}
        others = {p.pid: p for p in (*root.children(recursive=True), *(_tagged(self.cluster) if self.cluster else ()))}
        others.pop(root.pid, None)
        for process in others.values():
            with contextlib.suppress(psutil.Error):
                groups["workers"] += sum(process.cpu_times()[:2])
        return groups

    def cpu_s(self) -> float:
        """CPU seconds of the server's process tree (parent, workers)."""
        return sum(self.cpu_groups().values())

    def counted(self) -> dict[str, float]:
        """/predict requests by status code, rows predicted (``rows``) and model calls (``calls``), as /metrics
        reports them."""
        from prometheus_client.parser import text_string_to_metric_families

        counts: dict[str, float] = {"rows": 0.0, "calls": 0.0}
        for family in text_string_to_metric_families(self.client.get("/metrics").text):
            for sample in family.samples:
                if sample.name == "frugalml_requests_total" and sample.labels.get("endpoint") == "/predict":
                    counts[sample.labels["code"]] = counts.get(sample.labels["code"], 0.0) + sample.value
                elif sample.name == "frugalml_predicted_class_total":
                    counts["rows"] += sample.value
                elif sample.name == "frugalml_model_calls_total":
                    counts["calls"] += sample.value
        return counts

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


def _machine_busy_s() -> float:
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0) \
        - getattr(times, "guest_nice", 0.0)  # guest time is counted in user already


def _snapshot(server: _Server) -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {**server.cpu_groups(), "generator": children.ru_utime + children.ru_stime,
            "orchestrator": own.ru_utime + own.ru_stime, "machine": _machine_busy_s(),
            "wall": time.perf_counter(), "load": os.getloadavg()[0]}


def _with_cpu(server: _Server, send) -> dict:
    """Run ``send()`` (one generator run, returning its result) and add the CPU seconds of each process group,
    the wall time, the load average before and after and the server tree's CPU ms per request net of idle."""
    before = _snapshot(server)
    result = send()
    after = _snapshot(server)
    cpu = {key: after[key] - before[key] for key in ("parent", "workers", "generator", "orchestrator", "machine")}
    cpu["other"] = cpu["machine"] - cpu["parent"] - cpu["workers"] - cpu["generator"] - cpu["orchestrator"]
    wall = after["wall"] - before["wall"]
    busy = cpu["parent"] + cpu["workers"] - server.idle_cpu_s_per_s * wall  # net of what it burns idle
    result.update(cpu_s=cpu, wall_s=wall, load_before=before["load"], load_after=after["load"],
                  server_cpu_ms_per_request=busy / max(1, result["sent"]) * 1e3,
                  generator_cpu_ms_per_request=cpu["generator"] / max(1, result["sent"]) * 1e3,
                  generator_cpu_percent=100 * cpu["generator"] / wall)
    return result


def _drive_python(server: _Server, bodies: Path, seconds: float, concurrency: int, rate: float | None) -> dict:
    """One run of the asyncio generator (``benchmarks/_load.py``)."""
    command = [sys.executable, __file__, "drive", "--port", str(server.port), "--bodies", str(bodies),
               "--seconds", str(seconds), "--concurrency", str(concurrency)]
    if rate:
        command += ["--rate", str(rate)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 4 + 60)
    if out.returncode != 0:
        raise SystemExit(f"generator failed: {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout)
    result["answered"] = result["sent"]  # it awaits every answer
    result["codes"] = {"200": result["ok"], "other": result["sent"] - result["ok"]}
    result["p99_bound_ms"] = result.get("p99_ms", math.nan)  # measured from due times already
    result["held_all"] = result["ok"] == result["sent"]
    return result


def _drive_wrk(server: _Server, folder: Path, seconds: float, connections: int, threads: int,
               rate: float | None) -> dict:
    """One run of wrk with ``post.lua``: closed loop over ``connections``, or open loop at ``rate``."""
    duration = math.ceil(0.2 + seconds + WRK_GRACE_S)
    command = ["wrk", f"--threads={threads}", f"--connections={connections}", f"--duration={duration}s",
               "--timeout=5s", f"--script={folder / 'post.lua'}", f"http://127.0.0.1:{server.port}/",
               "--", str(folder / "bodies.txt"), repr(float(rate or 0)), repr(float(seconds)), str(threads)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    lines = [line for line in out.stdout.splitlines() if line.startswith("FRUGALML_WRK ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
    result = json.loads(lines[-1].partition(" ")[2])
    result["ok"] = sum(count for code, count in result["codes"].items() if code.startswith("2"))
    send_span, answer_span = result.pop("send_span_s"), result.pop("answer_span_s")
    result["errors"] = {kind: int(count) for kind, count in result["errors"].items() if count}
    if rate:
        result["offered_rps"] = result["slots"] / seconds
        result["achieved_rps"] = (result["sent"] - 1) / send_span if send_span > 0 else 0.0  # as sent
    else:
        result["throughput_rps"] = result["ok"] / max(answer_span, 1e-9)
        result["p99_bound_ms"] = result["p99_ms"]  # a closed loop has no due times
    result["held_all"] = (result["ok"] == result["sent"] == result["answered"]
                          and (not rate or result["sent"] == result["slots"]))
    return result


def _idle_cpu(servers: dict[str, _Server], seconds: float) -> None:
    """CPU seconds per second each server tree spends with no traffic (timers, polling), all at once."""
    before = {name: server.cpu_s() for name, server in servers.items()}
    time.sleep(seconds)
    for name, server in servers.items():
        server.idle_cpu_s_per_s = (server.cpu_s() - before[name]) / seconds


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.generator is None:
        args.generator = "wrk" if shutil.which("wrk") else "python"
        if args.generator == "python":
            print("wrk is not installed (`apt-get install wrk`): using the Python load generator", file=sys.stderr)
    elif args.generator == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--generator wrk needs wrk on PATH: `apt-get install wrk` (Debian).")
    shares = args.rate_shares or RATE_SHARES[args.ladder]
    load_at_start = os.getloadavg()
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
        totals = {name: {"sent": 0, "answered": 0, "ok": 0, "errors": {}} for name in servers}
        results: dict[str, dict] = {name: {"ladder": []} for name in servers}

        def run(name: str, seconds: float, rate: float | None = None) -> dict:
            server = servers[name]
            if args.generator == "wrk":
                connections = args.concurrency if rate is None else args.connections
                result = _with_cpu(server, lambda: _drive_wrk(server, folder, seconds, connections,
                                                              args.wrk_threads, rate))
            else:
                result = _with_cpu(server, lambda: _drive_python(server, bodies, seconds, args.concurrency, rate))
            for key in ("sent", "answered", "ok"):
                totals[name][key] += result[key]
            for kind, count in result.get("errors", {}).items():  # wrk's socket errors and timeouts
                totals[name]["errors"][kind] = totals[name]["errors"].get(kind, 0) + count
            return result

        try:
            for name in servers:
                run(name, 2)  # warm-up
            _idle_cpu(servers, args.idle_s)
            for name in servers:
                results[name]["closed"] = run(name, args.probe_s)
            reference = "w2" if "w2" in servers else max(
                (n for n in servers if n != "ray2"), key=lambda n: results[n]["closed"]["throughput_rps"])
            for k, share in enumerate(shares):  # interleaved, in ABBA order: drifting machine load hits all alike
                for name in (list(servers) if k % 2 == 0 else list(servers)[::-1]):
                    top = results[name if args.ladder == "own" else reference]["closed"]["throughput_rps"]
                    results[name]["ladder"].append(run(name, args.phase_s, share * top))
            for name, server in servers.items():
                results[name]["idle"] = server.idle_cpu_s_per_s
            time.sleep(1.0)  # each worker ships its last counters within 50 ms
            counted = {name: server.counted() for name, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
    _report(args, predict_ms, results, totals, counted, load_at_start, os.getloadavg())



def _held(result: dict, p99_ms: float) -> bool:
    return result["held_all"] and result["p99_bound_ms"] <= p99_ms


def _split(result: dict) -> str:
    workers = {key: value for key, value in result.get("workers", {}).items() if key != "-"}
    total = sum(workers.values())
    return "/".join(f"{100 * workers[key] / total:.0f}" for key in sorted(workers)) if total else "-"


def _report(args: argparse.Namespace, predict_ms: float, results: dict, totals: dict, counted: dict,
            load_at_start: tuple, load_at_end: tuple) -> None:
    names = list(results)
    generator = (f"wrk ({args.wrk_threads} thread, {args.connections} connections in open loop)"
                 if args.generator == "wrk" else "python (asyncio, benchmarks/_load.py)")
    print(f"single-row POST /predict on 127.0.0.1; {os.cpu_count()} CPUs shared with other work, run at nice "
          f"{os.nice(0)}; load average (1/5/15 min) {'/'.join(f'{v:.2f}' for v in load_at_start)} at the start, "
          f"{'/'.join(f'{v:.2f}' for v in load_at_end)} at the end")
    print(f"model: {args.trees}-tree random forest, {predict_ms:.2f} ms CPU per single-row predict_proba")
    base = "each server's own" if args.ladder == "own" else "the same"
    print(f"generator: {generator}; open-loop rates: shares of {base} closed-loop maximum; {args.phase_s:g} s a step\n")
    print(f"{'':44}" + "".join(f"{n:>12}" for n in names))
    print(f"{f'closed-loop max, {args.concurrency} connections (req/s)':44}"
          + "".join(f"{results[n]['closed']['throughput_rps']:>12.0f}" for n in names))
    if args.generator == "wrk":  # the Python generator's closed loop times nothing
        print(f"{'  p50 / p99 (ms)':44}" + "".join(
            f"{results[n]['closed']['p50_ms']:>5.1f} /{results[n]['closed']['p99_ms']:>5.1f}" for n in names))
    print(f"{'  generator CPU (% of a core)':44}"
          + "".join(f"{results[n]['closed']['generator_cpu_percent']:>12.1f}" for n in names))
    print(f"{'idle CPU of the server tree (% of a core)':44}"
          + "".join(f"{100 * results[n]['idle']:>12.1f}" for n in names))

    print("\nopen loop (p50, p99: from each send; bound: an upper bound on the p99 from due times; late: requests sent "
          ">1 ms after their due time; split: % of answers by worker; CPU: ms per request, server tree net of idle, "
          "generator)")
    print(f"{'server':>7} {'offered':>8} {'sent/s':>8} {'p50':>6} {'p99':>7} {'bound':>7} {'late':>5} "
          f"{'non-2xx':>7} {'split':>7} {'srv CPU':>7} {'gen CPU':>7} {'load before>after':>17}  held")
    for name in names:
        for step in results[name]["ladder"]:
            non_2xx = step["sent"] - step["ok"]
            print(f"{name:>7} {step['offered_rps']:>8.0f} {step['achieved_rps']:>8.0f} {step['p50_ms']:>6.1f} "
                  f"{step['p99_ms']:>7.1f} {step['p99_bound_ms']:>7.1f} {step.get('late', 0):>5.0f} {non_2xx:>7.0f} "
                  f"{_split(step):>7} {step['server_cpu_ms_per_request']:>7.2f} "
                  f"{step['generator_cpu_ms_per_request']:>7.3f} "
                  f"{step['load_before']:>8.2f}>{step['load_after']:<8.2f} "
                  f"{'yes' if _held(step, args.p99_ms) else 'no'}"
                  + (f"  errors {step['errors']}" if step.get("errors") else ""))

    print("\nCPU by process group over each server's closed and open-loop runs (% of one core: CPU s / wall s):")
    print(f"{'':8}{'workers':>9}{'parent':>9}{'generator':>10}{'this script':>12}{'rest of machine':>16}{'machine':>9}"
          f"{'wall s':>8}{'load':>11}   ms per request: workers, parent, generator")
    for name in names:
        runs = [results[name]["closed"], *results[name]["ladder"]]
        wall = sum(r["wall_s"] for r in runs)
        cpu = {key: sum(r["cpu_s"][key] for r in runs) for key in runs[0]["cpu_s"]}
        sent = sum(r["sent"] for r in runs)
        loads = [load for r in runs for load in (r["load_before"], r["load_after"])]
        shares = "".join(f"{100 * cpu[key] / wall:>{width}.1f}" for key, width in (
            ("workers", 9), ("parent", 9), ("generator", 10), ("orchestrator", 12), ("other", 16), ("machine", 9)))
        per_request = ", ".join(f"{1e3 * cpu[key] / max(sent, 1):.3f}" for key in ("workers", "parent", "generator"))
        print(f"{name:8}{shares}{wall:>8.0f}{min(loads):>6.2f}-{max(loads):<4.2f}   {per_request}")
    print("(parent: the monitor process with --workers, the whole server without; rest of machine: everything else "
          f"that ran, other users' work included; {os.cpu_count()} CPUs = {100 * (os.cpu_count() or 1)}%)")

    if args.ladder == "shared":
        first = results[names[0]]["ladder"][0]
        cpu = {n: results[n]["ladder"][0]["server_cpu_ms_per_request"] for n in names}
        print(f"\nserver CPU per request at {first['offered_rps']:.0f} req/s (ms, whole process tree): "
              + ", ".join(f"{n} {cpu[n]:.2f}" for n in names)
              + (f"; w1 - single = {cpu['w1'] - cpu['single']:+.3f} ms" if {"w1", "single"} <= set(cpu) else "")
              + (f", ray2 - w2 = {cpu['ray2'] - cpu['w2']:+.3f} ms" if "ray2" in cpu else ""))
    generator_top = max(r["generator_cpu_percent"] for n in names for r in results[n]["ladder"])
    print(f"\ngenerator CPU in open loop: up to {generator_top:.1f}% of a core")
    at_p99, through = {}, {}
    for name in names:
        held = [r for r in results[name]["ladder"] if _held(r, args.p99_ms)]
        at_p99[name] = max(held, key=lambda r: r["offered_rps"]) if held else None
        steps = sorted(results[name]["ladder"], key=lambda r: r["offered_rps"])
        failed = next((k for k, r in enumerate(steps) if not _held(r, args.p99_ms)), len(steps))
        through[name] = steps[failed - 1]["offered_rps"] if failed else 0.0  # every step up to it held
    def describe(name: str, step: dict | None) -> str:
        if step is None:
            return f"{name} none"
        top = step is results[name]["ladder"][-1]
        split = f", split {_split(step)}" if "/" in _split(step) else ""
        return (f"{name} {step['offered_rps']:.0f} req/s (p99 bound {step['p99_bound_ms']:.1f} ms{split}"
                + ("; the ladder's top step: its limit is higher" if top else "") + ")")

    print(f"throughput at p99 <= {args.p99_ms:g} ms (highest offered rate held: every request answered 2xx, p99 bound "
          "under the ceiling): " + ", ".join(describe(n, r) for n, r in at_p99.items()))
    print(f"held through (every lower step held too; differs from the above only when a lower step failed: noise): "
          + ", ".join(f"{n} {through[n]:.0f} req/s" for n in names))
    rate = {n: r["offered_rps"] if r else 0.0 for n, r in at_p99.items()}
    for name in (n for n in names if n.startswith("batch") and "single" in names):
        closed = results[name]["closed"]["throughput_rps"] / results["single"]["closed"]["throughput_rps"]
        print(f"{name} / single: {rate[name] / rate['single'] if rate['single'] else float('nan'):.2f} at "
              f"equal p99, {closed:.2f} closed-loop")
    if {"w1", "w2"} <= set(names):
        closed = results["w2"]["closed"]["throughput_rps"] / results["w1"]["closed"]["throughput_rps"]
        ratio = rate["w2"] / rate["w1"] if rate["w1"] else float("nan")
        held_through = through["w2"] / through["w1"] if through["w1"] else float("nan")
        print(f"scale ratio w2 / w1: {ratio:.2f} at equal p99 ({held_through:.2f} held through), {closed:.2f} "
              "closed-loop (target >= 1.6)")
    if "ray2" in names:
        print(f"ray2 / w2: {rate['ray2'] / rate['w2'] if rate['w2'] else float('nan'):.2f} at equal p99, "
              f"{results['ray2']['closed']['throughput_rps'] / results['w2']['closed']['throughput_rps']:.2f} "
              "closed-loop")
    for name in names:
        counts, sent = counted[name], totals[name]
        by_code = {code: value for code, value in counts.items() if code not in ("rows", "calls")}
        # the server counts what it answered; an answer that came after wrk's timeout is counted there, not by wrk
        late = sent["sent"] - sent["answered"]
        exact = (sum(by_code.values()) == sent["sent"] and counts["rows"] == by_code.get("200", 0)
                 and by_code.get("200", 0) >= sent["ok"] >= by_code.get("200", 0) - late)
        codes = ", ".join(f"{value:.0f} x {code}" for code, value in sorted(by_code.items())) or "none"
        print(f"/metrics of {name}: /predict {codes}"
              f", {counts['rows']:.0f} rows in {counts['calls']:.0f} model calls "
              f"({counts['rows'] / max(counts['calls'], 1):.2f} rows a call); the generator sent {sent['sent']}, got "
              f"{sent['answered']} answers, {sent['ok']} of them 2xx"
              + (f" ({late} not answered before wrk's timeout)" if late else "")
              + f": {'exact' if exact else 'NOT exact'}"
              + (f"; wrk's errors: {sent['errors']}" if sent["errors"] else ""))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_drive_parser(parser.add_subparsers(dest="command"))
    parser.add_argument("--trees", type=int, default=50, help="trees of the random forest (its CPU per request)")
    parser.add_argument("--generator", choices=("wrk", "python"),
                        help="the load generator (default: wrk when installed, else python)")
    parser.add_argument("--probe-s", type=float, default=5.0, help="closed-loop seconds per server")
    parser.add_argument("--phase-s", type=float, default=5.0,
                        help="open-loop seconds per rate and server (wrk: whole seconds plus 1 s to drain)")
    parser.add_argument("--idle-s", type=float, default=5.0, help="seconds to measure the servers' idle CPU")
    parser.add_argument("--p99-ms", type=float, default=50.0, help="the p99 at which throughputs are compared")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="connections of the closed loop (and of the Python generator's clients)")
    parser.add_argument("--connections", type=int, default=128,
                        help="wrk's connections in open loop (each idle one carries the next due request; the more, "
                             "the closer to even the kernel's split of them over workers)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk's threads (each paces rate / threads)")
    parser.add_argument("--ladder", choices=("shared", "own"), default="shared",
                        help="open-loop rates as shares of w2's (else the highest) closed-loop maximum, the same for "
                             "every server (shared), or of each server's own (own: finer steps near each knee)")
    parser.add_argument("--rate-shares", type=lambda text: [float(v) for v in text.split(",")], default=None,
                        help="the open-loop rates as shares (default: "
                             + "; ".join(f"{k}: {','.join(map(str, v))}" for k, v in RATE_SHARES.items())
                             + "); batching arms want low shares too (e.g. 0.1,0.2,0.3,0.45,0.6,0.8,1.0)")
    parser.add_argument("--servers", type=lambda text: text.split(","), default=list(SERVERS),
                        help=f"comma-separated arms to run, from {', '.join(SERVERS)} (default: all)")
    parser.add_argument("--no-ray", dest="ray", action="store_false",
                        help="leave out the ray2 arm (2 Ray Serve replicas on a loopback cluster)")
    return parser


if __name__ == "__main__":
    arguments = _parser().parse_args()
    drive(arguments, connections_per_client=4) if arguments.command == "drive" else main(arguments)
