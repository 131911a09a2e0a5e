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


def paired_difference(new: dict[str, Sequence[float]], old: dict[str, Sequence[float]], n_resamples: int = 2000,
                      confidence: float = 0.95, seed: int = 0) -> dict:
    """``new`` − ``old`` over the items both scored, with a paired percentile-bootstrap interval: items resampled
    with replacement, the same draw for both, each side's score recomputed on the draw.

    An item is ``[sum, weight]`` and a score is Σ sum / Σ weight over the items (a plain mean when every weight is
    1; Arena-Hard's win rate over weighted battle outcomes; MT-Bench's mean over the parsed turns). Returns
    ``{"value", "ci_low", "ci_high", "n"}``, all null over no shared item."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    shared = sorted(set(new) & set(old))
    if not shared:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    a = np.asarray([new[k] for k in shared], dtype=float)
    b = np.asarray([old[k] for k in shared], dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(shared), size=(n_resamples, len(shared)))
    with np.errstate(invalid="ignore", divide="ignore"):
        diffs = a[draws, 0].sum(1) / a[draws, 1].sum(1) - b[draws, 0].sum(1) / b[draws, 1].sum(1)
    alpha = (1 - confidence) / 2
    low, high = np.nanquantile(diffs, [alpha, 1 - alpha])
    value = a[:, 0].sum() / a[:, 1].sum() - b[:, 0].sum() / b[:, 1].sum()
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high), "n": len(shared)}
