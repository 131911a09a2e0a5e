"""Seeded percentile-bootstrap confidence intervals for benchmark means."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (items resampled with replacement)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def mean_with_ci(values: Sequence[float], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """{"value", "ci_low", "ci_high", "n"}: the shape every score in a Scores file takes.

    Over no values (e.g. every judgment unparsable) the score is null, not a number: JSON has no NaN.
    """
    x = [float(v) for v in values]
    if not x:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    low, high = bootstrap_ci(x, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return {"value": float(np.mean(x)), "ci_low": low, "ci_high": high, "n": len(x)}
