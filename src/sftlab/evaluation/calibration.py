"""How far today's judge agrees with the original judge of published judgments: the statistics of a calibration.

A calibration re-judges items whose original-judge scores are published (MT-Bench's released GPT-4 single-answer
judgments, AlpacaEval's leaderboard annotations) and compares, per (model, item), the original judge's score with
ours. Each row is ``{"model", "item", "original", "ours"}``; a score is an MT-Bench rating (1–10) or an AlpacaEval
preference (1 = the reference's output better, 2 = the model's; 1.5 a tie). Unscored rows (either side None) are
left out and counted.

- ``rank_agreement``: Spearman's ρ and Kendall's τ between the two judges' per-model means: does today's judge rank
  the models as the original judge did?
- ``item_agreement``: ratings: the share of items rated identically and within one point; preferences: the share
  of items where both judges name the same winner (or both a tie).
- ``score_mapping``: the least-squares line ``original ≈ intercept + slope · ours`` over items and over model
  means, with the correlation: how a number under today's judge reads on the original judge's scale.

The published files, their sample and the re-judging: ``sftlab.evaluation.calibration_sources``; the workflow steps:
rules ``calibration_data`` and ``judge_calibration`` (workflow/rules/judge.smk).
"""

from __future__ import annotations

import math
from typing import Iterable, Literal

import numpy as np

Kind = Literal["rating", "preference"]


def scored_rows(rows: Iterable[dict]) -> tuple[list[dict], int]:
    """The rows both judges scored, and how many were left out."""
    rows = list(rows)
    kept = [r for r in rows if r["original"] is not None and r["ours"] is not None]
    return kept, len(rows) - len(kept)


def model_means(rows: Iterable[dict]) -> dict[str, tuple[float, float]]:
    """Per model, the mean of the original judge's scores and of ours, over the items both scored."""
    sums: dict[str, list[float]] = {}
    for r in scored_rows(rows)[0]:
        s = sums.setdefault(r["model"], [0.0, 0.0, 0])
        s[0] += r["original"]
        s[1] += r["ours"]
        s[2] += 1
    return {m: (o / n, u / n) for m, (o, u, n) in sums.items()}


def rank_agreement(rows: Iterable[dict]) -> dict:
    """Spearman's ρ and Kendall's τ (ties averaged) between the judges' per-model means; None below two models."""
    from scipy import stats

    means = model_means(rows)
    if len(means) < 2:
        return {"models": len(means), "spearman": None, "kendall": None}
    original, ours = zip(*means.values())
    rho = stats.spearmanr(original, ours).statistic
    tau = stats.kendalltau(original, ours).statistic
    return {"models": len(means), "spearman": None if math.isnan(rho) else float(rho),
            "kendall": None if math.isnan(tau) else float(tau)}


def _winner(preference: float) -> int:
    return 0 if preference == 1.5 else (1 if preference > 1.5 else -1)


def item_agreement(rows: Iterable[dict], kind: Kind) -> dict:
    """Per-item agreement of the two judges (see the module docstring), with the items counted."""
    kept, dropped = scored_rows(rows)
    out: dict = {"items": len(kept), "unscored": dropped}
    if kind == "rating":
        diffs = [abs(r["original"] - r["ours"]) for r in kept]
        out.update(exact=sum(d == 0 for d in diffs) / len(kept) if kept else None,
                   within_one=sum(d <= 1 for d in diffs) / len(kept) if kept else None)
    elif kind == "preference":
        same = [_winner(r["original"]) == _winner(r["ours"]) for r in kept]
        out.update(same_winner=sum(same) / len(kept) if kept else None)
    else:
        raise ValueError(f"a calibration compares ratings or preferences, not {kind!r}")
    return out


def _line(x: list[float], y: list[float]) -> dict:
    """Least squares y ≈ intercept + slope · x, and Pearson's r; None where x does not vary."""
    if len(x) < 2 or np.ptp(x) == 0:
        return {"intercept": None, "slope": None, "r": None, "n": len(x)}
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    r = np.corrcoef(x, y)[0, 1] if np.ptp(y) > 0 else math.nan
    return {"intercept": float(intercept), "slope": float(slope), "r": None if math.isnan(r) else float(r),
            "n": len(x)}


def score_mapping(rows: Iterable[dict]) -> dict:
    """``original ≈ intercept + slope · ours``, fitted over items and over model means."""
    kept = scored_rows(rows)[0]
    means = model_means(kept)
    return {"items": _line([r["ours"] for r in kept], [r["original"] for r in kept]),
            "models": _line([u for _, u in means.values()], [o for o, _ in means.values()])}


def calibration_summary(rows: Iterable[dict], kind: Kind) -> dict:
    """Everything a calibration reports: rank agreement over models, per-item agreement, the score mapping."""
    rows = list(rows)
    return {"kind": kind, "rank": rank_agreement(rows), "per_item": item_agreement(rows, kind),
            "mapping": score_mapping(rows)}
