"""The open- and closed-loop HTTP load generator the serving benchmarks run in a process of their
own (``python <benchmark>.py drive ...``): raw keep-alive HTTP/1.1 over asyncio, light enough
not to be the bottleneck, counting what it sent and what was answered 200."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from pathlib import Path

import numpy as np


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> bool:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


async def closed_loop(port: int, payloads: list[bytes], concurrency: int, seconds: float) -> dict:
    sent = ok = 0
    end = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal sent, ok
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.perf_counter() < end:
            sent += 1
            answered = await request(reader, writer, payloads[i % len(payloads)])
            ok += answered  # not `ok += await ...`: that adds to the value read before the await
            i += concurrency
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return {"sent": sent, "ok": ok, "throughput_rps": ok / (time.perf_counter() - start)}


async def open_loop(port: int, payloads: list[bytes], rate: float, seconds: float, connections: int) -> dict:
    """Request i is due at start + i / rate; an idle connection takes the next due request."""
    n = int(rate * seconds)
    latencies: list[float] = []
    ok = 0
    next_index = 0
    start = time.perf_counter() + 0.1

    async def client() -> None:
        nonlocal next_index, ok
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while next_index < n:
            i, next_index = next_index, next_index + 1
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            answered = await request(reader, writer, payloads[i % len(payloads)])
            ok += answered
            latencies.append(time.perf_counter() - due)
        writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1e3
    return {"sent": n, "ok": ok, "offered_rps": rate, "achieved_rps": n / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def drive(args: argparse.Namespace, connections_per_client: int) -> None:
    """Send ``--bodies`` to ``--port`` for ``--seconds`` (open loop at ``--rate``, else closed loop)
    and print the result as one JSON line."""
    bodies = json.loads(Path(args.bodies).read_text())
    payloads = [(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n{body}").encode() for body in bodies]
    if args.rate:
        result = asyncio.run(open_loop(args.port, payloads, args.rate, args.seconds,
                                       args.concurrency * connections_per_client))
    else:
        result = asyncio.run(closed_loop(args.port, payloads, args.concurrency, args.seconds))
    print(json.dumps(result))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def add_drive_parser(sub: argparse._SubParsersAction) -> None:
    driver = sub.add_parser("drive", help="(internal) the load-generating process")
    driver.add_argument("--port", type=int, required=True)
    driver.add_argument("--bodies", required=True)
    driver.add_argument("--seconds", type=float, required=True)
    driver.add_argument("--concurrency", type=int, default=8)
    driver.add_argument("--rate", type=float)
