"""Units used everywhere in frugalml: MB means 2**20 bytes (a mebibyte)."""

from __future__ import annotations

BYTES_PER_MB = 2**20


def to_mb(n_bytes: float) -> float:
    """Convert bytes to MB (2**20 bytes)."""
    return n_bytes / BYTES_PER_MB
