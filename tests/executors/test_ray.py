"""The Ray backend on a real two-node Ray cluster on loopback (one `ray start` per node).

One cluster serves the whole module. It is torn down by killing exactly its own
processes (those naming its temporary directory, and their children), not with
`ray stop --force`, which would kill every Ray process of this user on the machine,
other test runs' included.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra: pip install 'frugalml[ray]'")
# Ray starts a worker process per trial: on 2 busy cores these tests ran 3-5x slower
# (the killed-worker study took 329 s with three CPU hogs), past the suite's 300 s.
pytestmark = pytest.mark.timeout(900)

import trainers  # noqa: E402
from frugalml import ResultStore, Search, Study, Workload, tune  # noqa: E402
from frugalml.exceptions import ConfigError  # noqa: E402
from frugalml.executors import shared_connection  # noqa: E402
from frugalml.executors._ray_connect import _check_same_cluster, connect  # noqa: E402
from frugalml.executors._ray_data import ShippedData, localize, ship  # noqa: E402
from frugalml.metrics import PEAK_RSS_MB, USS_MB  # noqa: E402
from frugalml.records import TrialStatus  # noqa: E402
from frugalml.tracking import default_uri  # noqa: E402
from helpers import TESTS, cli, free_port, halving_study, mlflow_trial_runs, write_study  # noqa: E402


def _cluster_processes(tag: str, port: int) -> list[psutil.Process]:
    """The processes naming ``tag`` (the cluster's temporary directory), and the head's Ray Client
    server, which names only the head's ``port`` (``--address=IP:PORT``); with their children."""
    found: dict[int, psutil.Process] = {}

    def ours(arg: str) -> bool:
        return tag in arg or (arg.startswith("--address=") and arg.endswith(f":{port}"))

    for process in psutil.process_iter(["cmdline"]):
        if process.pid != os.getpid() and any(map(ours, process.info["cmdline"] or ())):
            found[process.pid] = process
            try:
                found.update((child.pid, child) for child in process.children(recursive=True))
            except psutil.Error:
                pass
    return list(found.values())


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes with one CPU and two (logical, fake) GPUs each, the second offering an ``edge``
    resource (a target device class to measure serving costs on); yields (address, node cache dir).

    Every node declares the same GPUs, so Ray's placement of CPU-only tasks (it keeps them off GPU
    nodes while others have room) is as on a GPU-less cluster; only tasks asking for GPUs get any."""
    temp_dir = tempfile.mkdtemp(prefix="frugalml-ray-", dir="/tmp")  # short: Ray's socket paths are limited
    cache = Path(temp_dir) / "node-cache"
    port = free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    # Token auth off, explicitly: left unset, Ray 2.60 enables it on a head node that finds
    # ~/.ray/auth_token, but neither on a node joining it nor on a driver given an address.
    env = {
        **os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "FRUGALML_CACHE_DIR": str(cache), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
    }
    # no log monitor: it only streams the workers' output to drivers, which these tests do not read; the
    # suite's 6 log monitors used 18.9 CPU-s (benchmarks/results/suite-cpu-2026-12-07.txt)
    common = ["--num-cpus=1", "--num-gpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats",
              "--include-log-monitor=false"]
    try:
        subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([ray_cli, "start", f"--address=127.0.0.1:{port}", '--resources={"edge": 1}', *common],
                       env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}", cache
    finally:
        ray.shutdown()
        for process in _cluster_processes(temp_dir, port):
            try:
                process.kill()
            except psutil.Error:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def driver(cluster):
    """This process connected to the module's cluster once, for the studies after the first: each reuses
    the Ray it finds, as in a user's script that called ``ray.init``, so its trials run in the Ray workers
    (and their forkservers) the studies before it started; a study that connects itself is a new Ray job,
    whose workers start afresh. The first test connects on its own and checks that it leaves nothing."""
    address, _ = cluster
    with shared_connection("ray", address, 1):
        yield cluster


def _channels(address: str, cache: Path) -> list[int]:
    """Pids of the module cluster's processes holding a study's channel actor (Ray titles an actor's
    worker by its class)."""
    def title(process: psutil.Process) -> str:
        try:
            return (process.cmdline() or [""])[0]
        except psutil.Error:
            return ""

    return [p.pid for p in _cluster_processes(str(cache.parent), int(address.rsplit(":", 1)[1]))
            if title(p).startswith("ray::Channel")]


def _allocate_study(name: str, directory: Path, backend: str, address: str | None, mlflow: bool = False) -> Study:
    return Study(
        name=name, directory=str(directory), workers=2, backend=backend, address=address,
        workloads=[Workload(train=trainers.allocate, train_kwargs={"steps": 300, "at_step": 100}, eval_every=50,
                            max_steps=300, name="allocate")],
        search=Search(space={"megabytes": [30, 500], "offset": [0.0, 1.0]}),
        budget={"max_memory_mb": 400}, mlflow_uri="default" if mlflow else None,
    )


def test_a_study_runs_on_both_nodes_stops_over_budget_and_matches_a_local_run(cluster, tmp_path):
    address, cache = cluster
    connected = ray.is_initialized()  # False, unless tests were reordered after one that uses `driver`
    on_ray = tune(_allocate_study("two-nodes", tmp_path / "ray", "ray", address, mlflow=True))
    # nothing of the study stays: the connection it made, its channel actor's worker process on the cluster
    assert ray.is_initialized() == connected
    deadline = time.monotonic() + 10
    while _channels(address, cache) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _channels(address, cache)
    by_id = {r.trial_id: r for r in on_ray.records}
    assert len(by_id) == 4
    assert len({r.info["node"]["id"] for r in on_ray.records}) == 2  # both nodes ran trials
    for record in on_ray.records:
        if record.params["megabytes"] == 500:
            assert record.status is TrialStatus.STOPPED
            assert record.stop.rule == "max_memory_mb" and record.stop.kind == "system"
            assert 400 < record.stop.value < 800 and record.steps_done < 300 and record.steps_saved > 0
        else:
            assert record.status is TrialStatus.COMPLETED and record.steps_done == 300

    local = tune(_allocate_study("two-nodes", tmp_path / "local", "local", None))
    for record in local.records:  # the same trials, statuses, stops, windows and metric names
        twin = by_id[record.trial_id]
        assert (twin.status, twin.stop and twin.stop.rule) == (record.status, record.stop and record.stop.rule)
        assert set().union(*map(set, (w.values for w in twin.windows))) == set().union(
            *map(set, (w.values for w in record.windows)))
        assert set(twin.info) - {"node"} == set(record.info)
        if record.status is TrialStatus.COMPLETED:  # a stop's step depends on when a sample lands, and so does
            # which windows a detailed sample (uss, peak RSS: every 2 s at most) falls in; the union above has them
            def keys(r):
                return [(w.step, set(w.values) - {USS_MB, PEAK_RSS_MB}) for w in r.windows]

            assert keys(twin) == keys(record)

    stored = {r.trial_id: r for r in ResultStore(tmp_path / "ray").trials()}
    assert stored == by_id  # the same local results store
    runs = mlflow_trial_runs(default_uri(tmp_path / "ray"), "two-nodes")
    assert set(runs) == set(by_id)  # and the same MLflow logging
    stopped = next(r for r in on_ray.records if r.status is TrialStatus.STOPPED)
    assert runs[stopped.trial_id].data.tags["stop_rule"] == "max_memory_mb"


def test_studies_run_in_turn_share_one_connection_that_closes_after_them(cluster, tmp_path):
    """As ``frugalml reproduce --backend ray`` runs its studies: one Ray job for them all (for a local
    Ray, one start), closed after the last."""
    address, _ = cluster
    with shared_connection("ray", address, 1):
        job = ray.get_runtime_context().get_job_id()
        for name in ("first", "second"):
            result = tune(Study(name=name, directory=str(tmp_path / name), workers=1, backend="ray", address=address,
                                workloads=[Workload(train=trainers.steady, train_kwargs={"steps": 20}, name="w")],
                                search=Search(space={"offset": [0.0]}), mlflow_uri=None))
            assert [r.status for r in result.records] == [TrialStatus.COMPLETED]
            assert ray.is_initialized() and ray.get_runtime_context().get_job_id() == job
    assert not ray.is_initialized()


def _wait_for_cpu(processes: list[psutil.Process], cpu_s: float, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if sum(sum(p.cpu_times()[:2]) for p in processes) >= cpu_s:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)


def test_a_ray_worker_killed_mid_trial_fails_that_trial_and_the_study_completes(driver, tmp_path):
    address, _ = driver
    killed: list[psutil.Process] = []

    def kill_the_worker_of_trial_0() -> None:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            for process in psutil.process_iter(["cmdline"]):
                if (process.info["cmdline"] or [""])[0] == "ray::frugalml-trial-0":
                    grandchildren = [p for p in process.children(recursive=True) if p.ppid() != process.pid]
                    if grandchildren:  # the trial's own process (forked by the worker's forkserver) is up
                        _wait_for_cpu(grandchildren, 0.3)  # it is stepping ...
                        time.sleep(1.5)  # ... and has reported its progress (every 0.5 s) at least once
                        killed.extend([process, *process.children(recursive=True)])
                        process.send_signal(signal.SIGKILL)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_worker_of_trial_0, daemon=True)
    killer.start()
    study = Study(
        name="killed", directory=str(tmp_path / "out"), workers=2, backend="ray", address=address,
        workloads=[Workload(train=trainers.steady, train_kwargs={"steps": 3000, "step_s": 0.002}, eval_every=100,
                            name="steady")],
        # Trials 0 and 1 step for 6 s, well past the kill (~2 s in); trial 2, started after it, needs only to finish.
        search=Search(space={"offset": [0.0, 1.0, 2.0], "step_s": [0.002, 0.0005]},
                      points=[{"offset": 0.0, "step_s": 0.002}, {"offset": 1.0, "step_s": 0.002},
                              {"offset": 2.0, "step_s": 0.0005}]),
        mlflow_uri=None,
    )
    result = tune(study)
    killer.join(5)
    assert killed, "trial 0's Ray worker was never found"
    records = {r.number: r for r in result.records}
    assert sorted(records) == [0, 1, 2]
    failed = records[0]
    assert failed.status is TrialStatus.FAILED
    assert "Ray worker died" in failed.error and failed.info["ray_error"] == "WorkerCrashedError"
    assert "node" in failed.info and failed.steps_done > 0  # how far it got, from its last exchange
    assert [records[n].status for n in (1, 2)] == [TrialStatus.COMPLETED] * 2
    assert ResultStore(tmp_path / "out").trials()[0].error == failed.error
    deadline = time.monotonic() + 10  # the trial's own processes died with the worker
    while time.monotonic() < deadline and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in killed):
        time.sleep(0.1)
    assert not [p.pid for p in killed if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_the_study_compute_budget_counts_trials_running_on_other_nodes(driver, tmp_path):
    address, _ = driver
    study = Study(
        name="compute", directory=str(tmp_path / "out"), workers=2, backend="ray", address=address,
        workloads=[Workload(train=trainers.steady, train_kwargs={"steps": 3000, "step_s": 0.002}, name="steady")],
        search=Search(space={"offset": [0.0, 0.1, 0.2, 0.3]}), budget={"max_study_cpu_seconds": 3.0},
        mlflow_uri=None,
    )
    result = tune(study)
    stopped = [r for r in result.records if r.stop is not None and r.stop.rule == "max_study_cpu_seconds"]
    assert stopped and len(result.records) < 4  # no trial started once the budget was spent
    # The study total a node acted on included the trial running on the other node.
    assert max(r.stop.value - r.cpu_s for r in stopped) > 0.3
    # Each node acts on the other's figure up to ~1.5 s late; without it, 4 x 6 CPU-s would run.
    assert sum(r.cpu_s for r in result.records) < 3.0 + 3.0


def test_the_study_energy_budget_counts_joules_of_trials_running_on_other_nodes(driver, tmp_path):
    address, _ = driver
    study = Study(
        name="energy", directory=str(tmp_path / "out"), workers=2, backend="ray", address=address,
        workloads=[Workload(train=trainers.steady, train_kwargs={"steps": 3000, "step_s": 0.002}, name="steady")],
        search=Search(space={"offset": [0.0, 0.1, 0.2, 0.3]}), budget={"max_study_joules": 60.0}, mlflow_uri=None,
    )
    with pytest.warns(UserWarning, match="estimated joules"):
        result = tune(study)  # no RAPL here: joules are CPU-s x a stated power per core
    # One stated power per core; joules and CPU-s are read a sample apart, so the ratios differ a little
    # (the default, 42.5 W / 2 cores = 21.25 W, sits on a rounding boundary: CI saw 21.2 and 21.3).
    ratios = [r.energy_j / r.cpu_s for r in result.records if r.cpu_s > 0.5]
    assert ratios and max(ratios) / min(ratios) < 1.05
    assert all(r.energy_source == "estimate" for r in result.records)
    watts = min(ratios)
    stopped = [r for r in result.records if r.stop is not None and r.stop.rule == "max_study_joules"]
    assert stopped and len(result.records) < 4
    # The study total a node acted on included the joules of the trial running on the other node.
    assert max(r.stop.value - r.energy_j for r in stopped) > 0.3 * watts
    assert sum(r.energy_j for r in result.records) < 60.0 + 60.0


def test_halving_on_ray_promotes_among_feasible_trials_only(driver, tmp_path):
    address, _ = driver
    result = tune(halving_study(tmp_path / "out", workers=2, backend="ray", address=address))
    records = list(result.records)
    assert len(records) == len(trainers.RANKED_POINTS)
    over = [r for r in records if r.params["megabytes"]]
    assert all(r.stop.rule == "max_memory_mb" for r in over)
    halved = [r for r in records if r.stop is not None and r.stop.rule == "halving"]
    assert halved and all(r.feasible for r in halved)
    # over-budget trials scored <= 0.05 + 1/step at their rungs, feasible ones >= 0.2 + 1/step:
    # no cutoff came from a trial that broke the budget
    assert all(r.stop.threshold >= 0.2 for r in halved)
    best = min((r for r in records if r.feasible), key=lambda r: r.params["quality"])
    assert best.status is TrialStatus.COMPLETED


RAY_STUDY = """
[study]
name = "ray-resume"
workers = 2
directory = "out"
backend = "ray"

[[workloads]]
train = "trainers:allocate"
train_kwargs = {{ megabytes = 0, steps = 100, sleep_s = 0.01 }}
eval_every = 50
name = "steady"

[search]
method = "grid"
space = {{ offset = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5] }}
"""


def test_resume_on_ray_after_the_driver_is_killed_loses_and_repeats_nothing(cluster, tmp_path):
    address, _ = cluster
    study_file = write_study(tmp_path / "s.toml", RAY_STUDY.format())
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "frugalml.cli", "tune", str(study_file), "--address", address, "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    store = ResultStore(tmp_path / "out")
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and len(store.trial_ids() if store.exists else ()) < 2:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = {r.trial_id: r for r in store.trials()}
    assert 2 <= len(before) < 6

    resumed = cli("tune", str(study_file), "--backend", "ray", "--address", address, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    after = {r.trial_id: r for r in store.trials()}
    assert len(after) == 6 and len({r.number for r in after.values()}) == 6
    for trial_id, record in before.items():  # finished trials kept as they were, not re-run
        assert after[trial_id].number == record.number and after[trial_id].train_loss == record.train_loss
    assert resumed.stdout.count("completed") == 6 - len(before)
    assert all("node" in r.info for r in after.values())
    assert set(mlflow_trial_runs(default_uri(tmp_path / "out"), "ray-resume")) == set(after)


def test_a_reproduction_runs_on_the_cluster_and_resumes_locally_without_re_running(driver, tmp_path):
    from frugalml.reproduce import NasDesign, run_nas

    address, _ = driver
    # 2 real MLP architectures: one round on the 2 workers (a Ray trial imports torch, ~3 CPU-s); the
    # 4-architecture run is tested locally in tests/report/test_nas_findings.py
    plan = NasDesign(True, (16, 256), (1,), (32,), 6, 3, 2)
    run = run_nas(tmp_path / "nas", plan=plan, backend="ray", address=address, echo=lambda line: None)
    records = ResultStore(tmp_path / "nas" / "studies" / "exhaustive").trials()
    assert len(records) == 2 and all("node" in r.info for r in records)  # ran as Ray tasks
    assert (tmp_path / "nas" / "FINDINGS.md").read_text().count("| **") == 7
    again: list[str] = []
    rerun = run_nas(tmp_path / "nas", plan=plan, resume=True, echo=again.append)
    assert rerun.budget == run.budget and not any(": completed" in line for line in again)
    with pytest.raises(ConfigError, match="is for the Ray backend"):
        run_nas(tmp_path / "other", plan=plan, address=address)


def test_a_ray_trials_worker_forks_from_a_forkserver_that_imported_what_the_drivers_workers_preload(driver, tmp_path):
    """A built-in network's workers preload torch: on a node too, so a trial does not import it
    again (~2.5 CPU-s); a trial of the same study whose own function imports torch (so the
    study's workers all do) shows the forkserver it was forked from."""
    address, _ = driver
    study = Study(name="preload", directory=str(tmp_path / "preload"), workers=1, backend="ray", address=address,
                  workloads=[Workload(dataset="diabetes", algorithm="mlp", max_steps=2, eval_every=2),
                             Workload(train=trainers.import_torch, name="plain")],
                  search=Search(space={"width": [4]}), mlflow_uri=None)
    records = {r.workload: r for r in tune(study).records}
    assert all(r.status is TrialStatus.COMPLETED for r in records.values()), [r.error for r in records.values()]
    assert records["plain"].info["torch"] is True and "node" in records["plain"].info


def test_a_node_without_the_dataset_files_gets_them_from_the_object_store(driver):
    address, node_cache = driver
    connect(address, 1)
    from frugalml.workloads import prepare_dataset, resolve_dataset

    data = prepare_dataset(resolve_dataset("diabetes"), seed=0)
    shipped = ship(data)
    elsewhere = ShippedData(replace(data, directory=Path("/nonexistent") / data.directory.name), shipped.arrays)
    here = ray.get(ray.remote(localize).remote(shipped))  # the node has the files: used in place
    assert Path(here.directory) == Path(data.directory)
    copy = ray.get(ray.remote(localize).remote(elsewhere))  # it lacks them: written once to its cache
    assert Path(copy.directory) == node_cache / "prepared" / data.directory.name
    for mine, theirs in zip(data.arrays(), copy.arrays()):
        np.testing.assert_array_equal(mine, theirs)
    assert (copy.n_train, copy.task, copy.classes) == (data.n_train, data.task, data.classes)


def _edge_node(address: str) -> str:
    with shared_connection("ray", address, 1):
        return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("edge"))


# Measured (the probe on diabetes, MLP depth 2, 1 core, 1 thread, p50 of 30-50 single-row calls), idle and
# with 6-8 CPU hogs on this 2-core box (load 6-14), alone and on the edge node in this test: widths 16 and
# 256 take 0.035-0.059 ms, 4096 takes 3.2-28 ms (64 MB of weights, read once a call). The budget sits a
# factor >= 6.8 above the first and >= 8 below the second, so load does not move one across it.
EDGE_WIDTHS = [16, 256, 4096]
EDGE_BUDGET_MS = 0.4


def _edge_study(name: str, directory: Path, address: str, **serving) -> Study:
    # lr 3e-4, one epoch of diabetes (9 steps of 64 rows): val_loss 0.63 / 0.58 / 0.48 by width, the widest best
    return Study(name=name, directory=str(directory / name), workers=2, backend="ray", address=address,
                 workloads=[Workload(dataset="diabetes", algorithm="mlp", eval_every=5)],
                 search=Search(space={"width": EDGE_WIDTHS, "depth": [2], "learning_rate": [3e-4]}),
                 mlflow_uri=None, **serving)


def test_serving_costs_are_measured_on_the_node_that_offers_the_deploy_resource(driver, tmp_path):
    """The same MLP grid twice on the cluster. *Without the envelope*: no serving budget and no
    ``[deploy]`` table, so nothing is measured and every width trains; the widest wins on val_loss.
    *With it*: ``max_predict_ms`` under ``[deploy]`` of one core and one thread on the node offering
    ``edge``: every architecture is measured there before training, the too-slow one is skipped
    untrained, and the best is a smaller width."""
    address, _ = driver
    unbounded = tune(_edge_study("free", tmp_path, address))
    assert [r.status for r in unbounded.records] == [TrialStatus.COMPLETED] * len(EDGE_WIDTHS)
    assert not any("serving" in r.info for r in unbounded.records)
    assert unbounded.best_feasible().params["width"] == max(EDGE_WIDTHS)

    deploy = {"resources": {"edge": 1}, "cores": 1, "threads": 1, "quantile": 0.5, "calls": 50}
    result = tune(_edge_study("edge", tmp_path, address, budget={"max_predict_ms": EDGE_BUDGET_MS}, deploy=deploy))
    edge = _edge_node(address)
    assert len(result.records) == len(EDGE_WIDTHS)
    for record in result.records:
        serving = record.info["serving"]
        assert serving["node"] == edge and serving["where"] == "before training", record
        assert len(serving["cpus"]) == 1 and serving["predict_ms"] > 0, record
    by_width = {r.params["width"]: r for r in result.records}
    slow = by_width[max(EDGE_WIDTHS)]
    assert slow.status is TrialStatus.SKIPPED and slow.steps_done == 0 and slow.info["stop_phase"] == "deploy"
    assert slow.stop.rule == "skipped_max_predict_ms" and slow.stop.threshold == EDGE_BUDGET_MS
    assert slow.stop.value == slow.info["serving"]["predict_ms"] > EDGE_BUDGET_MS, slow.info["serving"]
    trained = {r.params["width"]: r for r in unbounded.records}
    for width in EDGE_WIDTHS[:-1]:
        kept = by_width[width]
        assert kept.status is TrialStatus.COMPLETED and kept.steps_done == trained[width].steps_done, kept
        assert kept.info["serving"]["predict_ms"] < EDGE_BUDGET_MS, kept.info["serving"]
    assert result.best_feasible().params["width"] == 256  # smaller than without the envelope
    print({w: round(r.info["serving"]["predict_ms"], 3) for w, r in sorted(by_width.items())})


def test_deploy_resources_no_node_offers_are_one_line(driver, tmp_path):
    address, _ = driver
    study = Study(name="nowhere", directory=str(tmp_path / "nowhere"), backend="ray", address=address,
                  workloads=[Workload(dataset="diabetes", algorithm="svm")],
                  search=Search(space={"batch_size": [30], "learning_rate": [0.01]}), budget={"max_predict_ms": 50}, deploy={"resources": {"tpu_edge": 1}}, mlflow_uri=None)
    with pytest.raises(ConfigError, match=r"tpu_edge = 1\) are offered by none of the cluster's 2 nodes") as error:
        tune(study)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "nowhere").exists()  # refused before the folder was made: --fresh would have kept it


def test_bad_addresses_and_a_missing_ray_are_one_line_config_errors(tmp_path):
    closed = free_port()
    study_file = write_study(tmp_path / "s.toml", RAY_STUDY.format())
    for address, expected in ((f"127.0.0.1:{closed}", "Cannot reach a Ray cluster"), ("nonsense", "HOST:PORT")):
        result = cli("tune", str(study_file), "--address", address)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "frugalml.db").exists()
    no_ray = subprocess.run(  # as if Ray were not installed
        [sys.executable, "-c", "import sys; sys.modules['ray'] = None; from frugalml.cli import main; "
         f"sys.exit(main(['tune', {str(study_file)!r}]))"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(TESTS)}, timeout=120,
    )
    assert no_ray.returncode == 2 and "pip install 'frugalml[ray]'" in no_ray.stderr


def test_an_address_of_this_machine_names_the_connected_local_cluster_in_ipv4_or_ipv6():
    """Ray reports a local head by an interface address; the user may write 127.0.0.1, localhost,
    [::1] or that address: the same cluster. Another port, or another machine, is refused."""
    own = next(a.address for nic in psutil.net_if_addrs().values() for a in nic
               if a.family == socket.AF_INET and not a.address.startswith("127."))
    connected = f"{own}:6379"
    for address in ("127.0.0.1:6379", "localhost:6379", "[::1]:6379", connected):
        _check_same_cluster(address, connected)
    for address in ("[::1]:6380", "198.51.100.7:6379"):  # another port; TEST-NET-2, not this machine
        with pytest.raises(ConfigError, match="already initialised in this process"):
            _check_same_cluster(address, connected)


def test_gpus_per_trial_reserves_ray_gpus_fake_logical_gpu_resources(cluster, tmp_path):
    """Ray counts GPUs as a logical resource: the module cluster's nodes declare two each on a
    GPU-less machine, which lets the test check reservation and CUDA_VISIBLE_DEVICES, not any
    GPU metric. The study reuses a Ray this test initialised (address None), as a user's would."""
    address, _ = cluster
    ray.shutdown()
    ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    try:
        study = Study(
            name="gpus", directory=str(tmp_path / "gpus"), workers=2, backend="ray", mlflow_uri=None, gpus_per_trial=1,
            workloads=[Workload(train=trainers.note_gpu_devices, train_kwargs={"steps": 20}, eval_every=10, name="g")],
            search=Search(space={"offset": [0.0, 1.0, 2.0]}),
        )
        result = tune(study)
        assert [r.status for r in result.records] == [TrialStatus.COMPLETED] * 3
        assert {r.info["cuda_visible_devices"] for r in result.records} <= {"0", "1"}
        with pytest.raises(ConfigError, match="gpus_per_trial = 3 but no node"):
            tune(replace(study, name="too-many", directory=str(tmp_path / "too-many"), gpus_per_trial=3))
        assert not (tmp_path / "too-many").exists()
        host, port = address.rsplit(":", 1)
        same = replace(study, name="same", directory=str(tmp_path / "same"), address=f"localhost:{port}",
                       search=Search(space={"offset": [0.0]}))
        assert [r.status for r in tune(same).records] == [TrialStatus.COMPLETED]  # the same cluster, named otherwise
        elsewhere = f"{host}:{free_port()}"
        # Ray names the head by this machine's interface address, where the fixture wrote 127.0.0.1
        with pytest.raises(ConfigError, match=rf"connected to the cluster at \S+:{port}, not '{elsewhere}'"):
            tune(replace(study, name="elsewhere", directory=str(tmp_path / "elsewhere"), address=elsewhere))
        assert not (tmp_path / "elsewhere").exists()  # refused before the folder was made
    finally:
        ray.shutdown()
