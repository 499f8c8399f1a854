"""What forking ``frugalml serve --workers N``'s workers from a preloaded forkserver saves, against
starting each as a fresh Python process (the way before), alternated.

A scikit-learn classifier on diabetes (and, with ``--flavours sklearn,pytorch``, a small torch
network), saved as ``frugalml register`` saves it (:mod:`serve_memory`'s builders). Each arm is
``python -m frugalml.cli serve MODEL --workers N`` in a subprocess with ``PYTHONPATH`` set to a
``src`` folder: this tree's (``now``) or ``--base-src DIR`` (say, a copy of the commit before's
``src``: ``before``). Per run:

* **ready s**: from the start to the server's ``serving ... with N workers`` line (every worker
  has loaded the model);
* **CPU-s**: of every process of the server at that moment (parent, forkserver, workers, the
  resource tracker), children's CPU included;
* **USS / PSS MB**: summed over the server's processes (``memory_full_info``), after 200
  requests; USS counts pages only one process maps, PSS splits shared pages among their
  processes: the server's real footprint. RSS - shared (frugalml's trial memory) does not see
  copy-on-write sharing, so it is not the figure here;
* **restart s**: one worker killed with SIGKILL, to a new worker answering ``/health`` (from
  fresh connections until both worker indexes answer).

Rounds alternate the arms; printed per arm the medians over rounds and the ratios now / before.

    python benchmarks/serve_workers.py --base-src /tmp/base/src [--workers 2] [--rounds 3] [--flavours sklearn]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serve_memory  # noqa: E402 - the flavours' model builders

REQUESTS = 200


def _tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _memory(processes: list[psutil.Process]) -> tuple[float, float]:
    uss = pss = 0.0
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        uss, pss = uss + info.uss / 2**20, pss + info.pss / 2**20
    return uss, pss


def _workers(pid: int) -> list[psutil.Process]:
    """The processes that answer HTTP: children of the server (before) or of its forkserver (now)."""
    found = []
    for process in psutil.Process(pid).children(recursive=True):
        try:
            if "frugalml.serve._worker" in " ".join(process.cmdline()) or process.ppid() != pid:
                found.append(process)
        except psutil.Error:
            continue
    return found


def _answering(url: str, workers: int, deadline: float) -> set[str]:
    seen: set[str] = set()
    while len(seen) < workers and time.monotonic() < deadline:
        try:
            with httpx.Client(base_url=url, timeout=10, trust_env=False) as fresh:
                answer = fresh.get("/health")
            if answer.status_code == 200:
                seen.add(answer.headers["x-frugalml-worker"])
        except httpx.TransportError:
            time.sleep(0.02)
    return seen


def run_once(src: Path, model_dir: Path, rows: list, workers: int, folder: Path) -> dict[str, float]:
    port = serve_memory._free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = folder / f"server-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "frugalml.cli", "serve", str(model_dir), "--workers",
                                    str(workers), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while "frugalml: serving" not in log_path.read_text():
            if process.poll() is not None or time.monotonic() - started > 180:
                raise RuntimeError(f"the server did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        ready_s = time.monotonic() - started
        cpu_s = _cpu_s(_tree(process.pid))
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            for index in range(REQUESTS):
                assert client.post("/predict", json={"instances": [rows[index % len(rows)]]}).status_code == 200
        uss, pss = _memory(_tree(process.pid))
        victim = _workers(process.pid)[0]
        killed = time.monotonic()
        victim.kill()
        deadline = killed + 120
        while "starting it again" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        restart_s = time.monotonic() - killed if len(_answering(url, workers, deadline)) == workers else float("nan")
        return {"ready s": ready_s, "CPU-s": cpu_s, "USS MB": uss, "PSS MB": pss, "restart s": restart_s}
    finally:
        serve_memory._stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-src", type=Path, required=True, help="the src folder of the tree to compare with")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flavours", default="sklearn")
    args = parser.parse_args()
    arms = {"now": HERE.parent / "src", "before": args.base_src.resolve()}
    X, y = serve_memory._diabetes()
    rows = X.head(50).to_numpy("float64").tolist()
    print(f"machine: {psutil.cpu_count()} cores; --workers {args.workers}; {args.rounds} rounds; "
          f"{REQUESTS} requests before the memory is read")
    with tempfile.TemporaryDirectory() as tmp:
        for flavour in args.flavours.split(","):
            folder = Path(tmp) / flavour
            folder.mkdir()
            model_dir = getattr(serve_memory, f"build_{flavour}")(folder, X, y)
            results: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
            for round_ in range(args.rounds):
                order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
                for arm in order:
                    measured = run_once(arms[arm], model_dir, rows, args.workers, folder)
                    results[arm].append(measured)
                    print(f"{flavour:8} round {round_ + 1} {arm:7} " + "  ".join(f"{k} {v:7.2f}" for k, v in measured.items()),
                          flush=True)
            medians = {arm: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for arm, runs in results.items()}
            print(f"{flavour}: medians over {args.rounds} rounds, and now / before")
            for key in medians["now"]:
                now, before = medians["now"][key], medians["before"][key]
                print(f"  {key:10} now {now:8.2f}   before {before:8.2f}   ratio {now / before:5.2f}")


if __name__ == "__main__":
    main()
