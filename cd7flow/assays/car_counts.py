"""Counting statistics for absolute counts: per-uL values with exact 95% intervals, LOD/LLOQ flags.

Single-platform: cells/uL = c / b x beads_per_test / volume_ul with c cell events and b
bead events, two independent Poisson counts. Given c + b, c is binomial with
p = lambda_c / (lambda_c + lambda_b), so the exact (Clopper-Pearson) interval for p gives an
exact conditional interval for the ratio lambda_c / lambda_b = p / (1 - p), carrying both the
cells' and the beads' counting error; it stays valid at c = 0 (lower bound 0).
Dual-platform: cells/uL = c / n x blood count, with a Clopper-Pearson interval on c / n
(the blood count's own error is not known to the cytometer and is not included).
"""
from __future__ import annotations

from scipy.stats import beta


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for k successes of n (0-1); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    a = (1 - confidence) / 2
    lo = 0.0 if k <= 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def poisson_ratio_interval(c: int, b: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact conditional interval for lambda_c / lambda_b from counts c and b (b > 0)."""
    lo, hi = clopper_pearson(c, c + b, confidence)
    return lo / (1 - lo), (hi / (1 - hi) if hi < 1 else float("inf"))


def single_platform(c: int, b: int, beads_per_test: float, volume_ul: float,
                    confidence: float = 0.95) -> tuple[float, float, float]:
    """(cells/uL, low, high) from cell and bead events (b > 0)."""
    k = beads_per_test / volume_ul
    lo, hi = poisson_ratio_interval(c, b, confidence)
    return c / b * k, lo * k, hi * k


def dual_platform(c: int, n: int, count_per_ul: float, confidence: float = 0.95) -> tuple[float, float, float]:
    """(cells/uL, low, high) from c events among n reference events and the reference's blood count."""
    lo, hi = clopper_pearson(c, n, confidence)
    return c / n * count_per_ul, lo * count_per_ul, hi * count_per_ul


def limit_flags(events: int, lod_events: int, lloq_events: int) -> list[str]:
    """BELOW_LOD when events < LOD; BELOW_LLOQ when LOD <= events < LLOQ (value kept either way)."""
    if events < lod_events:
        return ["BELOW_LOD"]
    if events < lloq_events:
        return ["BELOW_LLOQ"]
    return []
