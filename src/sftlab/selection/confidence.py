"""SFTMix's confidence scores and the confident / unconfident split, plus the selectors that read them.

Conf(x, y) = −(1/C)·Σ_c Perp_c(x, y) over the reference run's C checkpoints; ``variability`` is the
population standard deviation (ddof = 0) of the C perplexities. Ranked by confidence, highest first,
equal confidences by id (ascending), the first ⌈n/2⌉ examples — at or above the median — are ``confident``,
the rest ``unconfident``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .base import Selector, register_selector

def confidence_order(table: pd.DataFrame) -> pd.DataFrame:
    """Rows by confidence, highest first; equal confidences by id."""
    return table.sort_values(["confidence", "id"], ascending=[False, True], kind="stable")


def confidence_table(ids: Sequence[str], perplexities: Mapping[int | str, Sequence[float]]) -> pd.DataFrame:
    """``id, perplexity_c{c}..., confidence, variability, split`` in the order of ``ids``.

    ``perplexities`` maps each checkpoint label c to the examples' perplexities, aligned with ``ids``.
    """
    if not perplexities:
        raise ValueError("confidence needs the perplexities of at least one checkpoint")
    if len(set(ids)) != len(ids):
        raise ValueError("confidence: duplicate ids in the training pool")
    table = pd.DataFrame({"id": [str(i) for i in ids]})
    for c, values in perplexities.items():
        if len(values) != len(ids):
            raise ValueError(f"checkpoint {c}: {len(values)} perplexities for {len(ids)} examples")
        table[f"perplexity_c{c}"] = np.asarray(values, dtype=np.float64)
    stacked = table[[f"perplexity_c{c}" for c in perplexities]].to_numpy()
    table["confidence"] = -stacked.mean(axis=1)
    table["variability"] = stacked.std(axis=1, ddof=0)
    ranked = confidence_order(table)
    n_confident = (len(table) + 1) // 2
    table["split"] = "unconfident"
    table.loc[ranked.index[:n_confident], "split"] = "confident"
    return table


def _split_rows(ids: list[str], tables: dict[str, pd.DataFrame], split: str) -> pd.DataFrame:
    if "confidence" not in tables:
        raise KeyError("selector needs the 'confidence' table (confidence.parquet)")
    table = tables["confidence"].astype({"id": str})
    missing = set(ids) - set(table["id"])
    if missing:
        raise KeyError(f"confidence table lacks {len(missing)} pool id(s), e.g. {sorted(missing)[:3]}")
    return table[table["id"].isin(set(ids)) & (table["split"] == split)]


@register_selector("confident")
class Confident(Selector):
    """The confident half, most confident first (SFTMix's "train on D^c only" ablation; fraction 0.5 of the pool)."""

    tables = ("confidence",)
    model_features = True
    paper = "SFTMix"  # the confidence split of SFTMix's reference run
    max_fraction = 0.5

    def rank(self, ids, tables):
        return confidence_order(_split_rows(ids, tables, "confident"))["id"].tolist()


@register_selector("unconfident")
class Unconfident(Selector):
    """The unconfident half, least confident first (SFTMix's "train on D^u only" ablation; fraction 0.5 of the pool)."""

    tables = ("confidence",)
    model_features = True
    paper = "SFTMix"  # the confidence split of SFTMix's reference run
    max_fraction = 0.5

    def rank(self, ids, tables):
        rows = _split_rows(ids, tables, "unconfident")
        return rows.sort_values(["confidence", "id"], kind="stable")["id"].tolist()


@register_selector("ambiguous")
class Ambiguous(Selector):
    """Examples whose perplexity moves most across the reference checkpoints, most variable first.

    The "ambiguous" region of dataset cartography (Swayamdipta et al., 2020): high variability across training.
    With SFTMix's objective it is a confidence-based selection the paper does not run; its confident/unconfident
    pairing keeps the pool-wide median split of ``confidence.parquet``. Needs two or more checkpoints: with one,
    every variability is 0 and the ranking would only be the id order.
    """

    tables = ("confidence",)
    model_features = True
    paper = "SFTMix"  # the confidence split of SFTMix's reference run

    def rank(self, ids, tables):
        if "confidence" not in tables:
            raise KeyError("selector 'ambiguous' needs the 'confidence' table (confidence.parquet)")
        table = tables["confidence"].astype({"id": str})
        if sum(c.startswith("perplexity_c") for c in table.columns) < 2:
            raise ValueError("selector 'ambiguous' ranks by variability across reference checkpoints: "
                             "set reference.checkpoints to two or more epochs")
        missing = set(ids) - set(table["id"])
        if missing:
            raise KeyError(f"confidence table lacks {len(missing)} pool id(s), e.g. {sorted(missing)[:3]}")
        rows = table[table["id"].isin(set(ids))]
        return rows.sort_values(["variability", "id"], ascending=[False, True], kind="stable")["id"].tolist()
