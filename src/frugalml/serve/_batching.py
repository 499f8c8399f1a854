"""Adaptive batching: predict requests that arrive together share one model call.

A request's rows wait at most ``max_wait_s`` for others to join; a batch holds at most
``max_size`` rows, and a request of more rows is predicted alone (MLServer's semantics). Only
requests with the same key share a call (the server's key: the model, what is asked of it, the
rows' dtype and width). The model runs on the event loop's executor, one call at a time, batches
in the order their first request arrived; while one runs, the next fills, so under load a batch
can wait past its deadline for the model, and grows. Each request gets its own rows of every output
back, and the duration of the call that made them. When a shared call fails, or answers with
another number of rows than it was given, each of its requests is retried alone: one bad request
fails only itself.

Example:
    >>> import asyncio
    >>> import numpy as np
    >>> async def main():
    ...     batcher = Batcher(max_size=8, max_wait_s=0.005)
    ...     double = lambda rows: (rows * 2,)
    ...     answers = await asyncio.gather(*(batcher.submit("k", np.array([[i]]), double) for i in range(3)))
    ...     await batcher.close()
    ...     return [a.outputs[0].tolist() for a in answers], batcher.calls
    >>> asyncio.run(main())
    ([[[0]], [[2]], [[4]]], 1)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable, Sequence

import numpy as np

from frugalml.validation import POSITIVE_INT, Interval, check

logger = logging.getLogger("frugalml.serve")
Predict = Callable[[np.ndarray], Sequence[Any]]  # rows -> row-aligned outputs (None where there is no such output)
Run = Callable[[Callable[[], Any]], Awaitable[Any]]
_WAIT = Interval(float, 0, 60, closed="both")


@dataclass(frozen=True)
class Batched:
    """One request's share of a model call: its rows of each output, the call's seconds and rows."""

    outputs: tuple[Any, ...]
    seconds: float
    call_rows: int


@dataclass
class _Batch:
    key: Hashable
    predict: Predict
    deadline: float
    items: list[tuple[np.ndarray, asyncio.Future]] = field(default_factory=list)
    rows: int = 0
    closed: bool = False


class Batcher:
    """Concatenates concurrent requests' rows into one ``predict`` call (see the module docstring).

    Args:
        max_size: rows a batch holds at most.
        max_wait_s: how long a request's rows wait for others to join.
        run: runs a model call and awaits it (default: the event loop's executor).
        on_call: called (in the thread that calls the model) before each model call.
    """

    def __init__(self, max_size: int, max_wait_s: float, run: Run | None = None,
                 on_call: Callable[[], Any] | None = None) -> None:
        self.max_size = check("Batcher", "max_size", max_size, POSITIVE_INT)
        self.max_wait_s = float(check("Batcher", "max_wait_s", max_wait_s, _WAIT))
        self._run = run or _in_executor
        self._on_call = on_call
        self._queue: collections.deque[_Batch] = collections.deque()  # in order of their first request
        self._open: dict[Hashable, _Batch] = {}  # the batch of each key still taking rows
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: _Batch | None = None
        self.calls = 0  # model calls made, retries included

    async def submit(self, key: Hashable, rows: np.ndarray, predict: Predict) -> Batched:
        """Predict ``rows`` with others of the same ``key`` (``predict`` of the batch's first request)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._dispatch(), name="frugalml-batcher")
        batch = self._open.get(key)
        if batch is not None and batch.rows + len(rows) > self.max_size:
            self._close(batch)
            batch = None
        if batch is None:
            batch = _Batch(key, predict, loop.time() + self.max_wait_s)
            self._queue.append(batch)
            self._open[key] = batch
        future = loop.create_future()
        batch.items.append((rows, future))
        batch.rows += len(rows)
        if batch.rows >= self.max_size:
            self._close(batch)
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Stop dispatching; requests still waiting fail."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _close(self, batch: _Batch) -> None:
        batch.closed = True
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                if not self._queue:
                    await self._wake.wait()
                    continue
                batch = self._queue[0]
                delay = batch.deadline - loop.time()
                if not batch.closed and delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()  # a request joined: the batch may be full now
                    continue
                self._running = self._queue.popleft()
                self._close(batch)
                await self._predict(batch)
                self._running = None
        finally:
            for batch in [*([self._running] if self._running else []), *self._queue]:
                for _, future in batch.items:
                    if not future.done():
                        future.set_exception(RuntimeError("the server stopped before predicting these rows."))
            self._queue.clear()
            self._open.clear()
            self._running = None

    async def _predict(self, batch: _Batch) -> None:
        items = [(rows, future) for rows, future in batch.items if not future.done()]  # not those cancelled
        if not items:
            return
        try:
            answers = await self._run(functools.partial(self._call, batch.predict, [rows for rows, _ in items]))
        except Exception as error:  # noqa: BLE001 - the executor's; every request hears of it
            answers = [error] * len(items)
        for (_, future), answer in zip(items, answers):
            if future.done():
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    def _call(self, predict: Predict, parts: list[np.ndarray]) -> list[Batched | Exception]:
        """The model call (in the executor): all parts at once, else each alone."""
        if len(parts) == 1:
            return [self._alone(predict, parts[0])]
        try:
            rows = np.concatenate(parts)
            outputs, seconds = self._timed(predict, rows)
            return _split(outputs, [len(part) for part in parts], seconds)
        except Exception as error:  # noqa: BLE001 - the model's: find out whose rows it was
            logger.warning("a batched model call of %d requests failed (%s); predicting each alone",
                           len(parts), type(error).__name__)
        return [self._alone(predict, part) for part in parts]

    def _alone(self, predict: Predict, rows: np.ndarray) -> Batched | Exception:
        try:
            outputs, seconds = self._timed(predict, rows)
        except Exception as error:  # noqa: BLE001 - this request's own answer
            return error
        return Batched(tuple(outputs), seconds, len(rows))

    def _timed(self, predict: Predict, rows: np.ndarray) -> tuple[Sequence[Any], float]:
        if self._on_call is not None:
            self._on_call()
        self.calls += 1  # one model call at a time: no lock needed
        started = time.perf_counter()
        outputs = predict(rows)
        return outputs, time.perf_counter() - started


def _split(outputs: Sequence[Any], sizes: list[int], seconds: float) -> list[Batched | Exception]:
    """Each part's rows of every output (None stays None); ValueError when an output is not row-aligned."""
    total = sum(sizes)
    arrays = [None if output is None else np.asarray(output) for output in outputs]
    for array in arrays:
        if array is not None and (array.ndim == 0 or len(array) != total):
            raise ValueError(f"the model answered {len(array) if array.ndim else 'a scalar'} for {total} rows.")
    bounds = np.cumsum([0, *sizes])
    return [Batched(tuple(None if array is None else array[start:stop] for array in arrays), seconds, total)
            for start, stop in zip(bounds[:-1], bounds[1:])]


async def _in_executor(call: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, call)
