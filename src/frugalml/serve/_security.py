"""Bearer tokens and a per-client token-bucket rate limit."""

from __future__ import annotations

import hmac
import threading
import time

from frugalml.serve._validate import RequestError


def check_token(header: str | None, token: str | None, *, what: str) -> None:
    """Raise 401 unless ``header`` is ``Bearer <token>`` (no-op when ``token`` is None)."""
    if token is None:
        return
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise RequestError(401, "unauthorized",
                           f"{what} needs an 'Authorization: Bearer <token>' header with a valid token.")


class RateLimiter:
    """``rate`` requests per second per client, with bursts up to ``burst`` (default ``max(1, rate)``)."""

    def __init__(self, rate: float, burst: float | None = None, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last refill)
        self._lock = threading.Lock()

    def check(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                raise RequestError(429, "rate_limited",
                                   f"rate limit of {self.rate:g} requests/s exceeded; retry later.")
            if len(self._buckets) >= self.max_clients and client not in self._buckets:
                self._buckets.clear()  # a flood of addresses: forget them rather than grow without bound
            self._buckets[client] = (tokens - 1.0, now)
