"""Adaptive batching: the batcher on its own (fake models, no HTTP), then a real server whose concurrent
requests get exactly the unbatched server's answers and are monitored one by one."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serve_helpers import ServerProcess, scrape, scrape_until, value


class FakeModel:
    """Answers each row with ten times its first value; records the rows of every call."""

    def __init__(self, seconds: float = 0.0, fail_below: float | None = None) -> None:
        self.calls: list[list[float]] = []
        self.seconds, self.fail_below = seconds, fail_below

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, None]:
        self.calls.append(rows[:, 0].tolist())
        time.sleep(self.seconds)
        if self.fail_below is not None and (rows[:, 0] < self.fail_below).any():
            raise ValueError("a negative row")
        return rows[:, 0] * 10, None


def _rows(*values: float) -> np.ndarray:
    return np.array([[v, 0.0] for v in values])


def _batcher(max_size: int = 100, max_wait_s: float = 0.0):
    from frugalml.serve._batching import Batcher

    return Batcher(max_size, max_wait_s)


async def _submit_all(batcher, requests: list[tuple[str, np.ndarray]], predict) -> list:
    try:
        return await asyncio.gather(*(batcher.submit(key, rows, predict) for key, rows in requests),
                                    return_exceptions=True)
    finally:
        await batcher.close()


def test_requests_that_arrive_together_share_one_call_and_get_their_own_rows_back():
    model = FakeModel()
    requests = [("k", _rows(1)), ("k", _rows(2, 3)), ("k", _rows(4, 5, 6)), ("k", _rows(7))]
    answers = asyncio.run(_submit_all(_batcher(max_wait_s=0.05), requests, model))
    assert model.calls == [[1, 2, 3, 4, 5, 6, 7]]
    assert [a.outputs[0].tolist() for a in answers] == [[10], [20, 30], [40, 50, 60], [70]]
    assert all(a.outputs[1] is None and a.call_rows == 7 and a.seconds >= 0 for a in answers)


def test_a_batch_holds_at_most_max_size_rows_and_a_larger_request_goes_alone():
    model = FakeModel()
    requests = [("k", _rows(v)) for v in range(5)] + [("k", _rows(*range(10, 16))), ("k", _rows(20))]
    answers = asyncio.run(_submit_all(_batcher(max_size=4, max_wait_s=0.05), requests, model))
    assert model.calls == [[0, 1, 2, 3], [4], [10, 11, 12, 13, 14, 15], [20]]
    assert [a.outputs[0].tolist() for a in answers] == [[0], [10], [20], [30], [40],
                                                        [100, 110, 120, 130, 140, 150], [200]]


def test_rows_wait_at_most_max_wait_for_others():
    async def one(wait_s: float) -> float:
        batcher = _batcher(max_wait_s=wait_s)
        started = time.perf_counter()
        await batcher.submit("k", _rows(1), FakeModel())
        await batcher.close()
        return time.perf_counter() - started

    assert 0.45 <= asyncio.run(one(0.5)) < 3.0
    assert asyncio.run(one(0.0)) < 0.3  # no deliberate wait: predicted as soon as the model is free


def test_the_next_batch_fills_while_the_model_is_busy():
    async def main(model: FakeModel) -> None:
        batcher = _batcher(max_wait_s=0.0)
        first = asyncio.ensure_future(batcher.submit("k", _rows(1), model))
        await asyncio.sleep(0.02)  # the model is busy with the first request
        later = [batcher.submit("k", _rows(v), model) for v in (2, 3, 4)]
        await asyncio.gather(first, *later)
        await batcher.close()

    model = FakeModel(seconds=0.1)
    asyncio.run(main(model))
    assert model.calls == [[1], [2, 3, 4]]


def test_requests_of_different_keys_never_share_a_call_and_batches_go_in_arrival_order():
    model = FakeModel()
    requests = [("a", _rows(1)), ("b", _rows(2)), ("a", _rows(3)), ("c", _rows(4)), ("b", _rows(5))]
    answers = asyncio.run(_submit_all(_batcher(max_wait_s=0.02), requests, model))
    assert model.calls == [[1, 3], [2, 5], [4]]
    assert [a.outputs[0].tolist() for a in answers] == [[10], [20], [30], [40], [50]]


def test_a_flood_of_one_key_does_not_starve_a_request_of_another():
    model = FakeModel(seconds=0.01)
    requests = [("a", _rows(v)) for v in range(6)] + [("b", _rows(100))] + [("a", _rows(v)) for v in range(6, 10)]
    asyncio.run(_submit_all(_batcher(max_size=2), requests, model))
    assert model.calls == [[0, 1], [2, 3], [4, 5], [100], [6, 7], [8, 9]]


def test_a_failing_request_fails_alone_the_others_of_its_batch_are_retried_one_by_one():
    model = FakeModel(fail_below=0)
    answers = asyncio.run(_submit_all(_batcher(max_wait_s=0.02), [("k", _rows(1)), ("k", _rows(-1, 2)),
                                                                  ("k", _rows(3))], model))
    assert model.calls == [[1, -1, 2, 3], [1], [-1, 2], [3]]
    assert answers[0].outputs[0].tolist() == [10] and answers[2].outputs[0].tolist() == [30]
    assert isinstance(answers[1], ValueError)
    assert answers[0].call_rows == 1  # its own call's rows and time, not the failed one's


def test_a_model_that_answers_another_number_of_rows_is_asked_one_request_at_a_time():
    def first_row_only(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rows[:1, 0] * 10, rows[:1] * 0.5

    answers = asyncio.run(_submit_all(_batcher(max_wait_s=0.02), [("k", _rows(1)), ("k", _rows(2))], first_row_only))
    assert [a.outputs[0].tolist() for a in answers] == [[10], [20]]
    assert answers[1].outputs[1].tolist() == [[1.0, 0.0]]  # every output split by rows


def test_a_cancelled_request_is_left_out_of_the_call():
    async def main(model: FakeModel) -> list:
        batcher = _batcher(max_wait_s=0.05)
        tasks = [asyncio.ensure_future(batcher.submit("k", _rows(v), model)) for v in (1, 2, 3)]
        await asyncio.sleep(0.01)
        tasks[1].cancel()
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return answers

    model = FakeModel()
    answers = asyncio.run(main(model))
    assert model.calls == [[1, 3]] and isinstance(answers[1], asyncio.CancelledError)


@pytest.mark.parametrize("argv, words", [
    (["--max-batch-size", "0"], "'max_batch_size' parameter of ServerSettings must be an int in the range [1, inf)"),
    (["--max-batch-size", "8", "--max-batch-wait-ms", "-1"], "'max_batch_wait_ms'"),
    (["--max-batch-wait-ms", "5"], "needs --max-batch-size"),
    (["--max-batch-size", "8", "--max-batch-wait-ms", "nan"], "'max_batch_wait_ms'"),
    (["--max-batch-size", "8", "--backend", "ray"], "not yet with --backend ray"),
])
def test_bad_batching_flags_are_one_line_and_exit_2_before_the_server_starts(argv, words, capsys, tmp_path):
    from frugalml.cli import main

    assert main(["serve", str(tmp_path / "no-model"), *argv]) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1


# -- a real server ------------------------------------------------------------------------

CONFIG = "window_rows = 50\nmin_window_rows = 10\ninterval_s = 0.1\n"
PROTOCOLS = ("/predict", "/invocations", "/v2/models/{name}/infer")


@pytest.fixture(scope="module")
def batched(model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batched")
    (folder / "monitoring.toml").write_text(CONFIG)
    process = ServerProcess(str(model_dir), "--max-batch-size", "16", "--max-batch-wait-ms", "30",
                            "--config", str(folder / "monitoring.toml"), log=folder / "server.log")
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def _body(protocol: str, rows: list[list[float]]) -> dict:
    if protocol == "/predict":
        return {"instances": rows}
    if protocol == "/invocations":
        return {"inputs": rows}
    return {"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                        "data": [v for row in rows for v in row]}]}


def _answer(protocol: str, response) -> tuple[list, list]:
    data = response.json()
    if protocol == "/predict":
        return data["predictions"], data["ids"]
    if protocol == "/invocations":
        return data["predictions"], []
    return data["outputs"][0]["data"], data["parameters"]["prediction_ids"]


def _concurrently(url: str, requests: list[tuple[str, list[list[float]]]]) -> list:
    """Each request from a thread of its own, all let go at once; the responses in order."""
    import httpx

    start = threading.Barrier(len(requests))
    responses: list = [None] * len(requests)

    def send(k: int) -> None:
        protocol, rows = requests[k]
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            client.get("/health")  # connected before the barrier: the requests arrive together
            start.wait()
            responses[k] = client.post(protocol.replace("{name}", "model"), json=_body(protocol, rows))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return responses


def test_concurrent_requests_get_the_unbatched_answers_and_are_monitored_one_by_one(batched, server, diabetes):
    _, split = diabetes
    rows = split.X_test[:48].tolist()
    requests = [(PROTOCOLS[k % 3], [row]) for k, row in enumerate(rows)]
    expected = [_answer(p, server.client.post(p.replace("{name}", "model"), json=_body(p, r)))[0] for p, r in requests]
    before = scrape(batched.client)

    responses = _concurrently(batched.url, requests)
    assert [r.status_code for r in responses] == [200] * len(requests), [r.text for r in responses if r.status_code != 200]
    answers = [_answer(p, r) for (p, _), r in zip(requests, responses)]
    assert [predictions for predictions, _ in answers] == expected
    ids = [i for _, request_ids in answers for i in request_ids]
    assert len(ids) == 32 and len(set(ids)) == 32  # /predict and v2 answer with one id per row, each its own

    after = scrape_until(batched.client, lambda s: value(s, "frugalml_predicted_class_total")
                         - value(before, "frugalml_predicted_class_total") >= len(rows))
    for endpoint in PROTOCOLS:
        def grew(metric: str, **labels: str) -> float:
            return value(after, metric, endpoint=endpoint, **labels) - value(before, metric, endpoint=endpoint, **labels)

        assert grew("frugalml_requests_total", code="200") == 16, endpoint
        assert grew("frugalml_request_duration_seconds_count") == 16, endpoint
    assert value(after, "frugalml_predicted_rows_total") - value(before, "frugalml_predicted_rows_total") == 48
    assert value(after, "frugalml_predicted_class_total") - value(before, "frugalml_predicted_class_total") == 48
    calls = value(after, "frugalml_model_calls_total") - value(before, "frugalml_model_calls_total")
    assert 3 <= calls < 48  # at most 16 rows a call, and requests did share calls


def test_a_request_the_model_fails_on_fails_alone(batched, server, diabetes):
    _, split = diabetes
    rows = split.X_test[:6].tolist()
    overflow = [1e308] * len(rows[0])  # finite, but the scaler overflows: 422 nonfinite
    requests = [("/predict", [row]) for row in rows[:3]] + [("/predict", [overflow])] + \
               [("/predict", [row]) for row in rows[3:]]
    responses = _concurrently(batched.url, requests)
    assert [r.status_code for r in responses] == [200, 200, 200, 422, 200, 200, 200]
    assert responses[3].json()["kind"] == "nonfinite"
    expected = server.client.post("/predict", json={"instances": rows}).json()["predictions"]
    assert [r.json()["predictions"][0] for r in responses if r.status_code == 200] == expected


def test_each_worker_batches_its_own_requests_and_the_totals_stay_exact(model_dir, server, diabetes, tmp_path):
    _, split = diabetes
    rows = split.X_test[:32].tolist()
    expected = server.client.post("/predict", json={"instances": rows}).json()["predictions"]
    process = ServerProcess(str(model_dir), "--workers", "2", "--max-batch-size", "16", "--max-batch-wait-ms", "30",
                            log=tmp_path / "server.log")
    try:
        process.wait_announced()
        before = scrape(process.client)
        responses = _concurrently(process.url, [("/predict", [row]) for row in rows])
        assert [r.json()["predictions"][0] for r in responses] == expected

        def totals(samples: dict) -> tuple[float, float]:
            return (value(samples, "frugalml_requests_total", endpoint="/predict", code="200")
                    - value(before, "frugalml_requests_total", endpoint="/predict", code="200"),
                    value(samples, "frugalml_predicted_rows_total") - value(before, "frugalml_predicted_rows_total"))

        after = scrape_until(process.client, lambda s: totals(s) == (32, 32))
        assert totals(after) == (32, 32)
        assert value(after, "frugalml_model_calls_total") - value(before, "frugalml_model_calls_total") < 32
    finally:
        process.stop()
