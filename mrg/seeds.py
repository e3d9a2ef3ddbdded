"""Seeds derived from several integers, stable across runs, processes and platforms."""

from __future__ import annotations


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (e.g. the run's seed and the epoch)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value * 6364136223846793005 + part + 1442695040888963407) % (1 << 63)
    return value
